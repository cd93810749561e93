"""A real MLflow tracking server for the tests, and the real MLflow client to fill it.

MLflow (pinned below) is installed from PyPI into a venv of its own under
`${XDG_CACHE_HOME:-~/.cache}/modelgate/`, once per machine (a file lock keeps parallel workers
from installing it twice): neither the operator nor the serving image depends on it, and it
must not change the versions in the project's venv. The server runs as `mlflow server` with a
SQLite backend store and served artifacts (`--serve-artifacts`) on a loopback port, and is
stopped by its PID. The client is `mlflow.MlflowClient` in that venv, run as a script
(`mlflow_client.py`, beside this file) that prints JSON.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from support.images import cache_dir
from support.processes import stop_group
from support.prometheus import free_port

MLFLOW_VERSION = "3.18.0"
CLIENT = Path(__file__).with_name("mlflow_client.py")


def venv() -> Path:
    """The venv holding mlflow, installed on first use (a few minutes) and reused after."""
    python = f"py{sys.version_info[0]}{sys.version_info[1]}"
    directory = cache_dir() / f"mlflow-{MLFLOW_VERSION}-{python}"
    marker = directory / ".installed"
    cache_dir().mkdir(parents=True, exist_ok=True)
    with (cache_dir() / f"mlflow-{MLFLOW_VERSION}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(directory)], check=True)
            subprocess.run([str(directory / "bin" / "python"), "-m", "pip", "install",
                            "--quiet", "--disable-pip-version-check",
                            f"mlflow=={MLFLOW_VERSION}"], check=True, timeout=1200)
            marker.touch()
    return directory


@dataclass
class Mlflow:
    """A running tracking server and its client."""

    url: str
    python: Path
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, *args: str) -> Any:
        """Run one command of mlflow_client.py against this server; its JSON answer."""
        done = subprocess.run([str(self.python), str(CLIENT), self.url, *args],
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def register(self, name: str, file: Path, artifact: str = "model.skops") -> str:
        """Log `file` as `artifact` of a new run and register it as a new version of `name`;
        the version number."""
        return str(self.client("register", name, str(file), artifact)["version"])

    def version(self, name: str, version: str) -> dict[str, Any]:
        """The model version as the client reads it: tags and aliases."""
        return dict(self.client("get", name, version))

    def alias(self, name: str, alias: str) -> str | None:
        answer = self.client("alias", name, alias)
        return None if answer.get("version") is None else str(answer["version"])

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client("set-alias", name, alias, version)

    def alive(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False


def _start(python: Path, workdir: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    log = workdir / "mlflow.log"
    (workdir / "artifacts").mkdir(parents=True, exist_ok=True)
    command = [str(python.parent / "mlflow"), "server", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
               "--artifacts-destination", str(workdir / "artifacts"), "--serve-artifacts"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return process, log


def _wait_up(server: Mlflow, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not server.alive():
        if server.process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {server.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server not up in {timeout}s: "
                               f"{server.log.read_text()[-3000:]}")
        time.sleep(0.3)


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[Mlflow]:
    python = venv() / "bin" / "python"
    port = free_port()
    process, log = _start(python, workdir, port)
    server = Mlflow(url=f"http://127.0.0.1:{port}", python=python, process=process, log=log)
    try:
        _wait_up(server)
        yield server
    finally:
        stop_group(server.process)


def stop(server: Mlflow) -> None:
    """Stop the server (the registry goes down); `restart` brings it back on the same port."""
    stop_group(server.process)


def restart(server: Mlflow, workdir: Path) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    server.process, server.log = _start(server.python, workdir, port)
    _wait_up(server)
