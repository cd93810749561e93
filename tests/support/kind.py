"""Helpers of the kind end-to-end tests: kubectl, ModelDeployments of the test models, polling."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

SERVING_IMAGE = "modelgate/serving:dev"


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True,
                            timeout=120, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


def model_spec(namespace: str, version: str) -> dict[str, Any]:
    model = pytest.models[version]  # type: ignore[attr-defined]
    return {"version": version, "sha256": model.sha256,
            "uri": f"http://model-store.{namespace}.svc:8000/{version}.skops"}


def apply_md(namespace: str, name: str, version: str, **spec: Any) -> None:
    body = {"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": model_spec(namespace, version),
                     "serving": {"replicas": 2, "image": SERVING_IMAGE,
                                 "imagePullPolicy": "Never"},
                     "rollout": {"steps": [{"setWeight": 50}, {"analysis": {}}]},
                     "analysis": {"interval": "5s", "minSamples": 50, "maxDuration": "3m",
                                  "metrics": [
                                      {"name": "error-rate", "type": "errorRate",
                                       "tolerance": 0.03},
                                      {"name": "prediction-distribution",
                                       "type": "predictionDistribution", "tolerance": 0.2}]},
                     **spec}}
    kubectl("apply", "-f", "-", stdin=json.dumps(body))


def status_of(namespace: str, name: str) -> dict[str, Any]:
    body = json.loads(kubectl("get", "md", name, "-n", namespace, "-o", "json"))
    return dict(body.get("status") or {})


def wait_for(namespace: str, name: str, check: Callable[[dict[str, Any]], bool],
             timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = status_of(namespace, name)
        if check(status):
            return status
        time.sleep(2)
    raise AssertionError(f"timed out: {status.get('phase')}: {status.get('message')}")


