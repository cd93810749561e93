"""A real Prometheus (the Debian `prometheus` package, `make tools`) for the tests: started on a
loopback port with a generated configuration, scraping the sandbox's serving processes every
second, stopped by its PID.

The scrape job is the documented one, manifests/monitoring/prometheus-scrape-config.yaml, with
its relabelling as written; only its discovery differs. Not `kubernetes_sd_configs` against the
sandbox's API server: Debian builds its package without the Kubernetes discovery ("field
kubernetes_sd_configs not found in type config.ScrapeConfig"). So targets come from
`file_sd_configs`, a file this module writes from the sandbox's pod list, refreshed by a
thread: one target per container port, with the `__meta_kubernetes_*` labels the Kubernetes
discovery would give it (namespace, pod name, pod labels, container port name, pod IP), which
the job's relabelling turns into the namespace and pod labels the provider needs.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
import yaml
from support.processes import stop_group

PROMETHEUS = shutil.which("prometheus")
SCRAPE_INTERVAL = "1s"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


ROOT = Path(__file__).resolve().parents[2]
SCRAPE_JOB = ROOT / "manifests" / "monitoring" / "prometheus-scrape-config.yaml"


def _label_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", key)


def targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """file_sd groups for every container port of every pod with an address, labelled as
    Kubernetes service discovery (role: pod) labels them."""
    groups = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            continue
        metadata = pod["metadata"]
        labels = {
            "__meta_kubernetes_namespace": metadata.get("namespace", "default"),
            "__meta_kubernetes_pod_name": metadata["name"],
            "__meta_kubernetes_pod_ip": ip,
            **{f"__meta_kubernetes_pod_label_{_label_name(key)}": value
               for key, value in (metadata.get("labels") or {}).items()},
            **{f"__meta_kubernetes_pod_labelpresent_{_label_name(key)}": "true"
               for key in (metadata.get("labels") or {})},
        }
        for container in pod["spec"]["containers"]:
            for port in container.get("ports", []):
                groups.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": {
                    **labels, "__meta_kubernetes_pod_container_name": container["name"],
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                }})
    return groups


def scrape_job(targets_file: Path) -> dict[str, Any]:
    """The documented job, discovering from `targets_file` and scraping every second."""
    [job] = yaml.safe_load(SCRAPE_JOB.read_text())["scrape_configs"]
    del job["kubernetes_sd_configs"]
    return {**job, "scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
            "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}]}


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
            "scrape_configs": [scrape_job(self.targets_file)],
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
        stop_group(self.process, grace=15)
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
