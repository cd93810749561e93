"""What goes wrong on a real cluster (issue 22, parts 2-5), decided without one: a canary whose
pods never become ready fails its step at the progress deadline with the pods' cause; a
refused child write is reported while the tick's other writes (a rollback's, an abort's) go
on; a status write that meets a concurrent change decides again and posts no Event twice."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import pytest
from support.cluster import FakeCluster
from unit.test_machine import NOW, STABLE, V1, arm, canary_state, observed, spec

from modelgate import api, status
from modelgate.core import machine
from modelgate.core.state import ControlRequests, Outcome, RolloutState
from modelgate.core.types import Phase
from modelgate.deployments import pod_problem
from modelgate.k8s import ApiException
from modelgate.reconcile import reconcile
from modelgate.settings import OperatorSettings

# --- why a pod is not ready, from its status ---------------------------------------------------


def pod(status: dict[str, Any], name: str = "iris-canary-1") -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def test_an_image_that_cannot_be_pulled_is_named_with_the_kubelets_message() -> None:
    found = pod_problem(pod({"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "server", "state": {"waiting": {
            "reason": "ImagePullBackOff", "message": 'Back-off pulling image "r.invalid/x"'}}}]}))
    assert found == ('pod iris-canary-1, container server: ImagePullBackOff: Back-off pulling '
                     'image "r.invalid/x"')


def test_a_crash_loop_names_the_exit_code_and_the_last_log_line() -> None:
    found = pod_problem(pod({"phase": "Running", "conditions": [
        {"type": "Ready", "status": "False"}], "containerStatuses": [{
            "name": "server", "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 4s"}},
            "lastState": {"terminated": {"exitCode": 3, "reason": "Error",
                                         "message": "loading\nfatal: no model\n\n"}}}]}))
    assert found == ("pod iris-canary-1, container server: CrashLoopBackOff: back-off 4s "
                     "(exit code 3; last log line: fatal: no model)")


def test_a_restarted_container_that_runs_again_still_says_how_it_last_ended() -> None:
    found = pod_problem(pod({"phase": "Running", "conditions": [
        {"type": "Ready", "status": "False"}], "containerStatuses": [{
            "name": "server", "restartCount": 2, "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}))
    assert found == ("pod iris-canary-1, container server: restarted 2 times, last OOMKilled "
                     "(exit code 137)")


def test_an_unschedulable_pod_gives_the_schedulers_reason() -> None:
    found = pod_problem(pod({"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient cpu."}]}))
    assert found == ("pod iris-canary-1 is Pending: Unschedulable: 0/1 nodes are available: "
                     "1 Insufficient cpu.")


def test_a_ready_pod_has_no_problem_and_a_slow_one_is_said_to_fail_its_probe() -> None:
    assert pod_problem(pod({"conditions": [{"type": "Ready", "status": "True"}]})) is None
    assert "readiness probe" in str(pod_problem(pod({"phase": "Running", "conditions": [
        {"type": "Ready", "status": "False"}], "containerStatuses": [
            {"name": "server", "state": {"running": {}}}]})))


# --- progress deadlines ------------------------------------------------------------------------

def waiting_canary(waited: float, deadline: str = "1m", **extra: Any) -> Any:
    """A tick at the first setWeight step, the canary's pod never ready, `waited` seconds in."""
    the_spec = spec(rollout={"steps": [{"setWeight": 25}, {"analysis": {}}],
                             "progressDeadline": deadline, **extra})
    state = RolloutState(stable=STABLE, canary=canary_state(
        step_started_at=NOW - waited, desired_weight=25))
    seen = observed(stable=arm(V1, 3), canary=arm(the_spec.model, 1, ready=0),
                    pod_problems={"canary": "pod iris-canary-1, container server: "
                                            "ImagePullBackOff"})
    return machine.decide(the_spec, state, seen, NOW)


def test_the_progress_deadline_defaults_to_ten_minutes_and_is_read_from_the_spec() -> None:
    assert spec().rollout.progress_deadline_seconds == 600
    assert spec(rollout={"progressDeadline": "90s"}).rollout.progress_deadline_seconds == 90
    with pytest.raises(api.SpecError, match=r"spec.rollout.progressDeadline"):
        spec(rollout={"progressDeadline": "0s"})


def test_a_canary_not_ready_within_its_deadline_waits_and_then_is_rolled_back_with_the_cause(
        ) -> None:
    before = waiting_canary(59)
    assert before.state.phase is Phase.PROGRESSING
    assert before.canary is not None

    after = waiting_canary(61)
    assert after.state.phase is Phase.ROLLED_BACK
    assert after.canary is None
    assert after.stable is not None
    assert after.stable.model == V1
    assert "pods were not ready within the progress deadline (1m): pod iris-canary-1, " \
        "container server: ImagePullBackOff" in after.state.message
    assert after.state.history[-1].outcome is Outcome.ROLLED_BACK
    assert "ImagePullBackOff" in after.state.rejected[-1].reason
    (event,) = [e for e in after.events if e.reason == "RolledBack"]
    assert event.warning
    assert "ImagePullBackOff" in event.message


def test_with_on_failure_pause_a_missed_deadline_holds_for_a_person() -> None:
    held = waiting_canary(61, onFailure="pause")
    assert held.state.phase is Phase.PAUSED
    assert held.canary is not None
    assert "ImagePullBackOff" in held.state.message


def test_a_stable_rolling_update_not_done_within_the_deadline_rolls_the_promotion_back() -> None:
    the_spec = spec(rollout={"steps": [{"setWeight": 25}], "progressDeadline": "1m"})
    state = RolloutState(stable=STABLE, canary=canary_state(
        promoting=True, step_started_at=NOW - 61, desired_weight=25))
    stuck = arm(the_spec.model, 4, ready=3)
    seen = observed(stable=stuck, canary=arm(the_spec.model, 1),
                    pod_problems={"stable": "pod iris-stable-9 is Pending: Unschedulable"})
    decision = machine.decide(the_spec, state, seen, NOW)
    assert decision.state.phase is Phase.ROLLED_BACK
    assert decision.stable is not None
    assert decision.stable.model == V1
    assert "stable's rolling update to version v2 was not done within the progress deadline " \
        "(1m): pod iris-stable-9 is Pending: Unschedulable" in decision.state.message


def test_promotion_starts_its_own_clock() -> None:
    the_spec = spec(rollout={"steps": [{"setWeight": 25}]})
    state = RolloutState(stable=STABLE, canary=canary_state(step_started_at=NOW - 3600,
                                                            desired_weight=25))
    seen = observed(stable=arm(V1, 3), canary=arm(the_spec.model, 1))
    decision = machine.decide(the_spec, state, seen, NOW)
    assert decision.state.canary is not None
    assert decision.state.canary.promoting
    assert decision.state.canary.step_started_at == NOW


# --- refused writes ----------------------------------------------------------------------------

def md(**annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": "iris", "namespace": "ml", "generation": 1, "uid": "u1",
                         "resourceVersion": "7", "annotations": dict(annotations)},
            "spec": {"model": {"version": "v2", "uri": "file:///m/v2.skops"},
                     "serving": {"replicas": 4},
                     "rollout": {"steps": [{"setWeight": 50}, {"pause": {}}]}}}


def refusal(code: int, message: str) -> ApiException:
    exc = ApiException(status=code, reason="Forbidden" if code == 403 else "Invalid")
    exc.body = json.dumps({"kind": "Status", "message": message, "code": code})
    return exc


class RefusingCluster(FakeCluster):
    """Refuses writes of the Deployments named in `refuse`, as admission would."""

    def __init__(self, *bodies: Mapping[str, Any]) -> None:
        super().__init__(*bodies)
        self.refuse: dict[str, ApiException] = {}
        self.deleted: list[str] = []

    def ensure_deployment(self, body: Mapping[str, Any],
                          existing: Mapping[str, Any] | None, *, force: bool = False) -> None:
        if body["metadata"]["name"] in self.refuse:
            raise self.refuse[body["metadata"]["name"]]
        super().ensure_deployment(body, existing, force=force)

    def delete_deployment(self, existing: Mapping[str, Any], owner_uid: str) -> None:
        self.deleted.append(existing["metadata"]["name"])
        super().delete_deployment(existing, owner_uid)

    def write_status(self, written: Mapping[str, Any]) -> None:
        self.model_deployments[("ml", "iris")]["status"] = copy.deepcopy(dict(written))


def canary_in_flight(cluster: RefusingCluster) -> None:
    """Status and Deployments of a canary at 50%, held at an indefinite pause."""
    body = cluster.model_deployments[("ml", "iris")]
    the_spec = api.parse(body)
    state = RolloutState(stable=STABLE, canary=canary_state(
        model=the_spec.model, step_index=1, desired_weight=50, weight=50))
    body["status"] = status.status_from_state(state, None, judged_at=NOW)
    for role, model in (("stable", V1), ("canary", the_spec.model)):
        from modelgate.core import manifests
        owner = manifests.Owner(name="iris", namespace="ml", uid="u1")
        cluster.deployments[("ml", f"iris-{role}")] = manifests.deployment(
            the_spec, owner, role, model, 2)


def test_a_refused_stable_patch_is_reported_and_the_abort_still_removes_the_canary() -> None:
    cluster = RefusingCluster(md(**{"modelgate.dev/abort": "t1"}))
    canary_in_flight(cluster)
    cluster.refuse["iris-stable"] = refusal(
        403, 'admission webhook "policy.example.com" denied the request: replicas are frozen')

    result = reconcile(cluster, OperatorSettings(), cluster.model_deployments[("ml", "iris")],
                       now=NOW)

    assert result.status is not None
    assert result.status["phase"] == "RolledBack"
    assert cluster.deleted == ["iris-canary"]
    (condition,) = [c for c in result.status["conditions"] if c["type"] == "WritesAccepted"]
    assert condition["status"] == "False"
    assert condition["reason"] == "WriteRefused"
    expected = ('patch Deployment ml/iris-stable was refused by the API server (403 Forbidden): '
                'admission webhook "policy.example.com" denied the request: replicas are frozen')
    assert condition["message"] == expected
    refused = [e for e in result.events if e.reason == "WriteRefused"]
    assert [e.message for e in refused] == [expected]
    assert "RolledBack" in cluster.events

    # the next tick meets the same refusal: the condition stays, no second Event
    cluster.write_status(result.status)
    cluster.events.clear()
    again = reconcile(cluster, OperatorSettings(), cluster.model_deployments[("ml", "iris")],
                      now=NOW + 1)
    assert again.status is not None
    assert "WriteRefused" not in cluster.events
    # and once the policy lets the write through, the condition clears with one Event
    cluster.write_status(again.status)
    del cluster.refuse["iris-stable"]
    cleared = reconcile(cluster, OperatorSettings(), cluster.model_deployments[("ml", "iris")],
                        now=NOW + 2)
    assert cleared.status is not None
    (condition,) = [c for c in cleared.status["conditions"] if c["type"] == "WritesAccepted"]
    assert condition["status"] == "True"
    assert cluster.events.count("WritesAccepted") == 1
    assert cluster.deployments[("ml", "iris-stable")]["spec"]["replicas"] == 4


def test_an_error_that_is_not_a_refusal_still_ends_the_tick_for_a_retry() -> None:
    cluster = RefusingCluster(md())
    canary_in_flight(cluster)
    cluster.refuse["iris-stable"] = ApiException(status=503, reason="Service Unavailable")
    with pytest.raises(ApiException):
        reconcile(cluster, OperatorSettings(), cluster.model_deployments[("ml", "iris")],
                  now=NOW)
    assert cluster.statuses == []


# --- concurrent status changes -----------------------------------------------------------------

class RacingCluster(RefusingCluster):
    """The object changes between a tick's read and its status write: `race` runs once, at the
    first status write, and that write is refused as stale (409), as the API server does."""

    def __init__(self, *bodies: Mapping[str, Any]) -> None:
        super().__init__(*bodies)
        self.race: Any = None
        self.version = 7

    def find_model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = super().find_model_deployment(namespace, name)
        if found is not None:
            found["metadata"]["resourceVersion"] = str(self.version)
        return found

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any], *,
                     resource_version: str | None = None) -> None:
        if self.race is not None:
            race, self.race = self.race, None
            race(self.model_deployments[(namespace, name)])
            self.version += 1
        if resource_version != str(self.version):
            raise ApiException(status=409, reason="Conflict")
        self.statuses.append(copy.deepcopy(dict(status)))
        self.write_status(status)
        self.version += 1


def test_a_pause_annotation_landing_mid_tick_is_never_lost_and_no_event_is_posted_twice(
        ) -> None:
    cluster = RacingCluster(md())
    canary_in_flight(cluster)
    body = cluster.model_deployments[("ml", "iris")]
    body["spec"]["rollout"]["steps"] = [{"setWeight": 50}, {"pause": {"duration": "1h"}}]

    def person_pauses(stored: dict[str, Any]) -> None:
        stored["metadata"]["annotations"]["modelgate.dev/paused"] = "true"

    cluster.race = person_pauses
    result = reconcile(cluster, OperatorSettings(), body, now=NOW)

    assert result.status is not None
    assert result.status["phase"] == "Paused"
    assert result.status["canary"]["paused"] is True
    assert len(cluster.statuses) == 1  # the stale decision was never written
    assert cluster.events == ["Paused"]  # posted once, from the decision that was written
    # the next tick sees it already recorded: no second Paused
    reconcile(cluster, OperatorSettings(), body, now=NOW + 1)
    assert cluster.events == ["Paused"]


def test_another_status_write_landing_mid_tick_is_decided_from_not_overwritten() -> None:
    """Another writer (an older operator replica, a person's `kubectl patch --subresource
    status`) records an abort's token mid-tick: the tick decides again from it, so that the
    token is kept (not overwritten) and the abort is not acted on twice."""
    cluster = RacingCluster(md(**{"modelgate.dev/abort": "t1"}))
    canary_in_flight(cluster)
    body = cluster.model_deployments[("ml", "iris")]

    def other_writer_aborts(stored: dict[str, Any]) -> None:
        state = status.state_from_status(stored["status"])
        aborted = machine.decide(api.parse(stored), state, observed(
            stable=arm(V1, 2), canary=arm(api.parse(stored).model, 2),
            controls=ControlRequests(abort="t1")), NOW)
        stored["status"] = status.status_from_state(aborted.state, None, judged_at=NOW)

    cluster.race = other_writer_aborts
    result = reconcile(cluster, OperatorSettings(), body, now=NOW + 1)

    assert result.status is not None
    assert result.status["phase"] == "RolledBack"
    history = result.status["history"]
    assert [entry["outcome"] for entry in history] == ["Aborted"]  # once, not twice
    assert "RolledBack" not in cluster.events  # the other writer's decision, not ours


# --- the sandbox refuses what a cluster refuses --------------------------------------------------

def test_the_sandbox_admission_refuses_a_service_name_and_what_its_configmap_declares() -> None:
    from sandbox.admission import core_name_errors, refusals

    assert core_name_errors("Service", "iris") == []
    assert core_name_errors("Deployment", "iris.v2") == []  # a DNS subdomain will do there
    (error,) = core_name_errors("Service", "iris.v2")
    assert str(error).startswith('metadata.name: Invalid value: "iris.v2": a DNS-1035 label')

    rules = refusals({"data": {
        "webhook": "{kind: Deployment, name: iris-stable, verbs: [patch], message: frozen}",
        "policy": "{kind: Service, verbs: [create], code: 422, message: no services}",
        "broken": "[not a rule"}})
    webhook, policy = rules
    assert webhook.matches("Deployment", "patch", "iris-stable")
    assert not webhook.matches("Deployment", "delete", "iris-stable")
    assert not webhook.matches("Deployment", "patch", "iris-canary")
    assert webhook.status("deployments.apps", "iris-stable")["message"] == (
        'admission webhook "refusals.sandbox.modelgate.dev" denied the request: frozen')
    assert policy.matches("Service", "create", "anything")
    answer = policy.status("services", "iris")
    assert answer["code"] == 422
    assert answer["reason"] == "Invalid"
    assert answer["message"].startswith('services "iris" is forbidden: ValidatingAdmissionPolicy')
