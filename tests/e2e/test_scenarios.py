"""The main scenarios end to end, through kubectl, on kind (the GitHub workflow's kind job,
`make e2e`) and on the sandbox (`make test`): promotion, rollback, controls, a spec the API
server refuses, garbage collection, deletion held by the operator's finalizer, and an operator
killed mid-analysis. Deletions are waited for (`kubectl wait --for=delete`, polling), never
assumed: foreground deletion keeps a Deployment listed until its pods are gone."""

from __future__ import annotations

import json
import time

import pytest
from support.e2e import E2ECluster

# On the sandbox: one xdist worker for the suite, with a sandbox of its own (the same
# session fixture as tests/kubectl, on another worker), so the two run side by side.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def wait_no_pods(cluster: E2ECluster, selector: str, timeout: float = 180) -> None:
    """Poll until no pod matches (Terminating ones included)."""
    deadline = time.monotonic() + timeout
    names = ""
    while time.monotonic() < deadline:
        names = cluster.kubectl("get", "pods", "-n", cluster.namespace, "-l", selector,
                                "-o", "name")
        if not names.strip():
            return
        time.sleep(1)
    raise AssertionError(f"pods {selector} still there: {names}")


def stable_version(status: dict[str, object]) -> object:
    return (status.get("stable") or {}).get("version")  # type: ignore[attr-defined]


def test_a_good_canary_is_promoted(e2e_cluster: E2ECluster) -> None:
    cluster = e2e_cluster
    cluster.apply_md("good", "v1")
    cluster.wait_for("good", lambda s: s.get("phase") == "Healthy")
    cluster.traffic("good")
    cluster.apply_md("good", "v2")
    status = cluster.wait_for("good", lambda s: stable_version(s) == "v2"
                              and s.get("phase") == "Healthy")
    assert status["history"][-1]["outcome"] == "Promoted"
    cluster.wait_deleted("deployment/good-canary")
    wait_no_pods(cluster, "app.kubernetes.io/instance=good,modelgate.dev/role=canary")


def test_shifted_predictions_are_rolled_back(e2e_cluster: E2ECluster) -> None:
    cluster = e2e_cluster
    cluster.apply_md("shift", "v1")
    cluster.wait_for("shift", lambda s: s.get("phase") == "Healthy")
    cluster.traffic("shift")
    cluster.apply_md("shift", "v3-shifted")
    status = cluster.wait_for("shift", lambda s: s.get("phase") == "RolledBack")
    verdicts = {m["name"]: m["verdict"] for m in status["analysis"]["metrics"]}
    assert verdicts["prediction-distribution"] == "fail"
    assert status["stable"]["version"] == "v1"
    cluster.wait_deleted("deployment/shift-canary")


def test_controls_and_a_spec_the_api_server_refuses(e2e_cluster: E2ECluster) -> None:
    cluster = e2e_cluster
    ns = cluster.namespace
    steps = {"steps": [{"setWeight": 50}, {"pause": {}}]}
    cluster.apply_md("ctl", "v1", rollout=steps)
    cluster.wait_for("ctl", lambda s: s.get("phase") == "Healthy")
    cluster.apply_md("ctl", "v2", rollout=steps)
    cluster.wait_for("ctl", lambda s: s.get("phase") == "Paused")
    cluster.kubectl("annotate", "md", "ctl", "-n", ns, "modelgate.dev/abort=e2e", "--overwrite")
    cluster.wait_for("ctl", lambda s: s.get("phase") == "RolledBack")
    cluster.kubectl("annotate", "md", "ctl", "-n", ns, "modelgate.dev/retry=e2e", "--overwrite")
    cluster.wait_for("ctl", lambda s: s.get("phase") == "Paused")
    cluster.kubectl("annotate", "md", "ctl", "-n", ns, "modelgate.dev/promote=e2e",
                    "--overwrite")
    cluster.wait_for("ctl", lambda s: stable_version(s) == "v2" and s.get("phase") == "Healthy")
    before = cluster.get("md", "ctl")
    assert before is not None

    # a provider timeout not below the interval: the operator could not run it, so the CRD
    # refuses it at the API server and nothing changes
    patch = {"spec": {"analysis": {"provider": {"timeout": "10s"}}}}
    refused = cluster.run("patch", "md", "ctl", "-n", ns, "--type=merge", "-p",
                          json.dumps(patch))

    assert refused.returncode != 0
    assert "spec.analysis.provider.timeout" in refused.stderr, refused.stderr
    assert "must be shorter than interval" in refused.stderr, refused.stderr
    after = cluster.get("md", "ctl")
    assert after is not None
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert stable_version(after["status"]) == "v2"


def test_deleting_a_model_deployment_garbage_collects_its_children(
        e2e_cluster: E2ECluster) -> None:
    cluster = e2e_cluster
    cluster.apply_md("gc", "v1")
    cluster.wait_for("gc", lambda s: s.get("phase") == "Healthy")
    cluster.kubectl("delete", "md", "gc", "-n", cluster.namespace, "--wait=false")
    cluster.wait_deleted("md/gc", "deployment/gc-stable", "service/gc")
    wait_no_pods(cluster, "app.kubernetes.io/instance=gc")


def test_a_deletion_waits_for_the_operator_to_release_its_finalizer(
        e2e_cluster: E2ECluster) -> None:
    cluster = e2e_cluster
    cluster.apply_md("fin", "v1")
    cluster.wait_for("fin", lambda s: s.get("phase") == "Healthy")
    cluster.scale_operator(0)
    try:
        cluster.kubectl("delete", "md", "fin", "-n", cluster.namespace, "--wait=false")
        held = cluster.get("md", "fin")
        assert held is not None, "deleted although the operator's finalizer was on it"
        assert held["metadata"].get("deletionTimestamp")
        assert held["metadata"].get("finalizers")
        # still there a while later: nothing but the operator removes its finalizer
        waited = cluster.run("wait", "--for=delete", "md/fin", "-n", cluster.namespace,
                             "--timeout=5s")
        assert waited.returncode != 0, waited.stdout
        assert cluster.get("deployment", "fin-stable") is not None
    finally:
        cluster.scale_operator(1)
    cluster.wait_deleted("md/fin", "deployment/fin-stable")
    wait_no_pods(cluster, "app.kubernetes.io/instance=fin")


def test_the_operator_killed_mid_analysis_resumes_without_double_promotion(
        e2e_cluster: E2ECluster) -> None:
    cluster = e2e_cluster
    cluster.apply_md("crash", "v1")
    cluster.wait_for("crash", lambda s: s.get("phase") == "Healthy")
    cluster.traffic("crash")
    cluster.apply_md("crash", "v2")
    before = cluster.wait_for("crash", lambda s: (s.get("canary") or {}).get(
        "lastAnalysisAt") is not None)
    cluster.kill_operator()
    status = cluster.wait_for("crash", lambda s: stable_version(s) == "v2"
                              and s.get("phase") == "Healthy")
    assert [h["outcome"] for h in status["history"] if h["version"] == "v2"] == ["Promoted"]
    if before.get("canary"):
        assert status["history"][-1]["at"] >= before["canary"]["startedAt"]
    wait_no_pods(cluster, "app.kubernetes.io/instance=crash,modelgate.dev/role=canary")
    pods = json.loads(cluster.kubectl("get", "pods", "-n", cluster.namespace, "-l",
                                      "app.kubernetes.io/instance=crash", "-o", "json"))["items"]
    assert {p["metadata"]["labels"]["modelgate.dev/role"] for p in pods} == {"stable"}
