"""The operator owns its children: what real kubectl changes in fields it writes (`kubectl
scale`, `kubectl set image`, `kubectl patch`, `kubectl edit` of a serving Deployment) is
restored within two ticks, with a DriftCorrected Event naming the field and the field
manager that changed it, as the API server's metadata.managedFields record it."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from sandbox import NAMESPACE, Sandbox
from support.kubectl import KUBECTL, Kubectl
from support.rollouts import deploy

pytestmark = pytest.mark.sandbox


@pytest.fixture
def kubectl(sandbox: Sandbox) -> Kubectl:
    if KUBECTL is None:
        if os.environ.get("CI"):
            pytest.fail("CI without kubectl")
        pytest.skip("kubectl is not installed")
    assert sandbox.cluster is not None
    return Kubectl({**os.environ, "KUBECONFIG": str(sandbox.cluster.kubeconfig),
                    "KUBECACHEDIR": str(sandbox.workdir / "kube-cache")})


def _server(deployment: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return result


def _corrections(sandbox: Sandbox, name: str) -> list[str]:
    return [str(e.get("message")) for e in sandbox.events(name)
            if e["reason"] == "DriftCorrected"]


def test_kubectl_changes_to_a_serving_deployment_are_restored_and_attributed(
        sandbox: Sandbox, name: str, kubectl: Kubectl) -> None:
    deploy(sandbox, name, "v1", rate=0, serving={"replicas": 2, "image": "sandbox"})
    stable = f"{name}-stable"
    before = sandbox.deployments()[stable]

    kubectl("scale", "-n", NAMESPACE, f"deployment/{stable}", "--replicas=4")
    assert sandbox.deployments()[stable]["spec"]["replicas"] == 4
    sandbox.wait_ticks(2)
    assert sandbox.deployments()[stable]["spec"]["replicas"] == 2
    (message,) = _corrections(sandbox, name)
    assert f"Deployment {stable} was changed outside modelgate" in message
    # kubectl scale writes through the scale subresource, as kubectl (its User-Agent)
    assert "by kubectl (through the scale subresource): spec.replicas was 4, restored to 2" \
        in message

    kubectl("set", "image", "-n", NAMESPACE, f"deployment/{stable}", "server=someone/else:1")
    sandbox.wait_ticks(2)
    assert _server(sandbox.deployments()[stable])["image"] == "sandbox"
    message = _corrections(sandbox, name)[-1]
    assert "by kubectl-set: spec.template.spec.containers[server].image was " \
        "'someone/else:1', restored to 'sandbox'" in message

    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "server", "env": [{"name": "DEBUG", "value": "1"}],
         "resources": {"limits": {"memory": "64Mi"}}}]}}}}
    kubectl("patch", "-n", NAMESPACE, f"deployment/{stable}", "-p", json.dumps(patch))
    sandbox.wait_ticks(2)
    server = _server(sandbox.deployments()[stable])
    assert "DEBUG" not in [e["name"] for e in server["env"]]
    assert server["resources"] == _server(before)["resources"]
    message = _corrections(sandbox, name)[-1]
    assert "by kubectl-patch: " in message
    assert "spec.template.spec.containers[server].env[DEBUG] was added" in message
    assert "spec.template.spec.containers[server].resources.limits was added" in message

    # `kubectl edit`, with an editor that changes the strategy and nothing else
    editor = Kubectl({**kubectl.env, "KUBE_EDITOR": "sed -i -e 's/maxSurge: 1$/maxSurge: 3/'"})
    editor("edit", "-n", NAMESPACE, f"deployment/{stable}")
    sandbox.wait_ticks(2)
    assert sandbox.deployments()[stable]["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 1
    assert "by kubectl-edit: spec.strategy.rollingUpdate.maxSurge was changed" in \
        _corrections(sandbox, name)[-1]

    # the operator's own writes are its field manager's, so they are never taken for drift
    entries = sandbox.deployments()[stable]["metadata"]["managedFields"]
    assert "modelgate" in {entry["manager"] for entry in entries}
    count = len(_corrections(sandbox, name))
    sandbox.wait_ticks(3)
    assert len(_corrections(sandbox, name)) == count
