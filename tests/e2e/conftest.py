"""kind end-to-end tests: a real cluster with modelgate deployed (`make deploy`, issue 6).

Skipped unless a cluster answers at the current kubeconfig context and the ModelDeployment
CRD is installed. Model files are served inside the cluster by a small http server holding
them in a ConfigMap, so they are downloaded and digest-checked as in production.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.kind import SERVING_IMAGE, kubectl


def _cluster_ready() -> str | None:
    try:
        kubectl("version", "--request-timeout=5s")
        kubectl("get", "crd", "modeldeployments.modelgate.dev")
    except (AssertionError, FileNotFoundError, subprocess.TimeoutExpired) as exc:
        return f"no kind cluster with modelgate (run `make kind-up deploy`): {exc}"
    return None


@pytest.fixture(scope="session")
def cluster() -> None:
    why = _cluster_ready()
    if why:
        pytest.skip(why)


@pytest.fixture(scope="session")
def namespace(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from sandbox.models import build

    name = f"e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    models = build(Path(tmp_path_factory.mktemp("models")))
    binary = {f"{key}.skops": base64.b64encode(model.path.read_bytes()).decode()
              for key, model in models.items() if not model.trusted_types}
    manifests = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "models"},
         "binaryData": binary},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "model-store"},
         "spec": {"selector": {"matchLabels": {"app": "model-store"}}, "template": {
             "metadata": {"labels": {"app": "model-store"}},
             "spec": {"containers": [{
                 "name": "http", "image": SERVING_IMAGE,
                 "command": ["python", "-m", "http.server", "8000", "--directory", "/models"],
                 "volumeMounts": [{"name": "models", "mountPath": "/models"}]}],
                 "volumes": [{"name": "models", "configMap": {"name": "models"}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "model-store"},
         "spec": {"selector": {"app": "model-store"}, "ports": [{"port": 8000}]}},
    ]
    kubectl("apply", "-n", name, "-f", "-", stdin=json.dumps({"apiVersion": "v1",
                                                              "kind": "List",
                                                              "items": manifests}))
    kubectl("rollout", "status", "-n", name, "deployment/model-store", "--timeout=120s")
    pytest.models = models  # type: ignore[attr-defined]
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def traffic(namespace: str) -> Callable[[str], None]:
    """Start in-cluster traffic (a curl loop in a pod) to a ModelDeployment's Service."""
    def start(name: str) -> None:
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
                                       "data": [5.9, 3.0, 5.1, 1.8]}]})
        script = (f"while true; do curl -s -o /dev/null -X POST -H 'Content-Type: "
                  f"application/json' -d '{body}' http://{name}/v2/models/{name}/infer; "
                  "sleep 0.02; done")
        kubectl("run", f"traffic-{name}", "-n", namespace, "--image", "curlimages/curl:8.11.1",
                "--restart=Never", "--command", "--", "sh", "-c", script)
    return start
