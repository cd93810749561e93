"""What people and crashes do to a rollout: controls through annotations and the CLI, an
invalid spec, and the operator killed mid-analysis."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
import requests
from sandbox import Sandbox
from support.rollouts import deploy, eventually, healthy, phase, serving_pods

pytestmark = pytest.mark.sandbox

MANUAL = {"steps": [{"setWeight": 50}, {"pause": {}}]}
"""A canary that waits at 50% for a person."""


def _held(status: dict) -> bool:
    return status.get("phase") == "Paused" and (status.get("canary") or {}).get("stepIndex") == 1


def test_promote_annotation_skips_the_remaining_steps(sandbox: Sandbox, name: str) -> None:
    deploy(sandbox, name, serving={"replicas": 2, "image": "sandbox"}, rollout=MANUAL)
    sandbox.set_model(name, "v2")
    held = sandbox.wait(name, _held, timeout=60, what="the indefinite pause")
    assert "until a person promotes" in held["message"]

    sandbox.annotate(name, {"modelgate.dev/promote": "by-the-test"})

    status = sandbox.wait(name, healthy("v2"), timeout=60)
    assert status["controls"]["promote"] == "by-the-test"
    assert "promoted by a person" in status["history"][-1]["reason"] or \
        "Promoting" in sandbox.event_reasons(name)
    assert sandbox.get(name)["spec"]["model"]["version"] == "v2"  # spec untouched


def test_abort_retry_and_promote_through_the_cli(sandbox: Sandbox, name: str) -> None:
    deploy(sandbox, name, serving={"replicas": 2, "image": "sandbox"}, rollout=MANUAL)
    sandbox.set_model(name, "v2")
    sandbox.wait(name, _held, timeout=60, what="the indefinite pause")

    aborted = sandbox.cli("abort", name)
    assert aborted.returncode == 0, aborted.stderr
    assert "RolledBack" in aborted.stdout
    status = sandbox.status(name)
    assert status["phase"] == "RolledBack"
    assert status["history"][-1]["outcome"] == "Aborted"
    sandbox.wait_ticks(3)
    assert sandbox.status(name)["phase"] == "RolledBack"  # not retried on its own

    retried = sandbox.cli("retry", name)
    assert retried.returncode == 0, retried.stderr
    sandbox.wait(name, _held, timeout=60, what="the retried canary at its pause")
    eventually(lambda: sandbox.event_reasons(name).count("RolloutStarted") >= 2,
               what="the retry's RolloutStarted Event")
    assert sandbox.event_reasons(name).count("RolloutStarted") == 2

    promoted = sandbox.cli("promote", name)
    assert promoted.returncode == 0, promoted.stderr
    sandbox.wait(name, healthy("v2"), timeout=60)
    shown = sandbox.cli("status", name)
    assert shown.returncode == 0, shown.stderr
    assert "Healthy; stable v2" in shown.stdout
    assert "v2 Promoted" in shown.stdout
    assert "v2 Aborted" in shown.stdout


def test_pause_holds_the_steps_and_resume_continues(sandbox: Sandbox, name: str) -> None:
    steps = {"steps": [{"setWeight": 50}, {"pause": {"duration": "3s"}}, {"setWeight": 50},
                       {"pause": {"duration": "1s"}}]}
    deploy(sandbox, name, serving={"replicas": 2, "image": "sandbox"}, rollout=steps)
    sandbox.set_model(name, "v2")
    sandbox.wait(name, lambda s: (s.get("canary") or {}).get("stepIndex") == 1, timeout=60,
                 what="the timed pause")

    sandbox.annotate(name, {"modelgate.dev/paused": "true"})
    paused = sandbox.wait(name, phase("Paused"), timeout=10)
    # past the end of the step's own 3 s pause, and ticks after it that could have moved on
    pause_ends = datetime.fromisoformat(paused["canary"]["stepStartedAt"]).timestamp() + 3
    eventually(lambda: time.time() > pause_ends, timeout=10, what="the step's pause over")
    sandbox.wait_ticks(3)
    still = sandbox.status(name)
    assert still["phase"] == "Paused"
    assert still["canary"]["stepIndex"] == paused["canary"]["stepIndex"] == 1
    assert "paused by a person" in still["message"]

    resumed = sandbox.cli("resume", name)
    assert resumed.returncode == 0, resumed.stderr
    sandbox.wait(name, healthy("v2"), timeout=60)
    reasons = sandbox.wait_events(name, "Paused", "Resumed", "Promoted")
    assert reasons.index("Paused") < reasons.index("Resumed") < reasons.index("Promoted")


def test_an_invalid_spec_is_degraded_while_the_stable_model_keeps_serving(
        sandbox: Sandbox, name: str) -> None:
    deploy(sandbox, name, serving={"replicas": 2, "image": "sandbox"})
    stable_before = sandbox.deployments()[f"{name}-stable"]
    body = sandbox.get(name)
    analysis = {**body["spec"]["analysis"], "provider": {"timeout": "5s"}}  # >= interval 2s
    # the CRD refuses this spec at apply (tests/unit/test_spec_parity.py); a cluster whose CRD
    # predates that rule stores it, and the operator must refuse it on its own
    with sandbox.without_crd_validation():
        sandbox.apply({**body, "spec": {**body["spec"], "analysis": analysis,
                                        "model": sandbox.models["v2"].model_spec()}})

    status = sandbox.wait(name, phase("Degraded"), timeout=30)
    assert "spec.analysis.provider.timeout" in status["message"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["SpecValid"]["status"] == "False"
    assert conditions["SpecValid"]["reason"] == "InvalidSpec"
    assert "InvalidSpec" in sandbox.wait_events(name, "InvalidSpec")
    served = sandbox.traffic[name].counts().get("v1", 0)
    eventually(lambda: sandbox.traffic[name].counts().get("v1", 0) > served + 20,
               what="v1 still answering")
    assert sandbox.traffic[name].counts().get("v2", 0) == 0
    stable_after = sandbox.deployments()[f"{name}-stable"]
    assert stable_after["metadata"]["generation"] == stable_before["metadata"]["generation"]
    assert f"{name}-canary" not in sandbox.deployments()

    sandbox.apply({**body, "spec": {**body["spec"], "analysis": {
        **analysis, "provider": {"timeout": "1s"}}}})
    sandbox.wait(name, healthy("v1"), timeout=30)
    assert "SpecValid" in sandbox.wait_events(name, "SpecValid")


def test_the_operator_killed_mid_analysis_resumes_from_its_step_without_double_promotion(
        sandbox: Sandbox, name: str) -> None:
    rollout = {"steps": [{"setWeight": 50}, {"analysis": {}}]}
    deploy(sandbox, name, serving={"replicas": 2, "image": "sandbox"}, rollout=rollout)
    # an analysis that cannot decide on its own (it needs far more samples than arrive), so
    # the kill lands mid-analysis however fast or slow the machine is; a person promotes
    body = sandbox.get(name)
    analysis = {**body["spec"]["analysis"], "minSamples": 1_000_000, "maxDuration": "30m"}
    sandbox.apply({**body, "spec": {**body["spec"], "analysis": analysis,
                                    "model": sandbox.models["v2"].model_spec()}})

    def judging(status: dict) -> bool:
        metrics = (status.get("analysis") or {}).get("metrics") or [{}]
        return (status.get("canary") or {}).get("stepIndex") == 1 and \
            (status.get("analysis") or {}).get("decision") == "continue" and \
            metrics[0].get("canary", {}).get("samples", 0) > 0

    before = sandbox.wait(name, judging, what="the analysis gate, judging")
    samples_before = before["analysis"]["metrics"][0]["canary"]["samples"]

    sandbox.kill_operator()
    sandbox.start_operator()

    def judged_again(status: dict) -> bool:
        return (status.get("analysis") or {}).get("time", "") > before["analysis"]["time"]

    again = sandbox.wait(name, judged_again, what="an analysis after the restart")
    assert again["canary"]["stepIndex"] == 1  # resumed at its step, not from the start
    assert again["canary"]["startedAt"] == before["canary"]["startedAt"]
    assert again["analysis"]["metrics"][0]["canary"]["samples"] >= samples_before
    assert again["analysis"]["decision"] == "continue"

    sandbox.annotate(name, {"modelgate.dev/promote": "after-the-restart"})
    status = sandbox.wait(name, healthy("v2"), timeout=90)
    assert [h["outcome"] for h in status["history"] if h["version"] == "v2"] == ["Promoted"]
    assert sandbox.wait_events(name, "Promoted").count("Promoted") == 1
    assert sandbox.event_reasons(name).count("RolloutStarted") == 1
    # no orphans: exactly the stable pods remain, as objects and as processes
    pods = eventually(lambda: (lambda pods: pods if len(pods) == 2 else None)(
        serving_pods(sandbox, name)), what="exactly the 2 stable pods")
    assert {p["metadata"]["labels"]["modelgate.dev/role"] for p in pods} == {"stable"}
    processes = [p for p in sandbox.kubelet.all_pods() if p.labels.get(
        "app.kubernetes.io/instance") == name]
    assert len(processes) == 2
    assert all(p.process.poll() is None for p in processes)


def test_the_operator_answers_liveness_and_counts_rollouts_in_its_metrics(
        sandbox: Sandbox, name: str) -> None:
    deploy(sandbox, name, serving={"replicas": 2, "image": "sandbox"}, rollout=MANUAL, rate=0)
    sandbox.set_model(name, "v2")
    sandbox.wait(name, _held, timeout=60, what="the indefinite pause")

    health = requests.get(f"http://127.0.0.1:{sandbox.health_port}/healthz", timeout=5)
    metrics = requests.get(f"http://127.0.0.1:{sandbox.metrics_port}/metrics", timeout=5).text

    assert health.status_code == 200
    started = [line for line in metrics.splitlines() if line.startswith(
        "modelgate_operator_rollouts_started_total{") and f'name="{name}"' in line]
    assert started
    assert started[0].endswith(" 1.0")
    assert "modelgate_operator_tick_seconds_count" in metrics
