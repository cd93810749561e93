"""Real `modelgate-serve` processes on 127.0.0.1 for tests, and model files to serve."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import skops.io
from sandbox import TIMEOUT_SCALE


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def save_skops(estimator: Any, path: Path) -> str:
    """Write `estimator` as skops; its SHA-256."""
    skops.io.dump(estimator, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Served:
    """A running modelgate-serve process."""

    process: subprocess.Popen[str]
    port: int
    name: str
    log_path: Path
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url + path, timeout=10, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.post(self.url + path, timeout=10, **kwargs)

    def infer(self, body: Any, version: str | None = None) -> requests.Response:
        path = f"/v2/models/{self.name}/infer"
        if version is not None:
            path = f"/v2/models/{self.name}/versions/{version}/infer"
        return self.post(path, json=body)

    def predict_v1(self, instances: Any) -> requests.Response:
        return self.post(f"/v1/models/{self.name}:predict", json={"instances": instances})

    def wait_until(self, path: str, status: int, timeout: float = 30.0,
                   containing: str = "") -> requests.Response:
        """Poll `path` until it answers `status` (with `containing` in the body); fail with
        the server's log otherwise. The timeout is scaled like every deadline of the suite
        (MODELGATE_TEST_TIMEOUT_SCALE): its other workers share the cores."""
        deadline = time.monotonic() + timeout * TIMEOUT_SCALE
        last: requests.Response | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"modelgate-serve exited {self.process.returncode}:\n"
                                     f"{self.log()}")
            try:
                last = self.get(path)
                if last.status_code == status and containing in last.text:
                    return last
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{path} did not answer {status} within {timeout}s "
                             f"(last {last.status_code if last else 'no answer'}):\n{self.log()}")

    def metrics(self) -> str:
        return self.get("/metrics").text

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()


def serve_command() -> str:
    found = shutil.which("modelgate-serve", path=str(Path(sys.executable).parent))
    assert found, "modelgate-serve is not installed next to this Python (make install)"
    return found


@contextmanager
def serving(model_uri: str, log_dir: Path, *, name: str = "model", version: str = "1",
            args: Sequence[str] = (), env: dict[str, str] | None = None,
            ready: bool = True) -> Iterator[Served]:
    """Start modelgate-serve; wait until ready (or only live); stop it afterwards."""
    port = free_port()
    log_path = log_dir / f"serve-{port}.log"
    command = [serve_command(), "--model-uri", model_uri, "--model-name", name,
               "--model-version", version, "--host", "127.0.0.1", "--port", str(port),
               *args]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, **(env or {})})
    served = Served(process=process, port=port, name=name, log_path=log_path)
    try:
        served.wait_until("/v2/health/live", 200)
        if ready:
            served.wait_until("/v2/health/ready", 200)
        yield served
    finally:
        served.stop()
