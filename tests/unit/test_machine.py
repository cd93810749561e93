"""decide() as a table: one tick from a given status and cluster to the next status, the
Deployments that should exist and the Events."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from modelgate import api
from modelgate.core import machine
from modelgate.core.analysis import PodScrape, Role, Sample, Window
from modelgate.core.manifests import model_hash, serving_hash
from modelgate.core.state import (
    ArmObserved,
    CanaryState,
    ControlRequests,
    Observed,
    Rejection,
    RolloutState,
    ScrapeResult,
    StableState,
)
from modelgate.core.steps import achieved_weight, replica_split
from modelgate.core.types import Phase, ServingSpec

NOW = 1_000_000.0


def spec(version: str = "v2", **extra: Any) -> Any:
    body: dict[str, Any] = {
        "metadata": {"name": "iris", "namespace": "ml"},
        "spec": {"model": {"version": version, "uri": f"file:///m/{version}.skops"},
                 "serving": {"replicas": 4},
                 "rollout": {"steps": [{"setWeight": 25}, {"pause": {"duration": "10s"}},
                                       {"analysis": {}}]},
                 "analysis": {"interval": "10s", "minSamples": 10, "provider": {"timeout": "2s"}},
                 **extra},
    }
    return api.parse(body)


def arm(model: Any, replicas: int, ready: int | None = None) -> ArmObserved:
    ready = replicas if ready is None else ready
    return ArmObserved(model_hash=model_hash(model), replicas=replicas, ready=ready,
                       updated=replicas, current=replicas, settled=ready >= replicas,
                       serving_hash=serving_hash(ServingSpec()))


def observed(**fields: Any) -> Observed:
    return Observed(generation=3, spec_hash="h", **fields)


V1 = spec("v1").model
STABLE = StableState(model=V1, since=NOW - 100)


def canary_state(**fields: Any) -> CanaryState:
    base: dict[str, Any] = {"model": spec().model, "started_at": NOW - 30,
                            "step_started_at": NOW - 30}
    base.update(fields)
    return CanaryState(**base)


def test_first_deploy_creates_the_stable_deployment_and_waits_for_it() -> None:
    decision = machine.decide(spec(), RolloutState(), observed(), NOW)
    assert decision.state.phase is Phase.PENDING
    assert decision.stable is not None
    assert decision.stable.model.version == "v2"
    assert decision.stable.replicas == 4
    assert decision.canary is None
    assert "0/4 pods ready" in decision.state.message


def test_a_ready_first_deployment_is_healthy_without_a_canary() -> None:
    decision = machine.decide(spec(), RolloutState(), observed(stable=arm(spec().model, 4)), NOW)
    assert decision.state.phase is Phase.HEALTHY
    assert decision.state.stable is not None
    assert decision.state.stable.model.version == "v2"
    assert [e.reason for e in decision.events] == ["Deployed"]


def test_a_declared_baseline_is_deployed_first_and_the_model_canaried_against_it() -> None:
    with_baseline = spec(baseline={"version": "v1", "uri": "file:///m/v1.skops"})
    first = machine.decide(with_baseline, RolloutState(), observed(), NOW)
    assert first.stable is not None
    assert first.stable.model.version == "v1"
    second = machine.decide(with_baseline, first.state, observed(stable=arm(V1, 4)), NOW + 1)
    assert second.state.canary is not None
    assert second.state.canary.model.version == "v2"
    assert [e.reason for e in second.events] == ["Deployed", "RolloutStarted"]


def test_a_new_model_starts_a_canary_beside_stable() -> None:
    state = RolloutState(phase=Phase.HEALTHY, stable=STABLE)
    decision = machine.decide(spec(), state, observed(stable=arm(V1, 4)), NOW)
    assert decision.state.canary is not None
    assert decision.canary is not None
    assert decision.canary.replicas == 1  # 25% of 4
    assert decision.stable is not None
    assert decision.stable.replicas == 3
    assert decision.state.phase is Phase.PROGRESSING


def test_set_weight_completes_only_when_both_arms_are_ready_at_the_split() -> None:
    state = RolloutState(stable=STABLE, canary=canary_state())
    waiting = machine.decide(spec(), state, observed(stable=arm(V1, 3), canary=arm(
        spec().model, 1, ready=0)), NOW)
    assert waiting.state.canary is not None
    assert waiting.state.canary.step_index == 0
    done = machine.decide(spec(), state, observed(stable=arm(V1, 3),
                                                  canary=arm(spec().model, 1)), NOW)
    assert done.state.canary is not None
    assert done.state.canary.step_index == 1
    assert done.state.canary.weight == 25


def test_a_timed_pause_ends_after_its_duration() -> None:
    state = RolloutState(stable=STABLE, canary=canary_state(step_index=1, desired_weight=25,
                                                            step_started_at=NOW - 5))
    cluster = observed(stable=arm(V1, 3), canary=arm(spec().model, 1))
    assert machine.decide(spec(), state, cluster, NOW).state.canary.step_index == 1  # type: ignore[union-attr]
    assert machine.decide(spec(), state, cluster, NOW + 6).state.canary.step_index == 2  # type: ignore[union-attr]


def _scrape(role: Role, pod: str, requests: float, errors: float, t: float,
            version: str | None = None) -> PodScrape:
    version = version or ("v1" if role is Role.STABLE else "v2")
    return PodScrape(t=t, role=role, pod=pod, samples=(
        Sample("modelgate_requests_total", (("code", "200"), ("version", version)), requests),
        Sample("modelgate_requests_total", (("code", "500"), ("version", version)), errors),
    ))


def test_a_failing_metric_rolls_back_at_once_and_remembers_the_version() -> None:
    errors_only = spec(analysis={"interval": "10s", "minSamples": 10,
                                 "provider": {"timeout": "2s"},
                                 "metrics": [{"name": "errors", "type": "errorRate"}]})
    window = Window().add(0, [_scrape(Role.STABLE, "s", 0, 0, 0),
                              _scrape(Role.CANARY, "c", 0, 0, 0)])
    state = RolloutState(stable=STABLE, canary=canary_state(
        step_index=2, desired_weight=25, weight=25, window=window, last_analysis_at=NOW - 10))
    scrape = ScrapeResult(scrapes=(_scrape(Role.STABLE, "s", 3000, 0, 30),
                                   _scrape(Role.CANARY, "c", 700, 300, 30)))
    decision = machine.decide(errors_only, state, observed(
        stable=arm(V1, 3), canary=arm(errors_only.model, 1), scrape=scrape), NOW)
    assert decision.state.phase is Phase.ROLLED_BACK
    assert decision.canary is None
    assert decision.stable is not None
    assert decision.stable.replicas == 4
    assert decision.state.rejected[-1].version == "v2"
    assert "errors failed" in decision.state.message
    assert decision.record is not None
    assert decision.record.metric("errors").verdict.value == "fail"
    again = machine.decide(errors_only, decision.state, observed(stable=arm(V1, 4)), NOW + 1)
    assert again.state.phase is Phase.ROLLED_BACK
    assert again.state.canary is None


def test_pods_of_another_version_in_an_arm_are_left_out_of_the_window() -> None:
    state = RolloutState(stable=STABLE, canary=canary_state(step_index=2, desired_weight=25,
                                                            weight=25))
    scrape = ScrapeResult(scrapes=(_scrape(Role.STABLE, "s", 10, 0, 30),
                                   _scrape(Role.CANARY, "c", 10, 0, 30),
                                   _scrape(Role.CANARY, "old", 10, 0, 30, version="v0")))
    decision = machine.decide(spec(), state, observed(
        stable=arm(V1, 3), canary=arm(spec().model, 1), scrape=scrape), NOW)
    assert decision.state.canary is not None
    assert decision.state.canary.window.last.keys() == {(Role.STABLE, "s"), (Role.CANARY, "c")}


def test_a_scrape_taken_for_a_replaced_canary_is_not_folded_into_the_new_one() -> None:
    state = RolloutState(stable=STABLE, canary=canary_state(model=spec("v0").model,
                                                            step_index=2, weight=25))
    scrape = ScrapeResult(scrapes=(_scrape(Role.STABLE, "s", 10, 0, 30),
                                   _scrape(Role.CANARY, "c", 10, 0, 30)))
    decision = machine.decide(spec(), state, observed(stable=arm(V1, 3), scrape=scrape), NOW)
    assert decision.state.canary is not None
    assert decision.state.canary.model.version == "v2"
    assert decision.state.canary.last_analysis_at is None
    assert decision.state.canary.window == Window()


def test_provider_errors_hold_and_never_roll_back() -> None:
    state = RolloutState(stable=STABLE, canary=canary_state(step_index=2, desired_weight=25,
                                                            weight=25))
    decision = machine.decide(spec(), state, observed(
        stable=arm(V1, 3), canary=arm(spec().model, 1),
        scrape=ScrapeResult(error="connection refused")), NOW)
    assert decision.state.phase is Phase.PROGRESSING
    assert decision.state.canary is not None
    assert decision.state.canary.provider_errors == 1


def test_a_retry_request_lets_a_rejected_model_run_again() -> None:
    rejected = Rejection(model_hash=model_hash(spec().model), version="v2", sha256=None,
                         reason="bad", at=NOW - 50)
    state = RolloutState(phase=Phase.ROLLED_BACK, stable=STABLE, rejected=(rejected,))
    held = machine.decide(spec(), state, observed(stable=arm(V1, 4)), NOW)
    assert held.state.canary is None
    retried = machine.decide(spec(), state, observed(
        stable=arm(V1, 4), controls=ControlRequests(retry="t1")), NOW)
    assert retried.state.canary is not None
    assert retried.state.rejected == ()
    assert retried.state.controls.retry == "t1"
    # the same token again does nothing more
    after = replace(retried.state, canary=None, rejected=(rejected,))
    assert machine.decide(spec(), after, observed(
        stable=arm(V1, 4), controls=ControlRequests(retry="t1")), NOW).state.canary is None


def test_promote_request_starts_promotion_and_it_completes_when_stable_has_rolled() -> None:
    state = RolloutState(stable=STABLE, canary=canary_state(step_index=1, desired_weight=25))
    promoting = machine.decide(spec(), state, observed(
        stable=arm(V1, 3), canary=arm(spec().model, 1),
        controls=ControlRequests(promote="now")), NOW)
    assert promoting.state.canary is not None
    assert promoting.state.canary.promoting
    assert promoting.stable is not None
    assert promoting.stable.model.version == "v2"
    assert promoting.stable.replicas == 4
    assert promoting.canary is not None  # keeps serving until stable has rolled
    done = machine.decide(spec(), promoting.state, observed(
        stable=arm(spec().model, 4), canary=arm(spec().model, 1)), NOW + 5)
    assert done.state.phase is Phase.HEALTHY
    assert done.state.canary is None
    assert done.canary is None
    assert done.state.history[-1].outcome.value == "Promoted"


def test_pause_annotation_holds_the_program_and_resume_continues() -> None:
    state = RolloutState(stable=STABLE, canary=canary_state(step_index=1, desired_weight=25,
                                                            step_started_at=NOW - 60))
    cluster = observed(stable=arm(V1, 3), canary=arm(spec().model, 1),
                       controls=ControlRequests(paused=True))
    paused = machine.decide(spec(), state, cluster, NOW)
    assert paused.state.phase is Phase.PAUSED
    assert paused.state.canary is not None
    assert paused.state.canary.step_index == 1
    resumed = machine.decide(spec(), paused.state, replace(cluster, controls=ControlRequests()),
                             NOW + 1)
    assert resumed.state.canary is not None
    assert resumed.state.canary.step_index == 2
    assert [e.reason for e in resumed.events][:1] == ["Resumed"]


def test_an_invalid_spec_leaves_children_alone_and_reports_once() -> None:
    state = RolloutState(phase=Phase.HEALTHY, stable=STABLE)
    first = machine.decide_invalid(state, observed(), ["spec.x: wrong"], NOW)
    assert first.keep_children
    assert first.state.phase is Phase.DEGRADED
    assert [e.reason for e in first.events] == ["InvalidSpec"]
    again = machine.decide_invalid(first.state, observed(), ["spec.x: wrong"], NOW + 1)
    assert again.events == ()


@pytest.mark.parametrize(("total", "weight", "stable", "canary"), [
    (4, 0, 4, 0), (4, 25, 3, 1), (4, 50, 2, 2), (4, 100, 0, 4), (2, 10, 1, 1),
    (1, 50, 1, 1), (10, 5, 9, 1), (10, 99, 1, 9), (0, 50, 0, 0),
])
def test_replica_split_keeps_capacity_and_gives_each_arm_a_pod(
        total: int, weight: int, stable: int, canary: int) -> None:
    split = replica_split(total, weight)
    assert (split.stable, split.canary) == (stable, canary)


def test_achieved_weight_is_the_share_of_ready_pods() -> None:
    assert achieved_weight(3, 1) == 25
    assert achieved_weight(0, 0) == 0
