"""Threshold (prometheus) metrics are judged by the operator, from the values a provider
reads, exactly as `modelgate analyze` judges them: a value outside thresholdRange rolls back,
inside passes, no value holds (no data)."""

from __future__ import annotations

from typing import Any

import pytest
from support.cluster import FakeCluster

from modelgate import api, status
from modelgate.core.analysis import PodScrape, Role
from modelgate.core.state import CanaryState, RolloutState, ScrapeResult, StableState
from modelgate.providers.static import StaticProvider
from modelgate.reconcile import reconcile
from modelgate.replay import replay
from modelgate.settings import OperatorSettings

NOW = 1_000_000.0
BODY: dict[str, Any] = {
    "metadata": {"name": "iris", "namespace": "ml", "uid": "u1", "generation": 1},
    "spec": {
        "model": {"version": "v2", "uri": "file:///m/v2.skops"},
        "serving": {"replicas": 4},
        "rollout": {"steps": [{"setWeight": 25}, {"analysis": {}}]},
        "analysis": {"interval": "10s",
                     "provider": {"type": "prometheus", "address": "http://prometheus:9090"},
                     "metrics": [{"name": "queue-depth", "type": "prometheus",
                                  "query": "max(queue_depth{version='{{version}}'})",
                                  "thresholdRange": {"max": 10}}]},
    },
}


def _body_mid_canary() -> dict[str, Any]:
    spec = api.parse(BODY)
    state = RolloutState(
        stable=StableState(model=api.parse({**BODY, "spec": {
            **BODY["spec"], "model": {"version": "v1", "uri": "file:///m/v1.skops"}}}).model,
            since=NOW - 600),
        canary=CanaryState(model=spec.model, started_at=NOW - 60, step_index=1,
                           step_started_at=NOW - 30, desired_weight=25, weight=25))
    return {**BODY, "status": status.status_from_state(state)}


def _tick(provider: StaticProvider) -> dict[str, Any]:
    body = _body_mid_canary()
    result = reconcile(FakeCluster(body), OperatorSettings(), body, now=NOW,
                       provider_factory=provider.factory)
    assert provider.rounds == 1, "the tick scraped once"
    assert result.status is not None
    return result.status


@pytest.mark.parametrize(("values", "verdict", "phase"), [
    ({"queue-depth": 25.0}, "fail", "RolledBack"),
    ({"queue-depth": 3.0}, "pass", "Progressing"),
    ({}, "no-data", "Progressing"),
], ids=["outside-the-range-rolls-back", "inside-passes", "no-value-holds"])
def test_the_operator_judges_a_threshold_metric_from_the_providers_value(
        values: dict[str, float], verdict: str, phase: str) -> None:
    written = _tick(StaticProvider(ScrapeResult(custom_values=values)))
    [metric] = written["analysis"]["metrics"]
    assert (metric["name"], metric["verdict"]) == ("queue-depth", verdict)
    assert written["phase"] == phase


def test_with_no_value_the_operator_records_what_replay_records() -> None:
    spec = api.parse(BODY)
    tape = [PodScrape(t=10.0, role=role, pod=f"{role.value}-0", samples=())
            for role in (Role.STABLE, Role.CANARY)]
    replayed = next(iter(replay(spec, tape)))
    written = _tick(StaticProvider(ScrapeResult(scrapes=tuple(tape))))
    assert written["analysis"]["metrics"] == replayed["metrics"]


def test_a_failed_scrape_reports_the_threshold_metric_as_a_provider_error() -> None:
    written = _tick(StaticProvider(ScrapeResult(error="prometheus: connection refused",
                                                custom_values={"queue-depth": 25.0})))
    [metric] = written["analysis"]["metrics"]
    assert metric["verdict"] == "error"
    assert written["phase"] != "RolledBack"
