"""`make sandbox-up`: the sandbox as a long-running process that kubectl drives.

Starts the emulated API server, the kubelet stand-in, the operator (`modelgate run`) and, unless
`--traffic 0`, a kube-proxy stand-in that sends live requests to the serving pods of every
ModelDeployment. Writes into the working directory: `kubeconfig`, `sandbox.pid` (this
process; `make sandbox-down` signals it and it stops everything it started), `examples/`
(ModelDeployments of the sandbox's models, with analysis settings quick enough to decide in
seconds) and `env` (the lines `make sandbox-up` prints: KUBECONFIG and MODELGATE_SANDBOX). Logs
go to `sandbox.log`, `operator.log` and one `<pod>.log` per pod (`kubectl logs`).

    PYTHONPATH=tests python -m sandbox.serve up --workdir .sandbox [--traffic 40]
    PYTHONPATH=tests python -m sandbox.serve down --workdir .sandbox
    PYTHONPATH=tests python -m sandbox.serve operator-down|operator-up --workdir .sandbox

The operator runs as its Deployment would keep it: restarted when it dies, and it can be scaled
to zero and back (operator-down, operator-up) to see what a cluster does without it (the
ModelDeployments' finalizers hold their deletion).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from sandbox import NAMESPACE, Sandbox

EXAMPLE_NAME = "iris"
EXAMPLE_VERSIONS = {"v1": "the first model", "v2": "a retrained model, as good",
                    "v3": "a broken model: fails about a third of its requests"}


def write_examples(sandbox: Sandbox, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for version, what in EXAMPLE_VERSIONS.items():
        body = sandbox.model_deployment(EXAMPLE_NAME, version,
                                        serving={"replicas": 2, "image": "sandbox"})
        del body["metadata"]["namespace"]
        text = (f"# iris {version}: {what}. A model file of this sandbox, analysis settings "
                "that decide in seconds at the sandbox's traffic.\n"
                + yaml.safe_dump(body, sort_keys=False))
        (directory / f"{EXAMPLE_NAME}-{version}.yaml").write_text(text)


class TrafficFollower:
    """kube-proxy's part: traffic at `rate` to the pods of every ModelDeployment that exists."""

    def __init__(self, sandbox: Sandbox, rate: float) -> None:
        self.sandbox = sandbox
        self.rate = rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic-follower", daemon=True)

    def start(self) -> None:
        if self.rate > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            cluster = self.sandbox.cluster
            assert cluster is not None
            assert cluster.emulator is not None
            names = {md["metadata"]["name"] for md in cluster.emulator.snapshot(
                "modelgate.dev/v1alpha1/modeldeployments", NAMESPACE)}
            for name in names - set(self.sandbox.traffic):
                self.sandbox.start_traffic(name, self.rate)
            for name in set(self.sandbox.traffic) - names:
                self.sandbox.stop_traffic(name)


class OperatorSupervisor:
    """The operator's Deployment, as far as the sandbox has one: the operator process is
    restarted when it dies (a crashed or killed pod is replaced), and it can be scaled to zero
    and back (`operator down` / `operator up`: SIGUSR1 / SIGUSR2 to the sandbox), so tests can
    see what a cluster does while the operator is away. `operator.pid` holds its pid ("" while
    scaled to zero)."""

    def __init__(self, sandbox: Sandbox, workdir: Path) -> None:
        self.sandbox = sandbox
        self.pid_file = workdir / "operator.pid"
        self.wanted = True
        self.requests: list[bool] = []

    def request(self, running: bool) -> None:  # from a signal handler: record only
        self.requests.append(running)

    def step(self) -> None:
        while self.requests:
            self.wanted = self.requests.pop(0)
            if not self.wanted and self.sandbox.operator is not None:
                self.sandbox.stop_operator()
                print("sandbox: operator scaled to zero", flush=True)
        operator = self.sandbox.operator
        if self.wanted and (operator is None or operator.poll() is not None):
            if operator is not None:
                print(f"sandbox: operator exited ({operator.returncode}); restarting it",
                      flush=True)
            self.sandbox.start_operator()
        operator = self.sandbox.operator
        pid = str(operator.pid) if operator is not None and self.wanted else ""
        if not self.pid_file.exists() or self.pid_file.read_text() != pid:
            self.pid_file.write_text(pid)


def run(workdir: Path, traffic: float, tick: float) -> int:
    """The sandbox in the foreground, until SIGTERM or SIGINT."""
    workdir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with Sandbox.started(workdir, tick=tick) as sandbox:
        assert sandbox.cluster is not None
        write_examples(sandbox, workdir / "examples")
        follower = TrafficFollower(sandbox, traffic)
        follower.start()
        supervisor = OperatorSupervisor(sandbox, workdir)
        signal.signal(signal.SIGUSR1, lambda *_: supervisor.request(False))
        signal.signal(signal.SIGUSR2, lambda *_: supervisor.request(True))
        supervisor.step()
        (workdir / "env").write_text(f"export KUBECONFIG={sandbox.cluster.kubeconfig}\n"
                                     f"export MODELGATE_SANDBOX={workdir}\n")
        print(f"sandbox: API server {sandbox.cluster.url}, operator pid "
              f"{sandbox.operator.pid if sandbox.operator else None}, traffic {traffic:g}/s "
              "per ModelDeployment", flush=True)
        while not stop.wait(0.2):
            supervisor.step()
        print("sandbox: stopping", flush=True)
        follower.stop()
    (workdir / "env").unlink(missing_ok=True)
    (workdir / "operator.pid").unlink(missing_ok=True)
    print("sandbox: stopped", flush=True)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone in all but name
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def descendants(pid: int) -> set[int]:
    """Every process below pid (the operator and the serving pods run in sessions of their
    own, so a process group would miss them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def up(workdir: Path, traffic: float, tick: float, timeout: float = 120) -> int:
    """Start `run` in the background (a session of its own) and wait until it serves."""
    workdir.mkdir(parents=True, exist_ok=True)
    pid_file = workdir / "sandbox.pid"
    if pid_file.exists() and _alive(int(pid_file.read_text())):
        print(f"sandbox-up: already running (pid {pid_file.read_text().strip()}); "
              "make sandbox-down stops it", file=sys.stderr)
        sys.stdout.write((workdir / "env").read_text())
        return 0
    (workdir / "env").unlink(missing_ok=True)
    with (workdir / "sandbox.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.serve", "run", "--workdir", str(workdir),
             "--traffic", str(traffic), "--tick", str(tick)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "PYTHONPATH": str(Path(
                __file__).resolve().parents[1])})
    pid_file.write_text(str(process.pid))
    deadline = time.monotonic() + timeout
    while not (workdir / "env").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            print(f"sandbox-up: the sandbox did not start; {workdir / 'sandbox.log'}:\n"
                  + (workdir / "sandbox.log").read_text(errors="replace")[-3000:],
                  file=sys.stderr)
            down(workdir)
            return 1
        time.sleep(0.1)
    sys.stdout.write((workdir / "env").read_text())
    print(f"sandbox-up: running in the background (pid {process.pid}); "
          "`make sandbox-down` stops it", file=sys.stderr)
    return 0


def down(workdir: Path, timeout: float = 30) -> int:
    """SIGTERM the sandbox, which stops what it started; then end any process of it left, by
    PID, and say so."""
    pid_file = workdir / "sandbox.pid"
    if not pid_file.exists():
        print("sandbox-down: no sandbox running here", file=sys.stderr)
        return 0
    pid = int(pid_file.read_text())
    if _alive(pid):
        started = descendants(pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {p for p in started | {pid} if _alive(p)}
        for straggler in left:
            print(f"sandbox-down: process {straggler} did not stop: SIGKILL", file=sys.stderr)
            os.kill(straggler, signal.SIGKILL)
    pid_file.unlink()
    (workdir / "env").unlink(missing_ok=True)
    print("sandbox-down: stopped", file=sys.stderr)
    return 0


def operator(workdir: Path, state: str, timeout: float = 60) -> int:
    """Scale the sandbox's operator to zero (`down`) or back to one (`up`), and wait until it
    is so."""
    pid_file = workdir / "sandbox.pid"
    if not pid_file.exists() or not _alive(int(pid_file.read_text())):
        print("sandbox operator: no sandbox running here", file=sys.stderr)
        return 1
    os.kill(int(pid_file.read_text()), signal.SIGUSR2 if state == "up" else signal.SIGUSR1)
    operator_pid = workdir / "operator.pid"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = operator_pid.read_text().strip() if operator_pid.exists() else ""
        if (state == "up") == (text != "" and _alive(int(text))):
            print(f"sandbox operator: {state}", file=sys.stderr)
            return 0
        time.sleep(0.1)
    print(f"sandbox operator: not {state} after {timeout:g}s", file=sys.stderr)
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "run", "operator-up",
                                            "operator-down"])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--traffic", type=float, default=40,
                        help="requests per second to each ModelDeployment (0: none)")
    parser.add_argument("--tick", type=float, default=0.5, help="the operator's tick, seconds")
    options = parser.parse_args()
    workdir: Path = options.workdir.resolve()
    if options.command == "up":
        return up(workdir, options.traffic, options.tick)
    if options.command == "down":
        return down(workdir)
    if options.command.startswith("operator-"):
        return operator(workdir, options.command.removeprefix("operator-"))
    return run(workdir, options.traffic, options.tick)


if __name__ == "__main__":
    sys.exit(main())
