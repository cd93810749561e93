"""A real Prometheus (the Debian `prometheus` package, `make tools`) for the tests: started on a
loopback port with a generated configuration, scraping the sandbox's serving processes every
second, stopped by its PID.

Targets come from `file_sd_configs`, a file this module writes from the sandbox's pod list (as
the API shows it: podIP, the container port, the pod's labels), refreshed by a thread. Not
`kubernetes_sd_configs` against the sandbox's API server: Debian builds its package without the
Kubernetes discovery ("field kubernetes_sd_configs not found in type config.ScrapeConfig").
The target labels are those the documented scrape configurations produce
(manifests/monitoring/): namespace, pod, and the pods' modelgate labels.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
import yaml

PROMETHEUS = shutil.which("prometheus")
SCRAPE_INTERVAL = "1s"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """file_sd groups for the serving pods that have an address, labelled as a PodMonitor or
    the kubernetes_sd job of manifests/monitoring/ would label them."""
    groups = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        labels = pod["metadata"].get("labels") or {}
        if not ip or labels.get("app.kubernetes.io/name") != "modelgate-serving":
            continue
        port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
        groups.append({"targets": [f"{ip}:{port}"], "labels": {
            "namespace": pod["metadata"].get("namespace", "default"),
            "pod": pod["metadata"]["name"],
            "modelgate_dev_role": labels.get("modelgate.dev/role", ""),
            "app_kubernetes_io_instance": labels.get("app.kubernetes.io/instance", ""),
        }})
    return groups


class Prometheus:
    """One Prometheus process; `start()` and `stop()` may be called again (same port and
    storage, as a restarted server)."""

    def __init__(self, workdir: Path, pods: Callable[[], list[dict[str, Any]]], *,
                 web_config: dict[str, Any] | None = None) -> None:
        assert PROMETHEUS, "prometheus is not installed: run `make tools`"
        self.workdir = workdir
        self.pods = pods
        self.port = free_port()
        self.scheme = "https" if web_config and "tls_server_config" in web_config else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.targets_file = workdir / "targets.json"
        self.config = workdir / "prometheus.yml"
        self.web_config = workdir / "web.yml" if web_config else None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                       "evaluation_interval": SCRAPE_INTERVAL},
            "scrape_configs": [{"job_name": "modelgate-serving", "file_sd_configs": [
                {"files": [str(self.targets_file)], "refresh_interval": "1s"}]}],
        }))
        if self.web_config is not None:
            self.web_config.write_text(yaml.safe_dump(web_config))
        self._stop = threading.Event()
        self._sync = threading.Thread(target=self._sync_targets, name="file-sd", daemon=True)
        self.sync_targets()
        self._sync.start()

    def sync_targets(self) -> None:
        text = json.dumps(targets(self.pods()), sort_keys=True)
        if not self.targets_file.exists() or self.targets_file.read_text() != text:
            partial = self.targets_file.with_suffix(".tmp")
            partial.write_text(text)
            partial.replace(self.targets_file)  # atomic: Prometheus never reads half a file

    def _sync_targets(self) -> None:
        while not self._stop.wait(0.25):
            with contextlib.suppress(Exception):  # the sandbox may be going away
                self.sync_targets()

    def start(self) -> None:
        assert self.process is None
        command = [str(PROMETHEUS), f"--config.file={self.config}",
                   f"--storage.tsdb.path={self.workdir / 'data'}",
                   f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
                   "--storage.tsdb.retention.time=1h"]
        if self.web_config is not None:
            command.append(f"--web.config.file={self.web_config}")
        log = (self.workdir / "prometheus.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("prometheus exited at start:\n" + self.log_tail())
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/-/ready", timeout=1, verify=False).ok:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("prometheus not ready within 30 s:\n" + self.log_tail())
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM by PID (SIGKILL if it lingers); storage stays for a restart."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None

    def close(self) -> None:
        self._stop.set()
        self._sync.join(5)
        self.stop()

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = requests.post(f"{self.url}/api/v1/query", data={"query": promql},
                               timeout=5, verify=False).json()
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / "prometheus.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running(workdir: Path, pods: Callable[[], list[dict[str, Any]]],
            **options: Any) -> Iterator[Prometheus]:
    server = Prometheus(workdir, pods, **options)
    try:
        server.start()
        yield server
    finally:
        server.close()
