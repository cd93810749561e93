"""What the prediction ids cost: this tree's server against an earlier commit's, same run.

Both servers run side by side on loopback with the same model file; wrk (one thread) loads
them in turns, A B A B ..., so drift of a shared machine falls on both alike. The earlier
commit's `serving-image` is taken with `git archive` and run from its own source through
PYTHONPATH with this venv's packages. Every number comes from this run on this machine.

    python bench/feedback_ids_ab.py [--previous 11ec310] [--rounds 5] [--duration 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import skops.io

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_bench import (  # the sibling script, not a package
    Model,
    Running,
    _started,
    free_port,
    parse_wrk,
    train,
    v2_body,
    wait_ready,
    wrk,
)

ROOT = Path(__file__).resolve().parents[1]
LOADS = ((1, 8), (1, 64), (32, 8))  # (rows, concurrency)


@contextlib.contextmanager
def server(model: Model, path: Path, log: Path, source: Path | None,
           batching: str) -> Iterator[Running]:
    """modelgate-serve from this venv, or (source given) from another tree's sources."""
    port = free_port()
    entry = "import sys; from modelgate_serving.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", entry, "--model-uri", path.as_uri(), "--model-name",
               model.name, "--model-version", "1", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "WARNING", "--batching", batching]
    if model.trusted_types:
        command += ["--trusted-types", ",".join(model.trusted_types)]
    env = {"PYTHONPATH": str(source)} if source else {}
    with _started(command, log, env, log.parent) as process:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/v2/models/{model.name}/ready", process)
        yield Running(process, f"{base}/v2/models/{model.name}/infer")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def requests_done(wrk_output: str) -> int:
    found = re.search(r"(\d+) requests in", wrk_output)
    if not found:
        raise ValueError(f"unexpected wrk output:\n{wrk_output}")
    return int(found.group(1))


def handler_cost(rows: int) -> float:
    """CPU µs of the work one V2 request costs without HTTP (parse, decode, predict, metrics,
    id, encode), with whichever modelgate_serving is importable: the best of 7 runs of 2,000."""
    import inspect

    import orjson

    from modelgate_serving import metrics, protocol, runtime

    model = train()[0]
    served = runtime.Runtime(model.estimator, "0" * 64)
    counters = metrics.Metrics(model.name, "1")
    counters.loaded("0" * 64, is_classifier=True)
    body = v2_body(model, rows).encode()
    with_ids = "max_rows" in inspect.signature(protocol.decode_v2).parameters
    issuer: Any = None
    if with_ids:
        from modelgate_serving.feedback import Issuer
        issuer = Issuer(model.name, "1", "bench key")

    def one() -> None:
        parsed = orjson.loads(body)
        if issuer is not None:
            # later trees check rows against the model's schema, earlier ones the runtime
            request = protocol.decode_v2(parsed, getattr(served, "schema", served), 10_000)
        else:
            # the previous tree's signature, which this tree's type checker does not know
            request = protocol.decode_v2(parsed, served)  # type: ignore[call-arg]
        prediction = served.predict(request.rows, request.wants_proba)
        counters.predicted(prediction.predict, prediction.proba, is_classifier=True)
        if issuer is not None:
            answer = protocol.encode_v2(request, prediction, model.name, "1",
                                        issuer.issue(rows, time.time()))
        else:
            answer = protocol.encode_v2(request, prediction, model.name, "1")  # type: ignore[call-arg]
        orjson.dumps(answer)
        counters.request(200, 0.001)

    for _ in range(300):
        one()
    runs = []
    for _ in range(7):
        started = time.process_time()
        for _ in range(2000):
            one()
        runs.append((time.process_time() - started) / 2000 * 1e6)
    return min(runs)


def id_cost() -> float:
    """CPU µs to issue one prediction id."""
    import timeit

    from modelgate_serving.feedback import Issuer

    issuer = Issuer("iris", "1", "bench key")
    runs = timeit.repeat(lambda: issuer.issue(1, time.time()), number=20_000, repeat=5)
    return min(runs) / 20_000 * 1e6


def handler_costs(rows: int, source: Path | None) -> float:
    env = {**os.environ, **({"PYTHONPATH": str(source)} if source else {})}
    output = subprocess.run([sys.executable, __file__, "--handler-cost", str(rows)], env=env,
                            capture_output=True, text=True, check=True).stdout
    return float(output.strip())


def previous_tree(revision: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "serving-image"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "serving-image"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--previous", default="11ec310",
                        help="the commit to compare with (default: the one before the ids)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--batching", default="off", choices=["off", "on"],
                        help="the same batching mode for both servers (default off)")
    parser.add_argument("--handler-cost", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.handler_cost:
        print(handler_cost(options.handler_cost))
        return 0
    model = train()[0]  # LogisticRegression/iris: the cheapest model shows overhead most
    with tempfile.TemporaryDirectory(prefix="ids-ab-") as scratch_name:
        scratch = Path(scratch_name)
        path = scratch / "model.skops"
        skops.io.dump(model.estimator, path)
        old_source = previous_tree(options.previous, scratch / "previous")
        with server(model, path, scratch / "now.log", None, options.batching) as now, \
                server(model, path, scratch / "before.log", old_source,
                       options.batching) as before:
            print(f"{model.label}, batching {options.batching} on both (auto measures the model "
                  f"at start, and on a busy machine could choose differently for the two), wrk "
                  f"-t1, {options.rounds} alternating rounds of {options.duration:g} s; medians "
                  f"of requests/s")
            print("Requests/s (wall clock, shared machine) and the server's CPU time per "
                  "request (user+system of its process, from /proc; what bounds throughput "
                  "on an idle core):\n")
            print("| rows | concurrency | req/s this tree | req/s previous | ratio | "
                  "CPU µs/req this tree | CPU µs/req previous | CPU ratio (previous/this) |")
            print("| --- | --- | --- | --- | --- | --- | --- | --- |")
            request_cpu = 0.0
            for rows, concurrency in LOADS:
                body = v2_body(model, rows)
                rates: dict[str, list[float]] = {"now": [], "before": []}
                costs: dict[str, list[float]] = {"now": [], "before": []}
                for target in (now, before):
                    wrk(target.infer_url, body, concurrency, 1.0, scratch)  # warm up
                for _ in range(options.rounds):
                    for label, target in (("now", now), ("before", before)):
                        cpu = cpu_seconds(target.process.pid)
                        output = wrk(target.infer_url, body, concurrency, options.duration,
                                     scratch)
                        used = cpu_seconds(target.process.pid) - cpu
                        rps, _, _, failures = parse_wrk(output)
                        if failures:
                            raise SystemExit(f"{label}: {failures} failed requests")
                        rates[label].append(rps)
                        costs[label].append(used / requests_done(output) * 1e6)
                a, b = statistics.median(rates["now"]), statistics.median(rates["before"])
                ca, cb = statistics.median(costs["now"]), statistics.median(costs["before"])
                if rows == 1:
                    request_cpu = ca
                print(f"| {rows} | {concurrency} | {a:,.0f} | {b:,.0f} | {a / b:.3f} | "
                      f"{ca:,.0f} | {cb:,.0f} | {cb / ca:.3f} |", flush=True)
        print("\nIn process, without HTTP (parse, decode, predict, metrics, id, encode), CPU "
              "µs per request, best of 7 runs of 2,000:\n")
        print("| rows | this tree | previous | ratio (previous/this) |")
        print("| --- | --- | --- | --- |")
        for rows in sorted({rows for rows, _ in LOADS}):
            a, b = handler_costs(rows, None), handler_costs(rows, old_source)
            print(f"| {rows} | {a:,.1f} | {b:,.1f} | {b / a:.3f} |", flush=True)
        issue = id_cost()
        print(f"\nIssuing one prediction id (Issuer.issue, best of 5 runs of 20,000): "
              f"{issue:.2f} µs of CPU, {issue / request_cpu:.1%} of this tree's median CPU "
              f"per one-row request over HTTP ({request_cpu:,.0f} µs).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
