"""The sandbox scenarios on a real cluster: real scheduling, readiness, strategic merge,
garbage collection, status-subresource isolation and RBAC. Skipped without a cluster."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from support.kind import apply_md, kubectl, model_spec, status_of, wait_for

pytestmark = pytest.mark.e2e


def test_a_good_canary_is_promoted(namespace: str, traffic: Callable[[str], None]) -> None:
    apply_md(namespace, "good", "v1")
    wait_for(namespace, "good", lambda s: s.get("phase") == "Healthy")
    traffic("good")
    apply_md(namespace, "good", "v2")
    status = wait_for(namespace, "good", lambda s: (s.get("stable") or {}).get("version")
                      == "v2" and s.get("phase") == "Healthy")
    assert status["history"][-1]["outcome"] == "Promoted"
    assert "good-canary" not in kubectl("get", "deployments", "-n", namespace)


def test_shifted_predictions_are_rolled_back(namespace: str,
                                             traffic: Callable[[str], None]) -> None:
    apply_md(namespace, "shift", "v1")
    wait_for(namespace, "shift", lambda s: s.get("phase") == "Healthy")
    traffic("shift")
    apply_md(namespace, "shift", "v3-shifted")
    status = wait_for(namespace, "shift", lambda s: s.get("phase") == "RolledBack")
    verdicts = {m["name"]: m["verdict"] for m in status["analysis"]["metrics"]}
    assert verdicts["prediction-distribution"] == "fail"
    assert status["stable"]["version"] == "v1"


def test_controls_through_the_cli_and_an_invalid_spec(namespace: str) -> None:
    apply_md(namespace, "ctl", "v1", rollout={"steps": [{"setWeight": 50}, {"pause": {}}]})
    wait_for(namespace, "ctl", lambda s: s.get("phase") == "Healthy")
    apply_md(namespace, "ctl", "v2", rollout={"steps": [{"setWeight": 50}, {"pause": {}}]})
    wait_for(namespace, "ctl", lambda s: s.get("phase") == "Paused")
    kubectl("annotate", "md", "ctl", "-n", namespace, "modelgate.dev/abort=e2e", "--overwrite")
    wait_for(namespace, "ctl", lambda s: s.get("phase") == "RolledBack")
    kubectl("annotate", "md", "ctl", "-n", namespace, "modelgate.dev/retry=e2e", "--overwrite")
    wait_for(namespace, "ctl", lambda s: s.get("phase") == "Paused")
    kubectl("annotate", "md", "ctl", "-n", namespace, "modelgate.dev/promote=e2e",
            "--overwrite")
    wait_for(namespace, "ctl", lambda s: (s.get("stable") or {}).get("version") == "v2")
    # accepted by the schema, refused by the operator: a provider timeout >= the interval
    patch = {"spec": {"analysis": {"provider": {"timeout": "10s"}},
                      "model": model_spec(namespace, "v1")}}
    kubectl("patch", "md", "ctl", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    status = wait_for(namespace, "ctl", lambda s: s.get("phase") == "Degraded")
    assert "provider.timeout" in status["message"]
    assert status_of(namespace, "ctl")["stable"]["version"] == "v2"


def test_deleting_a_model_deployment_garbage_collects_its_children(namespace: str) -> None:
    apply_md(namespace, "gc", "v1")
    wait_for(namespace, "gc", lambda s: s.get("phase") == "Healthy")
    kubectl("delete", "md", "gc", "-n", namespace, "--wait=true", "--timeout=120s")
    kubectl("wait", "--for=delete", "deployment/gc-stable", "-n", namespace, "--timeout=120s",
            check=False)
    assert "gc-stable" not in kubectl("get", "deployments", "-n", namespace)


def test_the_operator_pod_killed_mid_analysis_resumes_without_double_promotion(
        namespace: str, traffic: Callable[[str], None]) -> None:
    apply_md(namespace, "crash", "v1")
    wait_for(namespace, "crash", lambda s: s.get("phase") == "Healthy")
    traffic("crash")
    apply_md(namespace, "crash", "v2")
    before = wait_for(namespace, "crash", lambda s: (s.get("canary") or {}).get(
        "lastAnalysisAt") is not None)
    kubectl("delete", "pod", "-n", "modelgate-system", "-l",
            "app.kubernetes.io/name=modelgate-operator", "--grace-period=0", "--force")
    status = wait_for(namespace, "crash", lambda s: (s.get("stable") or {}).get("version")
                      == "v2" and s.get("phase") == "Healthy")
    assert [h["outcome"] for h in status["history"] if h["version"] == "v2"] == ["Promoted"]
    if before.get("canary"):
        assert status["history"][-1]["at"] >= before["canary"]["startedAt"]
    pods = json.loads(kubectl("get", "pods", "-n", namespace, "-l",
                              "app.kubernetes.io/instance=crash", "-o", "json"))["items"]
    assert {p["metadata"]["labels"]["modelgate.dev/role"] for p in pods} == {"stable"}
