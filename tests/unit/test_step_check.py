"""machine.step_check as a table: whether the current step is done, from status, the cluster
and this tick's analysis alone (it writes nothing and emits nothing)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from modelgate.core.analysis import AnalysisDecision, AnalysisRecord
from modelgate.core.machine import StepCheck, step_check
from modelgate.core.state import ArmObserved, CanaryState, Observed
from modelgate.core.types import AnalysisGate, ModelSource, Pause, SetWeight, Step

NOW = 1_000_000.0
CANARY = CanaryState(model=ModelSource(version="v2", uri="file:///m/v2.skops"),
                     started_at=NOW - 60, step_started_at=NOW - 5, last_analysis_at=NOW)


def arm(replicas: int, ready: int | None = None, current: int | None = None) -> ArmObserved:
    ready = replicas if ready is None else ready
    current = replicas if current is None else current
    return ArmObserved(model_hash="h", replicas=replicas, ready=ready, updated=replicas,
                       current=current, settled=ready >= replicas and current == replicas)


def seen(stable: ArmObserved | None, canary: ArmObserved | None) -> Observed:
    return Observed(generation=1, spec_hash="s", stable=stable, canary=canary)


def record(decision: AnalysisDecision) -> AnalysisRecord:
    return AnalysisRecord(decision, "every metric is confidently within tolerance", 60.0, ())


@dataclass(frozen=True)
class Case:
    name: str
    step: Step
    observed: Observed
    expected: StepCheck
    canary: CanaryState = CANARY
    record: AnalysisRecord | None = None


WAIT_1_3 = "waiting for 1 canary and 3 stable pods to be ready"
CASES = [
    Case("weight-reached", SetWeight(25), seen(arm(3), arm(1)), StepCheck(True, WAIT_1_3)),
    Case("canary-not-ready", SetWeight(25), seen(arm(3), arm(1, ready=0)),
         StepCheck(False, WAIT_1_3)),
    Case("no-canary-deployment-yet", SetWeight(25), seen(arm(4), None),
         StepCheck(False, WAIT_1_3)),
    Case("old-stable-pods-linger", SetWeight(25), seen(arm(3, current=4), arm(1)),
         StepCheck(False, WAIT_1_3)),
    Case("weight-zero-needs-no-canary", SetWeight(0), seen(arm(4), None),
         StepCheck(True, "waiting for 0 canary and 4 stable pods to be ready")),
    Case("all-canary-needs-no-stable", SetWeight(100), seen(None, arm(4)),
         StepCheck(True, "waiting for 4 canary and 0 stable pods to be ready")),
    Case("pause-running", Pause(10.0), seen(None, None), StepCheck(False, "pausing, 5s left")),
    Case("pause-over", Pause(5.0), seen(None, None), StepCheck(True, "pausing, 0s left")),
    Case("pause-until-promoted", Pause(None), seen(None, None),
         StepCheck(False, "paused until a person promotes (`modelgate promote iris`)")),
    Case("analysis-passed-this-step", AnalysisGate(), seen(None, None), StepCheck(True, ""),
         record=record(AnalysisDecision.PROMOTE)),
    Case("analysis-continues", AnalysisGate(), seen(None, None),
         StepCheck(False, "waiting for the analysis to pass"),
         record=record(AnalysisDecision.CONTINUE)),
    Case("no-analysis-this-tick", AnalysisGate(), seen(None, None),
         StepCheck(False, "waiting for the analysis to pass")),
    Case("analysis-passed-before-the-step-began", AnalysisGate(), seen(None, None),
         StepCheck(False, "waiting for the analysis to pass"),
         canary=CanaryState(model=CANARY.model, started_at=NOW - 60, step_started_at=NOW - 5,
                            last_analysis_at=NOW - 10),
         record=record(AnalysisDecision.PROMOTE)),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_step_check(case: Case) -> None:
    assert step_check(case.step, case.canary, case.observed, case.record, 4, NOW,
                      "iris") == case.expected

