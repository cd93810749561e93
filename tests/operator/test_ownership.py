"""The operator touches only objects it controls: a child's name taken by a stranger is
reported (a NameConflict condition and Event) and left exactly as it was."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from kubernetes import client
from sandbox import NAMESPACE, Sandbox
from support.rollouts import eventually, healthy

pytestmark = pytest.mark.sandbox


def _stranger_deployment(name: str) -> dict[str, Any]:
    labels = {"app": "someone-elses"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
            "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "web", "image": "nginx",
                          "ports": [{"containerPort": 8080}]}]}}}}


def _stranger_service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"selector": {"app": "someone-elses"},
                     "ports": [{"name": "web", "port": 8443, "targetPort": 8080}]}}


def _read(call: Any, name: str) -> dict[str, Any]:
    """What the owner of an object decides: its spec, labels, annotations and owners (the
    sandbox's kubelet writes a Deployment's status, as a real one would)."""
    body = json.loads(call(name, NAMESPACE, _preload_content=False).data)
    metadata = body["metadata"]
    return {"uid": metadata["uid"], "spec": body["spec"],
            **{key: metadata.get(key) for key in ("labels", "annotations", "ownerReferences")}}


def _ticks(sandbox: Sandbox) -> float:
    """Ticks the operator has run (its own tick-duration histogram's count)."""
    text = requests.get(f"http://127.0.0.1:{sandbox.metrics_port}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("modelgate_operator_tick_seconds_count"))


def _conflict(status: dict[str, Any]) -> bool:
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    names = conditions.get("NamesAvailable", {})
    return names.get("status") == "False" and names.get("reason") == "NameConflict"


def test_an_unowned_canary_deployment_and_service_are_reported_never_touched(
        sandbox: Sandbox, name: str) -> None:
    apps, core = client.AppsV1Api(sandbox.api), client.CoreV1Api(sandbox.api)
    apps.create_namespaced_deployment(NAMESPACE, _stranger_deployment(f"{name}-canary"),
                                      _preload_content=False)
    core.create_namespaced_service(NAMESPACE, _stranger_service(name), _preload_content=False)
    deployment_before = _read(apps.read_namespaced_deployment, f"{name}-canary")
    service_before = _read(core.read_namespaced_service, name)

    sandbox.apply(sandbox.model_deployment(name, "v1"))
    status = sandbox.wait(name, _conflict, timeout=30, what="a NameConflict condition")
    eventually(lambda: "NameConflict" in sandbox.event_reasons(name),
               what="a NameConflict Event")
    message = {c["type"]: c for c in status["conditions"]}["NamesAvailable"]["message"]
    assert f"Deployment {name}-canary exists and is not controlled" in message
    assert f"Service {name} exists and is not controlled" in message
    # several ticks later, neither stranger has been changed, adopted or deleted
    ticks = _ticks(sandbox)
    eventually(lambda: _ticks(sandbox) >= ticks + 4, timeout=30, what="four more ticks")
    assert _read(apps.read_namespaced_deployment, f"{name}-canary") == deployment_before
    assert _read(core.read_namespaced_service, name) == service_before
    assert f"{name}-stable" not in sandbox.deployments()  # nothing is acted on meanwhile

    # once the strangers are gone, the rollout goes ahead and says the names are free
    apps.delete_namespaced_deployment(f"{name}-canary", NAMESPACE, _preload_content=False)
    core.delete_namespaced_service(name, NAMESPACE, _preload_content=False)
    status = sandbox.wait(name, healthy("v1"), timeout=90)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["NamesAvailable"]["status"] == "True"
    assert "NameConflictResolved" in sandbox.wait_events(name, "NameConflictResolved")
    service = _read(core.read_namespaced_service, name)
    assert service["ownerReferences"][0]["kind"] == "ModelDeployment"
