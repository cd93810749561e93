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
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

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
def server(model: Model, path: Path, log: Path, source: Path | None) -> Iterator[Running]:
    """modelgate-serve from this venv, or (source given) from another tree's sources."""
    port = free_port()
    entry = "import sys; from modelgate_serving.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", entry, "--model-uri", path.as_uri(), "--model-name",
               model.name, "--model-version", "1", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "WARNING"]
    if model.trusted_types:
        command += ["--trusted-types", ",".join(model.trusted_types)]
    env = {"PYTHONPATH": str(source)} if source else {}
    with _started(command, log, env, log.parent) as process:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/v2/models/{model.name}/ready", process)
        yield Running(process, f"{base}/v2/models/{model.name}/infer")


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
    options = parser.parse_args(argv)
    model = train()[0]  # LogisticRegression/iris: the cheapest model shows overhead most
    with tempfile.TemporaryDirectory(prefix="ids-ab-") as scratch_name:
        scratch = Path(scratch_name)
        path = scratch / "model.skops"
        skops.io.dump(model.estimator, path)
        old_source = previous_tree(options.previous, scratch / "previous")
        with server(model, path, scratch / "now.log", None) as now, \
                server(model, path, scratch / "before.log", old_source) as before:
            print(f"{model.label}, wrk -t1, {options.rounds} alternating rounds of "
                  f"{options.duration:g} s; medians of requests/s")
            print("| rows | concurrency | this tree | previous | ratio |")
            print("| --- | --- | --- | --- | --- |")
            for rows, concurrency in LOADS:
                body = v2_body(model, rows)
                runs: dict[str, list[float]] = {"now": [], "before": []}
                for target in (now, before):
                    wrk(target.infer_url, body, concurrency, 1.0, scratch)  # warm up
                for _ in range(options.rounds):
                    for label, target in (("now", now), ("before", before)):
                        rps, _, _, failures = parse_wrk(wrk(target.infer_url, body,
                                                            concurrency, options.duration,
                                                            scratch))
                        if failures:
                            raise SystemExit(f"{label}: {failures} failed requests")
                        runs[label].append(rps)
                a, b = statistics.median(runs["now"]), statistics.median(runs["before"])
                print(f"| {rows} | {concurrency} | {a:,.0f} | {b:,.0f} | {a / b:.3f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
