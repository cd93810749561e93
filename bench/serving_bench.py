"""modelgate-serve against MLServer 1.7 on the same models and load (`make bench-serving`).

Both servers run here, over loopback, one after the other, loaded by the same generator (wrk
from Debian, one thread) with the same bodies:

- models: LogisticRegression on iris and RandomForestClassifier(n_estimators=100) on
  breast_cancer, trained here; modelgate serves the skops file, MLServer (mlserver-sklearn)
  the joblib file of the same estimator;
- loads: concurrency 1, 8 and 64; single-row and 32-row V2 bodies; one worker and two
  (modelgate `--workers`, MLServer `parallel_workers`; MLServer's "one worker" is its
  in-process mode, `parallel_workers: 0`, its fastest single-process setting);
- measured: requests/s, p50 and p99 from wrk, non-2xx answers, and the resident memory of
  the server's process tree after the load.

MLServer is installed by this script into its own throwaway venv (pass --mlserver-venv to
reuse one). Every number comes from this run on this machine; ratios are modelgate/MLServer.

    python bench/serving_bench.py [--duration 5] [--write docs/serving-benchmark.md]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import requests
import skops.io
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

# uvloop pinned below 0.22: with 0.22 and later, MLServer 1.7.1's parallel workers die at start
# ("There is no current event loop"), so its two-worker setting would not run at all.
MLSERVER_PINS = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0")
CONCURRENCY = (1, 8, 64)
ROWS = (1, 32)
WORKERS = (1, 2)
TARGETS = (
    # (model, rows, concurrency, workers, min rps ratio, max p99 ratio)
    ("LogisticRegression/iris", 1, 8, 1, 3.0, 0.5),
    ("RandomForest(100)/breast_cancer", 1, 64, 1, 5.0, None),
)


@dataclass(frozen=True)
class Model:
    name: str
    label: str
    estimator: Any
    features: np.ndarray
    trusted_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    memory_mib: float


def train() -> list[Model]:
    iris_x, iris_y = load_iris(return_X_y=True)
    cancer_x, cancer_y = load_breast_cancer(return_X_y=True)
    return [
        Model("iris", "LogisticRegression/iris",
              LogisticRegression(max_iter=1000).fit(iris_x, iris_y), iris_x),
        Model("cancer", "RandomForest(100)/breast_cancer",
              RandomForestClassifier(n_estimators=100, random_state=0).fit(cancer_x, cancer_y),
              cancer_x, ("sklearn.tree._tree.Tree",)),
    ]


# -- load generation -----------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, non-2xx answers) from `wrk --latency` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m)\b", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\b", output, re.MULTILINE)
    if not (rps and p50 and p99):
        raise ValueError(f"unexpected wrk output:\n{output}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    failures = int(bad.group(1)) if bad else 0
    if errors:
        failures += sum(int(errors.group(i)) for i in range(1, 5))
    return (float(rps.group(1)), float(p50.group(1)) * _UNITS[p50.group(2)],
            float(p99.group(1)) * _UNITS[p99.group(2)], failures)


def v2_body(model: Model, rows: int) -> str:
    batch = model.features[:rows]
    return json.dumps({"inputs": [{"name": "predict", "shape": list(batch.shape),
                                   "datatype": "FP64", "data": batch.reshape(-1).tolist()}]})


def wrk(url: str, body: str, concurrency: int, duration: float, scratch: Path) -> str:
    script = scratch / "post.lua"
    script.write_text('wrk.method = "POST"\n'
                      'wrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = [[{body}]]\n")
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--latency",
               "--timeout", "10s", "-s", str(script), url]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants, MiB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


# -- servers --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    infer_url: str


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


@contextlib.contextmanager
def modelgate(model: Model, path: Path, workers: int, log: Path) -> Iterator[Running]:
    port = free_port()
    serve = Path(sys.executable).parent / "modelgate-serve"
    command = [str(serve), "--model-uri", path.as_uri(), "--model-name", model.name,
               "--model-version", "1", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--log-level", "WARNING"]
    if model.trusted_types:
        command += ["--trusted-types", ",".join(model.trusted_types)]
    with _started(command, log, {}, log.parent) as process:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/v2/models/{model.name}/ready", process)
        if workers > 1:
            time.sleep(3)  # the other workers join the port once loaded
        yield Running(process, f"{base}/v2/models/{model.name}/infer")


@contextlib.contextmanager
def mlserver(venv: Path, model: Model, path: Path, workers: int, scratch: Path,
             log: Path) -> Iterator[Running]:
    port, grpc, metrics = free_port(), free_port(), free_port()
    folder = scratch / f"mlserver-{model.name}-{workers}"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / model.name).mkdir(parents=True)
    shutil.copy(path, folder / model.name / "model.joblib")
    (folder / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": grpc, "metrics_port": metrics, "host": "127.0.0.1",
        "parallel_workers": 0 if workers == 1 else workers, "debug": False,
    }))
    (folder / model.name / "model-settings.json").write_text(json.dumps({
        "name": model.name, "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "1"},
    }))
    # run in the scratch folder: MLServer writes its metrics database into the working directory
    with _started([str(venv / "bin" / "mlserver"), "start", str(folder)], log,
                  {"PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}, folder) as process:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/v2/models/{model.name}/ready", process)
        yield Running(process, f"{base}/v2/models/{model.name}/infer")


@contextlib.contextmanager
def _started(command: Sequence[str], log: Path, env: dict[str, str],
             cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd,
                                   env={**os.environ, **env}, start_new_session=True)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def install_mlserver(target: Path) -> Path:
    print(f"installing {' '.join(MLSERVER_PINS)} into a throwaway venv ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    sklearn_pin = f"scikit-learn=={__import__('sklearn').__version__}"
    subprocess.run([str(target / "bin" / "pip"), "install", "--quiet",
                    "--disable-pip-version-check", *MLSERVER_PINS, sklearn_pin],
                   check=True, stderr=subprocess.DEVNULL)
    return target


# -- the run ----------------------------------------------------------------------------------

def measure(running: Running, model: Model, rows: int, concurrency: int, duration: float,
            scratch: Path) -> Load:
    body = v2_body(model, rows)
    answer = requests.post(running.infer_url, data=body,
                           headers={"Content-Type": "application/json"}, timeout=10)
    answer.raise_for_status()
    wrk(running.infer_url, body, concurrency, 1.0, scratch)  # warm up
    rps, p50, p99, failures = parse_wrk(wrk(running.infer_url, body, concurrency, duration,
                                            scratch))
    return Load(rps, p50, p99, failures, tree_rss_mib(running.process.pid))


def run(duration: float, venv: Path, scratch: Path) -> list[dict[str, Any]]:
    results = []
    for model in train():
        skops_path = scratch / f"{model.name}.skops"
        joblib_path = scratch / f"{model.name}.joblib"
        skops.io.dump(model.estimator, skops_path)
        joblib.dump(model.estimator, joblib_path)
        for workers in WORKERS:
            loads: dict[str, dict[tuple[int, int], Load]] = {}
            with modelgate(model, skops_path, workers, scratch / "modelgate.log") as server:
                loads["modelgate"] = {(r, c): measure(server, model, r, c, duration, scratch)
                                      for r in ROWS for c in CONCURRENCY}
            with mlserver(venv, model, joblib_path, workers, scratch,
                          scratch / "mlserver.log") as server:
                loads["mlserver"] = {(r, c): measure(server, model, r, c, duration, scratch)
                                     for r in ROWS for c in CONCURRENCY}
            for rows in ROWS:
                for concurrency in CONCURRENCY:
                    ours, theirs = loads["modelgate"][rows, concurrency], \
                        loads["mlserver"][rows, concurrency]
                    row = {"model": model.label, "rows": rows, "concurrency": concurrency,
                           "workers": workers, "modelgate": ours, "mlserver": theirs}
                    results.append(row)
                    print(_line(row), flush=True)
    return results


def _line(row: dict[str, Any]) -> str:
    ours, theirs = row["modelgate"], row["mlserver"]
    return (f"| {row['model']} | {row['rows']} | {row['concurrency']} | {row['workers']} | "
            f"{ours.rps:,.0f} | {theirs.rps:,.0f} | **{ours.rps / theirs.rps:.1f}×** | "
            f"{ours.p50_ms:.2f} | {theirs.p50_ms:.2f} | {ours.p99_ms:.2f} | "
            f"{theirs.p99_ms:.2f} | {ours.p99_ms / theirs.p99_ms:.2f} | "
            f"{ours.memory_mib:.0f} | {theirs.memory_mib:.0f} | "
            f"{ours.non_2xx}/{theirs.non_2xx} |")


HEADER = ("| model | rows | concurrency | workers | modelgate req/s | MLServer req/s | ratio | "
          "modelgate p50 ms | MLServer p50 ms | modelgate p99 ms | MLServer p99 ms | "
          "p99 ratio | modelgate MiB | MLServer MiB | non-2xx (mg/ML) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for label, rows, concurrency, workers, min_ratio, max_p99 in TARGETS:
        row = next(r for r in results if (r["model"], r["rows"], r["concurrency"],
                                          r["workers"]) == (label, rows, concurrency, workers))
        ratio = row["modelgate"].rps / row["mlserver"].rps
        p99 = row["modelgate"].p99_ms / row["mlserver"].p99_ms
        met = ratio >= min_ratio and (max_p99 is None or p99 <= max_p99)
        wanted = f"≥ {min_ratio:g}× req/s" + (f", ≤ {max_p99:g}× p99" if max_p99 else "")
        lines.append(f"- {label}, {rows} row, concurrency {concurrency}, {workers} worker: "
                     f"{ratio:.1f}× req/s, {p99:.2f}× p99 (target {wanted}): "
                     f"**{'met' if met else 'MISSED'}**")
    return lines


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), "0")
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True,
                                 check=False).stdout.split("\n")[0]
    return (f"{os.cpu_count()} × {cpu}, {int(memory) / 1024 / 1024:.0f} GiB, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"{wrk_version.strip() or 'wrk'}, {', '.join(MLSERVER_PINS)}, "
            f"scikit-learn {__import__('sklearn').__version__}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load")
    parser.add_argument("--mlserver-venv", type=Path, help="reuse this MLServer venv")
    parser.add_argument("--write", type=Path, help="write the results into this markdown file")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk; `make bench-serving` does it)",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="modelgate-bench-") as temporary:
        scratch = Path(temporary)
        venv = args.mlserver_venv or install_mlserver(scratch / "mlserver-venv")
        started = time.monotonic()
        print(HEADER, flush=True)
        results = run(args.duration, venv, scratch)
        elapsed = time.monotonic() - started
    summary = verdicts(results)
    print("\n".join(["", *summary]))
    if args.write:
        template = (Path(__file__).with_name("serving_bench.md")).read_text()
        table = "\n".join([HEADER, *(_line(row) for row in results)])
        args.write.write_text(template.format(machine=machine(), table=table,
                                              targets="\n".join(summary),
                                              duration=f"{args.duration:g}",
                                              elapsed=f"{elapsed / 60:.0f}"))
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
