"""One table, every phase: the status the operator's own decide() writes, read by every tool
that judges a ModelDeployment, so they can never disagree (docs/gitops.md, "How each tool
reads a ModelDeployment"):

- the conditions themselves (Ready, Reconciling, Stalled: status, reason, observedGeneration,
  lastTransitionTime), valid against the CRD's status schema;
- the printer columns kubectl shows (Phase, Ready);
- kstatus (Flux without expressions, `kubectl wait`, cli-utils), by its documented rules;
- Argo CD: manifests/argocd/health.lua under real lua5.1;
- Flux: the healthCheckExprs of manifests/flux/modelgate.yaml, under cel-python.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import celpy
import pytest
from sandbox.kubeapi import lookup
from support import crd
from support.health import (
    CURRENT,
    FAILED,
    IN_PROGRESS,
    argocd_health,
    flux_expressions,
    flux_health,
    kstatus,
)

from modelgate import api
from modelgate.core import machine
from modelgate.core.manifests import model_hash, serving_hash
from modelgate.core.state import (
    ArmObserved,
    CanaryState,
    ControlRequests,
    Decision,
    Observed,
    Rejection,
    RolloutState,
    StableState,
)
from modelgate.core.types import ServingSpec
from modelgate.status import status_from_state

NOW = 1_000_000.0
GENERATION = 3
STEPS = [{"setWeight": 25}, {"pause": {"duration": "10s"}}, {"analysis": {}}]


def body(version: str = "v2", steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml", "generation": GENERATION},
            "spec": {"model": {"version": version, "uri": f"file:///m/{version}.skops"},
                     "serving": {"replicas": 4},
                     "rollout": {"steps": steps or STEPS},
                     "analysis": {"interval": "10s", "minSamples": 10}}}


SPEC = api.parse(body())
V1 = api.parse(body("v1")).model
V2 = SPEC.model
STABLE_V1 = StableState(model=V1, since=NOW - 100)


def arm(model: Any, replicas: int, ready: int | None = None) -> ArmObserved:
    ready = replicas if ready is None else ready
    return ArmObserved(model_hash=model_hash(model), replicas=replicas, ready=ready,
                       updated=replicas, current=replicas, settled=ready >= replicas,
                       serving_hash=serving_hash(ServingSpec()))


def observed(**fields: Any) -> Observed:
    return Observed(generation=GENERATION, spec_hash="h", **fields)


def canary(**fields: Any) -> CanaryState:
    return CanaryState(**{"model": V2, "started_at": NOW - 30, "step_started_at": NOW - 30,
                          **fields})


AT_SPLIT = {"stable": arm(V1, 3), "canary": arm(V2, 1)}


def scenario(name: str) -> tuple[dict[str, Any], Decision]:
    """The ModelDeployment's body and the tick's decision for one named situation."""
    source, spec = body(), SPEC
    if name == "pending":
        decision = machine.decide(spec, RolloutState(), observed(stable=arm(V2, 4, 1)), NOW)
    elif name == "healthy":
        decision = machine.decide(spec, RolloutState(stable=StableState(V2, NOW - 100)),
                                  observed(stable=arm(V2, 4)), NOW)
    elif name == "healthy-stable-pods-missing":
        decision = machine.decide(spec, RolloutState(stable=StableState(V2, NOW - 100)),
                                  observed(stable=arm(V2, 4, 2)), NOW)
    elif name == "canary-set-weight":
        decision = machine.decide(spec, RolloutState(stable=STABLE_V1),
                                  observed(stable=arm(V1, 4)), NOW)
    elif name == "canary-pause":
        decision = machine.decide(spec, RolloutState(stable=STABLE_V1, canary=canary(
            step_index=1, desired_weight=25, weight=25, step_started_at=NOW - 2)),
            observed(**AT_SPLIT), NOW)
    elif name == "canary-analysis":
        decision = machine.decide(spec, RolloutState(stable=STABLE_V1, canary=canary(
            step_index=2, desired_weight=25, weight=25, step_started_at=NOW - 2,
            last_analysis_at=NOW - 1)), observed(**AT_SPLIT), NOW)
    elif name == "promoting":
        decision = machine.decide(spec, RolloutState(stable=STABLE_V1, canary=canary(
            step_index=3, desired_weight=25, weight=25, promoting=True)),
            observed(stable=arm(V1, 4), canary=arm(V2, 1)), NOW)
    elif name == "paused-by-person":
        decision = machine.decide(spec, RolloutState(stable=STABLE_V1, canary=canary(
            step_index=1, desired_weight=25, weight=25)),
            observed(**AT_SPLIT, controls=ControlRequests(paused=True)), NOW)
    elif name == "awaiting-promotion":
        source = body(steps=[{"setWeight": 25}, {"pause": {}}])
        spec = api.parse(source)
        decision = machine.decide(spec, RolloutState(stable=STABLE_V1, canary=canary(
            step_index=1, desired_weight=25, weight=25)), observed(**AT_SPLIT), NOW)
    elif name == "aborted":
        decision = machine.decide(spec, RolloutState(stable=STABLE_V1, canary=canary(
            step_index=1, desired_weight=25, weight=25)),
            observed(**AT_SPLIT, controls=ControlRequests(abort="t1")), NOW)
    elif name == "rolled-back":
        rejected = Rejection(model_hash=model_hash(V2), version="v2", sha256=None,
                             reason="error-rate failed", at=NOW - 10)
        decision = machine.decide(spec, RolloutState(stable=STABLE_V1, rejected=(rejected,)),
                                  observed(stable=arm(V1, 4)), NOW)
    elif name == "invalid-spec":
        decision = machine.decide_invalid(RolloutState(stable=STABLE_V1),
                                          observed(stable=arm(V1, 4)),
                                          ["spec.rollout.steps[0].setWeight: 140 is above 100"],
                                          NOW)
    elif name == "name-conflict":
        decision = machine.decide_conflict(RolloutState(stable=STABLE_V1), observed(),
                                           ["Service iris exists and is not controlled by "
                                            "this ModelDeployment"], NOW)
    else:
        raise AssertionError(name)
    return source, decision


def as_object(source: dict[str, Any], decision: Decision) -> dict[str, Any]:
    """The object as the API server stores it after the operator's status patch."""
    def drop_nulls(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: drop_nulls(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [drop_nulls(v) for v in value]
        return value
    return {**copy.deepcopy(source), "status": drop_nulls(status_from_state(decision.state))}


@dataclass(frozen=True)
class Row:
    name: str
    phase: str
    ready: str
    reconciling: str
    stalled: str
    reason: str
    """The reason of whichever of Reconciling and Stalled is True, else of Ready."""
    kstatus: str
    argocd: str


T, F = "True", "False"
TABLE = [
    Row("pending", "Pending", F, T, F, "Deploying", IN_PROGRESS, "Progressing"),
    Row("canary-set-weight", "Progressing", F, T, F, "SetWeight", IN_PROGRESS, "Progressing"),
    Row("canary-pause", "Progressing", F, T, F, "Pause", IN_PROGRESS, "Progressing"),
    Row("canary-analysis", "Progressing", F, T, F, "Analysis", IN_PROGRESS, "Progressing"),
    Row("promoting", "Progressing", F, T, F, "Promoting", IN_PROGRESS, "Progressing"),
    Row("paused-by-person", "Paused", F, F, T, "PausedByPerson", FAILED, "Suspended"),
    Row("awaiting-promotion", "Paused", F, F, T, "AwaitingPromotion", FAILED, "Suspended"),
    Row("healthy", "Healthy", T, F, F, "Available", CURRENT, "Healthy"),
    Row("healthy-stable-pods-missing", "Healthy", F, F, F, "StableUnavailable", IN_PROGRESS,
        "Progressing"),
    Row("aborted", "RolledBack", F, F, T, "Aborted", FAILED, "Degraded"),
    Row("rolled-back", "RolledBack", F, F, T, "RolledBack", FAILED, "Degraded"),
    Row("invalid-spec", "Degraded", F, F, T, "InvalidSpec", FAILED, "Degraded"),
    Row("name-conflict", "Degraded", F, F, T, "NameConflict", FAILED, "Degraded"),
]
PHASES = {"Pending", "Progressing", "Paused", "Healthy", "RolledBack", "Degraded"}
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


def test_the_table_covers_every_phase_of_the_crd() -> None:
    status_schema = crd.schema()["properties"]["status"]["properties"]
    assert set(status_schema["phase"]["enum"]) == PHASES == {row.phase for row in TABLE}


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_every_phase_reads_the_same_in_every_tool(row: Row) -> None:
    source, decision = scenario(row.name)
    obj = as_object(source, decision)
    status = obj["status"]
    assert status["phase"] == row.phase, status["message"]
    conditions = {c["type"]: c for c in status["conditions"]}

    # the conditions, by the API conventions
    assert (conditions["Ready"]["status"], conditions["Reconciling"]["status"],
            conditions["Stalled"]["status"]) == (row.ready, row.reconciling, row.stalled)
    deciding = next((conditions[kind] for kind in ("Reconciling", "Stalled")
                     if conditions[kind]["status"] == T), conditions["Ready"])
    assert deciding["reason"] == row.reason
    for condition in status["conditions"]:
        assert _REASON.fullmatch(condition["reason"]), condition
        assert condition["observedGeneration"] == GENERATION
        assert condition["lastTransitionTime"].endswith("Z")
        assert isinstance(condition["message"], str)
    assert crd.admission().schema_errors(crd.apply_defaults(obj)) == []

    # kubectl get md: the printer columns show the phase and the Ready condition
    columns = {c["name"]: c["jsonPath"]
               for c in crd.crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert lookup(obj, columns["Phase"]) == row.phase
    assert lookup(obj, columns["Ready"]) == row.ready

    # kstatus, Argo CD (lua5.1) and Flux (CEL) agree
    assert kstatus(obj)[0] == row.kstatus
    assert flux_health(obj) == row.kstatus
    assert argocd_health(obj) == (row.argocd, status["message"])

    # a newer spec than the status reflects reads as in progress everywhere
    newer = {**obj, "metadata": {**obj["metadata"], "generation": GENERATION + 1}}
    assert kstatus(newer) == (IN_PROGRESS, "LatestGenerationNotObserved")
    assert flux_health(newer) == IN_PROGRESS
    assert argocd_health(newer)[0] == "Progressing"


def test_last_transition_time_moves_only_when_a_status_changes() -> None:
    _, start = scenario("canary-set-weight")
    state = start.state
    later = machine.decide(SPEC, state, observed(stable=arm(V1, 4)), NOW + 30).state
    before = {c.type: c for c in state.conditions}
    after = {c.type: c for c in later.conditions}
    for kind in ("Ready", "Reconciling", "Stalled"):
        assert after[kind].status == before[kind].status
        assert after[kind].last_transition == before[kind].last_transition == NOW
    aborted = machine.decide(SPEC, later, observed(
        **AT_SPLIT, controls=ControlRequests(abort="t1")), NOW + 60).state
    moved = {c.type: c for c in aborted.conditions}
    assert moved["Stalled"].status == T
    assert moved["Stalled"].last_transition == NOW + 60
    assert moved["Reconciling"].last_transition == NOW + 60
    assert moved["Ready"].last_transition == NOW  # False all along


def test_a_hold_keeps_its_reason_on_later_ticks() -> None:
    source, first = scenario("paused-by-person")
    spec = api.parse(source)
    again = machine.decide(spec, first.state, observed(
        **AT_SPLIT, controls=ControlRequests(paused=True)), NOW + 5)
    stalled = {c.type: c for c in again.state.conditions}["Stalled"]
    assert (stalled.status, stalled.reason) == (T, "PausedByPerson")
    assert stalled.last_transition == NOW
    resumed = machine.decide(spec, again.state, observed(**AT_SPLIT), NOW + 10)
    conditions = {c.type: c for c in resumed.state.conditions}
    assert conditions["Stalled"].status == F
    assert conditions["Reconciling"].status == T


def test_no_status_yet_is_progressing_and_never_healthy_or_failed() -> None:
    obj = body()
    assert argocd_health(obj)[0] == "Progressing"
    assert kstatus(obj)[0] == CURRENT  # kstatus alone cannot tell: hence the expressions
    try:
        verdict = flux_health(obj)
    except celpy.CELEvalError:
        verdict = "error (Flux keeps waiting)"
    assert verdict not in (CURRENT, FAILED)


def test_the_flux_expressions_use_only_the_three_conditions() -> None:
    expressions = flux_expressions()
    assert set(expressions) == {"inProgress", "failed", "current"}
    for key, kind in (("inProgress", "Reconciling"), ("failed", "Stalled"),
                      ("current", "Ready")):
        assert f"'{kind}'" in expressions[key]
    # a condition with another type named like ours does not count
    obj = as_object(*scenario("healthy"))
    renamed = replace_conditions(obj, {"Ready": "NotReady"})
    assert flux_health(renamed) == IN_PROGRESS


def replace_conditions(obj: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    result = copy.deepcopy(obj)
    for condition in result["status"]["conditions"]:
        condition["type"] = renames.get(condition["type"], condition["type"])
    return result


def test_a_status_from_an_older_operator_still_maps_its_phase_in_argo_cd() -> None:
    obj = as_object(*scenario("rolled-back"))
    old = copy.deepcopy(obj)
    old["status"]["conditions"] = [c for c in old["status"]["conditions"]
                                   if c["type"] not in ("Reconciling", "Stalled")]
    assert argocd_health(old)[0] == "Degraded"
