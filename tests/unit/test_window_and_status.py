"""The analysis window folded round by round equals observe() over the whole tape, and status
round-trips every field the operator needs after a restart."""

from __future__ import annotations

import json

import pytest
from support.cluster import FakeCluster

from modelgate import status
from modelgate.core.analysis import PodScrape, Role, Sample, Window, fold, observe
from modelgate.core.state import (
    CanaryState,
    Condition,
    Controls,
    HistoryEntry,
    Outcome,
    Rejection,
    RolloutState,
    StableState,
)
from modelgate.core.types import ModelFormat, ModelSource, Phase


def scrape(t: float, role: Role, pod: str, ok: float, bad: float) -> PodScrape:
    return PodScrape(t=t, role=role, pod=pod, samples=(
        Sample("modelgate_requests_total", (("code", "200"), ("version", role.value)), ok),
        Sample("modelgate_requests_total", (("code", "503"), ("version", role.value)), bad),
        Sample("modelgate_predictions_total", (("class", "a"), ("version", role.value)), ok),
    ))


TAPE = [
    scrape(0, Role.STABLE, "s1", 100, 1), scrape(10, Role.STABLE, "s1", 150, 1),
    scrape(10, Role.CANARY, "c1", 5, 0), scrape(20, Role.STABLE, "s1", 220, 2),
    scrape(20, Role.CANARY, "c1", 40, 3), scrape(30, Role.STABLE, "s1", 10, 0),  # restart
    scrape(30, Role.CANARY, "c1", 90, 4), scrape(30, Role.CANARY, "c2", 7, 1),  # born inside
]


def test_folding_round_by_round_equals_observing_the_whole_tape() -> None:
    window = Window()
    for t in (0, 10, 20, 30):
        window = window.add(t, [s for s in TAPE if s.t == t])
    assert window.observation(30) == observe(TAPE, at=30)
    observation = window.observation(30)
    assert observation.stable.requests == (220 - 150) + (2 - 1) + 10
    assert observation.canary.requests == (90 - 5) + (4 - 0) + 7 + 1
    assert observation.canary.pods == 2


def test_the_window_survives_its_json_form_exactly() -> None:
    window = fold(TAPE, at=30)
    again = Window.from_json(json.loads(json.dumps(window.to_json())))
    assert again.observation(30) == window.observation(30)
    later = [scrape(40, Role.STABLE, "s1", 30, 0), scrape(40, Role.CANARY, "c1", 120, 4)]
    assert again.add(40, later).observation(40) == window.add(40, later).observation(40)


def test_a_damaged_window_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="damaged"):
        Window.from_json({"series": [["x", []]], "pods": [{"role": "nope", "pod": 1,
                                                           "last": []}]})


def test_status_round_trips_a_rollout_in_flight() -> None:
    model = ModelSource(version="v2", uri="https://m/v2.skops", sha256="a" * 64,
                        format=ModelFormat.SKOPS, trusted_types=("x.Y",))
    state = RolloutState(
        phase=Phase.PROGRESSING, message="m", observed_generation=4, spec_hash="abc",
        stable=StableState(model=ModelSource(version="v1", uri="file:///v1"), since=1000.5),
        canary=CanaryState(model=model, started_at=2000.0, step_index=2, step_started_at=2010.0,
                           desired_weight=50, weight=50, held="why", paused=True,
                           last_analysis_at=2020.0, provider_errors=1,
                           window=fold(TAPE, at=30), passed=("error-rate",)),
        rejected=(Rejection(model_hash="h", version="v0", sha256=None, reason="r", at=900.0),),
        history=(HistoryEntry(version="v1", outcome=Outcome.PROMOTED, reason="ok", at=990.0),),
        conditions=(Condition(type="Ready", status="True", reason="Available", message="x",
                              last_transition=1500.0, observed_generation=4),),
        controls=Controls(promote="t1"),
        analysis={"decision": "continue"},
    )
    written = json.loads(json.dumps(status.status_from_state(state)))
    assert status.state_from_status(written) == state


def test_unreadable_status_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="cannot be read back"):
        status.state_from_status({"stable": {"version": "v1", "uri": "u", "since": "never"}})


def test_status_written_as_merge_patches_over_an_older_status_reads_back_the_newer() -> None:
    from kmock._internal.dicts import merge_patch_dict  # the emulator's RFC 7386 merge

    old_canary = CanaryState(
        model=ModelSource(version="v2", uri="https://m/v2", sha256="b" * 64,
                          trusted_types=("x.Y",)),
        started_at=2000.0, step_started_at=2000.0, window=fold(TAPE, at=30))
    older = RolloutState(stable=StableState(model=ModelSource(version="v1", uri="file:///a",
                                                              sha256="c" * 64), since=1.0),
                         canary=old_canary)
    newer = RolloutState(stable=StableState(model=ModelSource(version="v1b", uri="file:///b"),
                                            since=2.0),
                         canary=CanaryState(model=ModelSource(version="v4", uri="file:///v4"),
                                            started_at=3000.0, step_started_at=3000.0))
    stored = json.loads(json.dumps(status.status_from_state(older)))
    patched = merge_patch_dict(stored, json.loads(json.dumps(status.status_from_state(newer))))
    assert status.state_from_status(patched) == newer


def test_an_unreadable_status_holds_everything_and_writes_nothing() -> None:
    from modelgate.reconcile import reconcile
    from modelgate.settings import OperatorSettings

    body = {"metadata": {"name": "iris", "namespace": "ml", "generation": 2},
            "spec": {"model": {"version": "v2", "uri": "file:///m"}},
            "status": {"stable": {"version": "v1", "uri": "file:///v1", "since": "garbage"}}}
    cluster = FakeCluster(body)
    result = reconcile(cluster, OperatorSettings(), body, now=5000.0)
    assert result.status is None
    assert cluster.statuses == []
    assert cluster.events == ["StatusUnreadable"]


def test_an_image_outside_the_allowlist_is_an_invalid_spec_and_nothing_is_deployed() -> None:
    from modelgate.reconcile import reconcile
    from modelgate.settings import OperatorSettings

    body = {"metadata": {"name": "iris", "namespace": "ml", "generation": 1, "uid": "u1"},
            "spec": {"model": {"version": "v1", "uri": "file:///m"},
                     "serving": {"image": "docker.io/attacker/miner:latest"}}}
    cluster = FakeCluster(body)
    settings = OperatorSettings(image_allowlist=("registry.example.com/modelgate/*",))
    result = reconcile(cluster, settings, body, now=5000.0)
    assert result.status is not None
    assert result.status["phase"] == "Degraded"
    assert cluster.deployments == {}
    assert cluster.services == {}
    assert "is not in this operator's image allowlist" in result.status["message"]
    assert cluster.events == ["InvalidSpec"]


def test_a_tick_decides_from_the_api_servers_object_not_the_watchs_copy() -> None:
    """A lagging watch hands the timer an old body; the tick reads the object afresh and
    writes status onto the version it read (a later change is then a 409, not a rollback)."""
    from modelgate.reconcile import reconcile
    from modelgate.settings import OperatorSettings

    stored = {"metadata": {"name": "iris", "namespace": "ml", "generation": 2, "uid": "u1",
                           "resourceVersion": "42"},
              "spec": {"model": {"version": "v2", "uri": "file:///m"}},
              "status": {"stable": {"version": "v1", "uri": "file:///v1", "since": "garbage"}}}
    stale = {**stored, "metadata": {**stored["metadata"], "resourceVersion": "40"},
             "status": {}}
    cluster = FakeCluster(stored)
    result = reconcile(cluster, OperatorSettings(), stale, now=5000.0)
    # the stored status (unreadable here) is what counted, not the stale empty one, which
    # would have deployed v2 directly as if nothing served
    assert result.status is None
    assert cluster.events == ["StatusUnreadable"]
    assert cluster.deployments == {}


def test_a_deleted_object_is_left_alone() -> None:
    from modelgate.reconcile import reconcile
    from modelgate.settings import OperatorSettings

    body = {"metadata": {"name": "gone", "namespace": "ml", "generation": 1, "uid": "u1"},
            "spec": {"model": {"version": "v1", "uri": "file:///m"}}}
    cluster = FakeCluster()
    result = reconcile(cluster, OperatorSettings(), body, now=5000.0)
    assert result == type(result)(status=None, events=())
    assert cluster.statuses == []
    assert cluster.deployments == {}


def test_a_status_write_refused_as_stale_drops_the_whole_tick_events_included() -> None:
    """Status first, Events after: a tick whose status write meets a 409 posts nothing, so
    the next tick (deciding again from the newer object) does not post its Events twice."""
    from modelgate.reconcile import StatusConflict, reconcile
    from modelgate.settings import OperatorSettings

    body = {"metadata": {"name": "iris", "namespace": "ml", "generation": 1, "uid": "u1",
                         "resourceVersion": "7"},
            "spec": {"model": {"version": "v1", "uri": "file:///m"},
                     "serving": {"image": "docker.io/someone/else:latest"}}}
    settings = OperatorSettings(image_allowlist=("registry.example.com/modelgate/*",))
    cluster = FakeCluster(body)
    cluster.changed_since_read = True
    with pytest.raises(StatusConflict, match="409 Conflict"):
        reconcile(cluster, settings, body, now=5000.0)
    assert cluster.statuses == []
    assert cluster.events == []
    cluster.changed_since_read = False
    result = reconcile(cluster, settings, body, now=5005.0)
    assert result.status is not None
    assert result.status["phase"] == "Degraded"
    assert cluster.statuses == [result.status]
    assert cluster.events == ["InvalidSpec"]
