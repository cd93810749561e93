"""decide() for changes of spec.serving: a change that alters the pods is a canary of the
same model with the new serving section, judged against stable, which keeps its own; a
replicas change is applied at once; status keeps each arm's serving section exactly."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from modelgate import api, status
from modelgate.core import machine
from modelgate.core.manifests import model_hash, serving_hash
from modelgate.core.state import (
    ArmObserved,
    CanaryState,
    Observed,
    Outcome,
    RolloutState,
    StableState,
)
from modelgate.core.types import ModelDeploymentSpec, Phase, ServingSpec

NOW = 1_000_000.0
OLD = {"replicas": 4, "image": "serving:1"}
NEW = {"replicas": 4, "image": "serving:2", "env": [{"name": "FLAVOUR", "value": "b"}],
       "batching": {"mode": "off", "maxWait": "1.5ms"}}


def spec(serving: dict[str, Any]) -> ModelDeploymentSpec:
    return api.parse({
        "metadata": {"name": "iris", "namespace": "ml"},
        "spec": {"model": {"version": "v1", "uri": "file:///m/v1.skops"}, "serving": serving,
                 "rollout": {"steps": [{"setWeight": 25}, {"analysis": {}}]},
                 "analysis": {"interval": "10s", "minSamples": 10}}})


V1 = spec(OLD).model


def arm(serving: ServingSpec, replicas: int) -> ArmObserved:
    return ArmObserved(model_hash=model_hash(V1), replicas=replicas, ready=replicas,
                       updated=replicas, current=replicas, settled=True,
                       serving_hash=serving_hash(serving))


def observed(stable: ArmObserved | None = None, canary: ArmObserved | None = None) -> Observed:
    return Observed(generation=2, spec_hash="h", stable=stable, canary=canary)


STABLE = StableState(model=V1, since=NOW - 100, serving=spec(OLD).serving)


def test_a_serving_change_starts_a_canary_and_stable_keeps_its_own_serving() -> None:
    new = spec(NEW)
    decision = machine.decide(new, RolloutState(stable=STABLE),
                              observed(stable=arm(STABLE.serving or ServingSpec(), 4)), NOW)
    assert decision.state.canary is not None
    assert decision.state.canary.model == V1
    assert decision.state.canary.serving == new.serving
    assert decision.stable is not None
    assert decision.canary is not None
    assert decision.stable.serving == spec(OLD).serving
    assert decision.canary.serving == new.serving
    (started,) = [e for e in decision.events if e.reason == "RolloutStarted"]
    assert started.message == ("canary rollout of the serving change of version v1 "
                               "(serving.image, serving.env, serving.batching) started "
                               "against stable v1")


def test_replicas_apply_at_once_without_a_canary() -> None:
    more = spec({**OLD, "replicas": 6})
    decision = machine.decide(more, RolloutState(stable=STABLE),
                              observed(stable=arm(more.serving, 4)), NOW)
    assert decision.state.canary is None
    assert decision.stable is not None
    assert decision.stable.replicas == 6
    assert [e.reason for e in decision.events] == []


def test_a_status_without_serving_sections_takes_the_specs_and_starts_nothing() -> None:
    """Written by an operator that built both arms from spec.serving."""
    current = spec(NEW)
    decision = machine.decide(current, RolloutState(stable=replace(STABLE, serving=None)),
                              observed(stable=arm(current.serving, 4)), NOW)
    assert decision.state.canary is None
    assert decision.state.phase is Phase.HEALTHY
    assert decision.state.stable is not None
    assert decision.state.stable.serving == current.serving


def test_promotion_waits_for_stable_to_run_the_new_serving() -> None:
    new = spec(NEW)
    promoting = CanaryState(model=V1, started_at=NOW - 60, step_started_at=NOW - 60,
                            desired_weight=25, promoting=True, serving=new.serving)
    state = RolloutState(stable=STABLE, canary=promoting)
    # stable's Deployment still shows the old serving: the rolling update is not done
    waiting = machine.decide(new, state, observed(stable=arm(spec(OLD).serving, 4),
                                                  canary=arm(new.serving, 1)), NOW)
    assert waiting.state.canary is not None
    assert waiting.stable is not None
    assert waiting.stable.serving == new.serving
    done = machine.decide(new, state, observed(stable=arm(new.serving, 4),
                                               canary=arm(new.serving, 1)), NOW)
    assert done.state.canary is None
    assert done.state.stable is not None
    assert done.state.stable.serving == new.serving
    assert done.state.history[-1].outcome is Outcome.PROMOTED
    assert "serving change" in done.state.history[-1].reason


def test_a_rolled_back_serving_change_is_not_retried_until_the_spec_changes() -> None:
    new = spec(NEW)
    running = CanaryState(model=V1, started_at=NOW - 60, step_started_at=NOW - 60,
                          desired_weight=25, serving=new.serving)
    state = RolloutState(stable=STABLE, canary=running)
    aborted = machine.decide(new, state, replace(observed(stable=arm(spec(OLD).serving, 3)),
                                                 controls=replace(Observed(0, "").controls,
                                                                  abort="1")), NOW)
    assert aborted.state.canary is None
    (rejection,) = aborted.state.rejected
    assert rejection.serving_hash == serving_hash(new.serving)
    assert aborted.state.message.startswith("the serving change of version v1 (serving.image")
    # the same pair again: held, not retried
    again = machine.decide(new, aborted.state, replace(
        observed(stable=arm(spec(OLD).serving, 4)), controls=replace(
            Observed(0, "").controls, abort="1")), NOW + 5)
    assert again.state.canary is None
    assert again.state.phase is Phase.ROLLED_BACK
    # another serving section is a new pair: a canary
    other = spec({**NEW, "workers": 2})
    retried = machine.decide(other, aborted.state, observed(stable=arm(spec(OLD).serving, 4)),
                             NOW + 10)
    assert retried.state.canary is not None
    assert retried.state.canary.serving == other.serving


def test_status_keeps_each_arms_serving_section_exactly() -> None:
    new = spec({**NEW, "resources": {"requests": {"cpu": "0.5"}, "limits": {"memory": "1Gi"}},
                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s",
                                                                        "key": "k"}}}]})
    state = RolloutState(stable=STABLE, canary=CanaryState(
        model=V1, started_at=NOW, step_started_at=NOW, serving=new.serving))
    written = status.status_from_state(state)
    assert "replicas" not in written["canary"]["serving"]
    back = status.state_from_status(written)
    assert back.stable is not None
    assert back.stable.serving is not None
    assert back.stable.model == STABLE.model
    # replicas are not kept (they come from the spec): the hash leaves them out
    assert serving_hash(back.stable.serving) == serving_hash(spec(OLD).serving)
    assert back.canary is not None
    assert back.canary.serving is not None
    assert serving_hash(back.canary.serving) == serving_hash(new.serving)
