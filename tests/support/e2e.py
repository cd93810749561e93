"""The end-to-end suite's view of a cluster: kind (or any cluster with modelgate deployed, the
current kubectl context) or the sandbox of `make sandbox-up`, both driven by real kubectl and
chosen by the kubeconfig. The few things that differ between the two live here, each saying
why; the tests in tests/e2e are the same for both.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from support.kubectl import KUBECTL

SERVING_IMAGE = "modelgate/serving:dev"
OPERATOR_NAMESPACE = "modelgate-system"
OPERATOR_SELECTOR = "app.kubernetes.io/name=modelgate-operator"
MODEL_STORE_PORT = 8000


@dataclass
class E2ECluster:
    kind: str
    """"kind" (the current kubectl context) or "sandbox"."""
    env: dict[str, str]
    """The environment kubectl runs in (its KUBECONFIG chooses the cluster)."""
    namespace: str = "default"
    sandbox_dir: Path | None = None
    models: dict[str, Any] = field(default_factory=dict)
    model_store_url: str = ""

    # Analysis settings of the test ModelDeployments: the sandbox's operator ticks every 0.5 s,
    # a cluster's (the kind overlay) every 2 s, so the sandbox looks more often.
    @property
    def interval(self) -> str:
        return "2s" if self.kind == "sandbox" else "5s"

    @property
    def provider_timeout(self) -> str:
        return "1s" if self.kind == "sandbox" else "2s"

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True,
                timeout: float = 180) -> str:
        result = self.run(*args, stdin=stdin, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
        return result.stdout

    def run(self, *args: str, stdin: str | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        return subprocess.run([KUBECTL, *args], input=stdin, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    # --- the model store: model files over http, digest-checked by the serving pods ---------

    def start_model_store(self, models: dict[str, Any]) -> None:
        """A ConfigMap of the model files served by `python -m http.server` from the serving
        image, as a Deployment and a Service. In the sandbox the same Deployment runs as a
        process on its pod's 127.x address; there is no cluster DNS, so the models' URIs name
        that address rather than the Service."""
        self.models = models
        binary = {f"{key}.skops": base64.b64encode(model.path.read_bytes()).decode()
                  for key, model in models.items() if not model.trusted_types}
        container = {
            "name": "http", "image": SERVING_IMAGE, "imagePullPolicy": "Never",
            "command": ["python", "-m", "http.server", str(MODEL_STORE_PORT), "--bind",
                        "$(POD_IP)", "--directory", "/models"],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "ports": [{"containerPort": MODEL_STORE_PORT}],
            "readinessProbe": {"httpGet": {"path": "/", "port": MODEL_STORE_PORT}},
            "volumeMounts": [{"name": "models", "mountPath": "/models"}]}
        manifests = [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "models"},
             "binaryData": binary},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "model-store"},
             "spec": {"selector": {"matchLabels": {"app": "model-store"}}, "template": {
                 "metadata": {"labels": {"app": "model-store"}},
                 "spec": {"containers": [container],
                          "volumes": [{"name": "models", "configMap": {"name": "models"}}]}}}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "model-store"},
             "spec": {"selector": {"app": "model-store"},
                      "ports": [{"port": MODEL_STORE_PORT}]}},
        ]
        self.kubectl("apply", "-n", self.namespace, "-f", "-",
                     stdin=yaml.safe_dump_all(manifests))
        self.kubectl("rollout", "status", "-n", self.namespace, "deployment/model-store",
                     "--timeout=180s")
        if self.kind == "sandbox":
            address = self.kubectl("get", "pods", "-n", self.namespace, "-l", "app=model-store",
                                   "-o", "jsonpath={.items[0].status.podIP}")
            self.model_store_url = f"http://{address}:{MODEL_STORE_PORT}"
        else:
            self.model_store_url = f"http://model-store.{self.namespace}.svc:{MODEL_STORE_PORT}"

    def stop_model_store(self) -> None:
        self.kubectl("delete", "-n", self.namespace, "deployment/model-store",
                     "service/model-store", "configmap/models", "--ignore-not-found",
                     "--wait=false", check=False)

    # --- traffic and the operator ------------------------------------------------------------

    def traffic(self, name: str) -> None:
        """Requests to a ModelDeployment's Service. On a cluster a curl loop in a pod; the
        sandbox's kube-proxy stand-in (`make sandbox-up`) already sends them to the ready pods
        of every ModelDeployment, so there is nothing to start."""
        if self.kind == "sandbox":
            return
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
                                       "data": [5.9, 3.0, 5.1, 1.8]}]})
        script = (f"while true; do curl -s -o /dev/null -X POST -H 'Content-Type: "
                  f"application/json' -d '{body}' http://{name}/v2/models/{name}/infer; "
                  "sleep 0.02; done")
        self.kubectl("run", f"traffic-{name}", "-n", self.namespace, "--image",
                     "curlimages/curl:8.11.1", "--restart=Never", "--command", "--", "sh", "-c",
                     script)

    def kill_operator(self) -> None:
        """The operator's pod killed without grace; its Deployment starts another."""
        if self.kind == "sandbox":
            assert self.sandbox_dir is not None
            pid = int((self.sandbox_dir / "operator.pid").read_text())
            os.kill(pid, signal.SIGKILL)  # sandbox-up restarts it, as the Deployment would
            return
        self.kubectl("delete", "pod", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR,
                     "--grace-period=0", "--force")

    def scale_operator(self, replicas: int) -> None:
        """The operator's Deployment scaled to 0 or 1, waiting until it is so."""
        if self.kind == "sandbox":
            assert self.sandbox_dir is not None
            state = "up" if replicas else "down"
            result = subprocess.run(
                [sys.executable, "-m", "sandbox.serve", f"operator-{state}", "--workdir",
                 str(self.sandbox_dir)],
                env={**self.env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                capture_output=True, text=True, timeout=120, check=False)
            assert result.returncode == 0, result.stderr
            return
        self.kubectl("scale", "deployment/modelgate-operator", "-n", OPERATOR_NAMESPACE,
                     f"--replicas={replicas}")
        if replicas:
            self.kubectl("rollout", "status", "deployment/modelgate-operator", "-n",
                         OPERATOR_NAMESPACE, "--timeout=180s")
        else:
            self.kubectl("wait", "--for=delete", "pod", "-l", OPERATOR_SELECTOR, "-n",
                         OPERATOR_NAMESPACE, "--timeout=120s")

    # --- ModelDeployments --------------------------------------------------------------------

    def model_spec(self, version: str) -> dict[str, Any]:
        model = self.models[version]
        return {"version": version, "sha256": model.sha256,
                "uri": f"{self.model_store_url}/{version}.skops"}

    def md(self, name: str, version: str, **spec: Any) -> dict[str, Any]:
        return {"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelDeployment",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {"model": self.model_spec(version),
                         "serving": {"replicas": 2, "image": SERVING_IMAGE,
                                     "imagePullPolicy": "Never"},
                         "rollout": {"steps": [{"setWeight": 50}, {"analysis": {}}]},
                         "analysis": {"interval": self.interval, "minSamples": 50,
                                      "maxDuration": "3m",
                                      "provider": {"timeout": self.provider_timeout},
                                      "metrics": [
                                          {"name": "error-rate", "type": "errorRate",
                                           "tolerance": 0.03},
                                          {"name": "prediction-distribution",
                                           "type": "predictionDistribution",
                                           "tolerance": 0.2}]},
                         **spec}}

    def apply_md(self, name: str, version: str, **spec: Any) -> None:
        self.kubectl("apply", "-f", "-", stdin=json.dumps(self.md(name, version, **spec)))

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        text = self.kubectl("get", kind, name, "-n", self.namespace, "-o", "json",
                            "--ignore-not-found")
        return json.loads(text) if text.strip() else None

    def status_of(self, name: str) -> dict[str, Any]:
        body = self.get("md", name) or {}
        return dict(body.get("status") or {})

    def wait_for(self, name: str, check: Callable[[dict[str, Any]], bool],
                 timeout: float = 300) -> dict[str, Any]:
        """Poll the ModelDeployment's status until check holds."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status_of(name)
            if check(status):
                return status
            time.sleep(1)
        raise AssertionError(f"{name}: timed out: {status.get('phase')}: "
                             f"{status.get('message')}")

    def wait_deleted(self, *what: str, timeout: str = "180s") -> None:
        """`kubectl wait --for=delete`: foreground deletion keeps objects listed (with a
        deletionTimestamp, pods Terminating) until their dependents are gone."""
        self.kubectl("wait", "--for=delete", *what, "-n", self.namespace, f"--timeout={timeout}",
                     timeout=600)
