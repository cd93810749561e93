"""The local sandbox: the real operator, an emulated API server, real serving processes as pods,
and traffic. For trying modelgate and for tests; never a production path.

    with Sandbox.started(workdir) as sandbox:
        sandbox.apply(sandbox.model_deployment("iris", "v1"))
        sandbox.wait("iris", lambda s: s.get("phase") == "Healthy")
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml
from support.processes import stop_group

from sandbox.emulator import EmulatedCluster
from sandbox.models import ModelFile, build, iris_rows
from sandbox.traffic import Traffic

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "modeldeployments.modelgate.dev.yaml"
NAMESPACE = "default"
BIN = Path(sys.executable).parent
TIMEOUT_SCALE = float(os.environ.get("MODELGATE_TEST_TIMEOUT_SCALE", "3"))
"""Every wait's deadline is multiplied by this: deadlines only cost time when a test fails,
and a busy machine (a second suite beside this one, stress-ng) can slow a rollout severalfold."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Sandbox:
    """A running sandbox; build it with `Sandbox.started(workdir)`."""

    def __init__(self, workdir: Path, tick: float) -> None:
        self.workdir = workdir
        self.tick = tick
        self.models: dict[str, ModelFile] = {}
        self.operator: subprocess.Popen[bytes] | None = None
        self.operator_log = workdir / "operator.log"
        self.traffic: dict[str, Traffic] = {}
        self.cluster: EmulatedCluster | None = None
        self.metrics_port = self.health_port = 0

    @classmethod
    @contextmanager
    def started(cls, workdir: Path, *, tick: float = 0.5,
                operator: bool = True) -> Iterator[Sandbox]:
        sandbox = cls(workdir, tick)
        workdir.mkdir(parents=True, exist_ok=True)
        crd = yaml.safe_load(CRD.read_text())
        with ExitStack() as stack:
            sandbox.cluster = stack.enter_context(
                EmulatedCluster([crd], [NAMESPACE], workdir).running())
            # the kubernetes client reads $KUBECONFIG when configured: set it first
            os.environ["KUBECONFIG"] = str(sandbox.cluster.kubeconfig)
            from kubernetes import client, config

            from sandbox.kubelet import Kubelet

            config.load_kube_config(config_file=str(sandbox.cluster.kubeconfig))
            sandbox.api = client.ApiClient()
            sandbox.custom = client.CustomObjectsApi(sandbox.api)
            sandbox.kubelet = Kubelet(sandbox.api, NAMESPACE, workdir,
                                      ip_base=random.randrange(16, 250),
                                      pythonpath=str(ROOT / "tests"))
            sandbox.kubelet.start()
            stack.callback(sandbox.kubelet.stop)
            sandbox.models = build(workdir / "models")
            if operator:
                sandbox.start_operator()
            stack.callback(sandbox.stop_operator)
            stack.callback(sandbox.stop_traffic)
            yield sandbox

    # --- the operator ------------------------------------------------------------------------

    def start_operator(self, **settings: str) -> None:
        """`modelgate run` on the sandbox; `settings` adds MODELGATE_OPERATOR_* variables."""
        assert self.cluster is not None
        self.metrics_port, self.health_port = _free_port(), _free_port()
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig),
               "MODELGATE_OPERATOR_TICK": str(self.tick),
               "MODELGATE_OPERATOR_SCRAPE_TIMEOUT": "2",
               "MODELGATE_OPERATOR_METRICS_PORT": str(self.metrics_port),
               "MODELGATE_OPERATOR_HEALTH_PORT": str(self.health_port),
               "MODELGATE_OPERATOR_NAMESPACES": NAMESPACE,
               "MODELGATE_OPERATOR_STANDALONE": "true", **settings}
        log = self.operator_log.open("ab")
        self.operator = subprocess.Popen([str(BIN / "modelgate"), "run"], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def kill_operator(self) -> None:
        """SIGKILL: no cleanup, no last status write, as a crash or an OOM kill."""
        assert self.operator is not None
        os.killpg(self.operator.pid, signal.SIGKILL)
        self.operator.wait(10)
        self.operator = None

    def stop_operator(self) -> None:
        if self.operator is not None:
            stop_group(self.operator)
        self.operator = None

    # --- traffic -----------------------------------------------------------------------------

    def start_traffic(self, name: str, rate: float, model_name: str | None = None) -> Traffic:
        selector = {"app.kubernetes.io/name": "modelgate-serving",
                    "app.kubernetes.io/instance": name}
        rows = [list(map(float, row)) for row in iris_rows()]
        self.stop_traffic(name)
        traffic = Traffic(lambda: self.kubelet.ready_endpoints(selector), model_name or name,
                          rows, rate, workers=min(8, max(1, int(rate)))).start()
        self.traffic[name] = traffic
        return traffic

    def stop_traffic(self, name: str | None = None) -> None:
        for key in [name] if name else list(self.traffic):
            traffic = self.traffic.pop(key, None)
            if traffic is not None:
                traffic.stop()

    def delete(self, name: str) -> None:
        """Delete a ModelDeployment and, as the garbage collector would, its children."""
        self.stop_traffic(name)
        self.custom.delete_namespaced_custom_object(
            "modelgate.dev", "v1alpha1", NAMESPACE, "modeldeployments", name,
            _preload_content=False)
        from kubernetes import client

        apps = client.AppsV1Api(self.api)
        for role in ("stable", "canary"):
            try:
                apps.delete_namespaced_deployment(f"{name}-{role}", NAMESPACE,
                                                  _preload_content=False)
            except client.exceptions.ApiException as exc:
                if exc.status != 404:
                    raise

    # --- ModelDeployments -------------------------------------------------------------------

    def model_deployment(self, name: str, version: str, **spec: Any) -> dict[str, Any]:
        """A ModelDeployment of a sandbox model with quick analysis settings, plus `spec`."""
        body: dict[str, Any] = {
            "apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "model": self.models[version].model_spec(),
                "serving": {"replicas": 4, "image": "sandbox"},
                "rollout": {"steps": [{"setWeight": 25}, {"pause": {"duration": "2s"}},
                                      {"setWeight": 50}, {"analysis": {}}]},
                # tolerances loose enough to decide within seconds at sandbox traffic
                "analysis": {"interval": "2s", "minSamples": 50, "maxDuration": "5m",
                             "provider": {"timeout": "1s"}, "metrics": [
                                 {"name": "error-rate", "type": "errorRate",
                                  "tolerance": 0.03},
                                 {"name": "latency-p90", "type": "latency", "quantile": 0.9,
                                  "tolerance": 0.5},
                                 {"name": "prediction-distribution",
                                  "type": "predictionDistribution", "tolerance": 0.2}]},
            },
        }
        for key, value in spec.items():
            body["spec"][key] = value
        return body

    def apply(self, body: Mapping[str, Any]) -> None:
        """Create, or replace the spec of, a ModelDeployment (as kubectl apply would)."""
        from kubernetes.client.exceptions import ApiException

        name = body["metadata"]["name"]
        try:
            self.custom.create_namespaced_custom_object(
                "modelgate.dev", "v1alpha1", NAMESPACE, "modeldeployments", dict(body),
                _preload_content=False)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = self.get(name)
            # a merge patch merges objects; null out what the new spec drops
            patch_spec = dict.fromkeys(current.get("spec", {}))
            patch_spec.update(body["spec"])
            self.custom.patch_namespaced_custom_object(
                "modelgate.dev", "v1alpha1", NAMESPACE, "modeldeployments", name,
                {"spec": patch_spec}, _content_type="application/merge-patch+json",
                _preload_content=False)

    def set_model(self, name: str, version: str) -> None:
        self.custom.patch_namespaced_custom_object(
            "modelgate.dev", "v1alpha1", NAMESPACE, "modeldeployments", name,
            {"spec": {"model": {**self.models[version].model_spec(), "trustedTypes":
                                list(self.models[version].trusted_types) or None}}},
            _content_type="application/merge-patch+json", _preload_content=False)

    def annotate(self, name: str, annotations: Mapping[str, str | None]) -> None:
        self.custom.patch_namespaced_custom_object(
            "modelgate.dev", "v1alpha1", NAMESPACE, "modeldeployments", name,
            {"metadata": {"annotations": dict(annotations)}},
            _content_type="application/merge-patch+json", _preload_content=False)

    def get(self, name: str) -> dict[str, Any]:
        response = self.custom.get_namespaced_custom_object(
            "modelgate.dev", "v1alpha1", NAMESPACE, "modeldeployments", name,
            _preload_content=False)
        return dict(json.loads(response.data))

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def wait(self, name: str, condition: Callable[[dict[str, Any]], bool], *,
             timeout: float = 90, what: str = "") -> dict[str, Any]:
        """Poll status until `condition(status)` holds; fail with the story so far if not."""
        timeout *= TIMEOUT_SCALE
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status(name)
            if condition(status):
                return status
            time.sleep(0.2)
        raise AssertionError(
            f"timed out after {timeout:g}s waiting for {what or condition}: phase "
            f"{status.get('phase')!r}: {status.get('message')!r}\nevents:\n"
            + "\n".join(f"  {e['reason']}: {e.get('message')}" for e in self.events(name))
            + "\noperator log (last lines):\n" + self.operator_tail()
            + f"\nkubelet errors: {self.kubelet.errors[-3:]}")

    def events(self, name: str) -> list[dict[str, Any]]:
        assert self.cluster is not None
        assert self.cluster.emulator is not None
        events = [event for event in self.cluster.emulator.snapshot("v1/events", NAMESPACE)
                  if (event.get("involvedObject") or {}).get("name") == name]
        return sorted(events, key=lambda e: e["metadata"].get("resourceVersion", "0").zfill(12))

    @contextmanager
    def without_crd_validation(self) -> Iterator[None]:
        """Custom resources applied meanwhile skip the CRD's schema and rules, as on a cluster
        whose CRD predates them: what the operator must then refuse on its own."""
        assert self.cluster is not None
        assert self.cluster.emulator is not None
        self.cluster.emulator.admit_custom_resources = False
        try:
            yield
        finally:
            self.cluster.emulator.admit_custom_resources = True

    def event_reasons(self, name: str) -> list[str]:
        return [event["reason"] for event in self.events(name)]

    def wait_events(self, name: str, *reasons: str, timeout: float = 30) -> list[str]:
        """The Event reasons once every one of `reasons` has been posted. A tick posts its
        Events right after the status that records them (never before: a decision whose
        status write was refused posts none), so a test that has just seen a status waits
        for its Events rather than reading them at once."""
        timeout *= TIMEOUT_SCALE
        deadline = time.monotonic() + timeout
        while True:
            found = self.event_reasons(name)
            if set(reasons) <= set(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for Events "
                                     f"{', '.join(reasons)} of {name}; posted: {found}")
            time.sleep(0.1)

    def deployments(self) -> dict[str, dict[str, Any]]:
        assert self.cluster is not None
        assert self.cluster.emulator is not None
        return {d["metadata"]["name"]: d for d in
                self.cluster.emulator.snapshot("apps/v1/deployments", NAMESPACE)}

    def pods(self) -> list[dict[str, Any]]:
        assert self.cluster is not None
        assert self.cluster.emulator is not None
        return self.cluster.emulator.snapshot("v1/pods", NAMESPACE)

    def ticks(self) -> int:
        """Reconciliation ticks the running operator has finished (all objects together)."""
        import requests

        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith("modelgate_operator_tick_seconds_count "):
                return int(float(line.split()[1]))
        return 0

    def wait_ticks(self, ticks: int, *, timeout: float = 60) -> None:
        """Wait until the operator has had `ticks` chances to act on every ModelDeployment.

        For "nothing happens" checks: waiting for ticks, not seconds, stays right on a slow
        machine. Each object's timer ticks once per period, so the operator-wide count must
        grow by `ticks` for each ModelDeployment there is.
        """
        assert self.cluster is not None
        assert self.cluster.emulator is not None
        objects = max(1, len(self.cluster.emulator.snapshot(
            "modelgate.dev/v1alpha1/modeldeployments", NAMESPACE)))
        target = self.ticks() + ticks * objects
        timeout *= TIMEOUT_SCALE
        deadline = time.monotonic() + timeout
        while self.ticks() < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"the operator did not tick {ticks} times in {timeout:g}s"
                                     f"\noperator log (last lines):\n{self.operator_tail()}")
            time.sleep(0.1)

    def operator_tail(self, lines: int = 30) -> str:
        if not self.operator_log.exists():
            return "(no log)"
        return "\n".join(self.operator_log.read_text(errors="replace").splitlines()[-lines:])

    def cli(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """Run the `modelgate` command against the sandbox's API server."""
        assert self.cluster is not None
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
        return subprocess.run([str(BIN / "modelgate"), *args], env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)
