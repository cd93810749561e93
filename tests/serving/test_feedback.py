"""Feedback counts only for predictions the model's servers made: forged, replayed, late,
unauthenticated and misdirected feedback gets a 4xx and counts nowhere."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.serving import Served, serving

# the hardening tests share one xdist worker (and its session servers), beside the others
pytestmark = pytest.mark.xdist_group("serving-hardening")

FEEDBACK = "/v2/models/iris/feedback"
ROW = [5.1, 3.5, 1.4, 0.2]


def _feedback_counts(served: Served) -> dict[tuple[str, str], float]:
    return {(s.labels["version"], s.labels["outcome"]): s.value
            for family in text_string_to_metric_families(served.metrics())
            for s in family.samples if s.name == "modelgate_feedback_total"}


def _prediction_id(served: Served, rows: int = 1) -> str:
    answer = served.predict_v1([ROW] * rows)
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction_id"] == answer.headers["X-Prediction-Id"]
    return str(answer.headers["X-Prediction-Id"])


@pytest.fixture(scope="module")
def canary(models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    with serving(models["classifier"].uri, tmp_path_factory.mktemp("feedback"), name="iris",
                 version="2") as served:
        yield served


def test_every_prediction_gets_an_id_in_a_header_and_the_body(canary: Served) -> None:
    v2 = canary.infer({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
                                   "data": ROW}]})
    v1 = canary.predict_v1([ROW])
    ids = {v2.headers["X-Prediction-Id"], v1.headers["X-Prediction-Id"]}
    assert v2.json()["parameters"]["prediction_id"] == v2.headers["X-Prediction-Id"]
    assert v1.json()["prediction_id"] == v1.headers["X-Prediction-Id"]
    assert len(ids) == 2


def test_feedback_naming_an_issued_id_counts_once_for_its_version(canary: Served) -> None:
    before = _feedback_counts(canary)
    prediction_id = _prediction_id(canary, rows=3)
    first = canary.post(FEEDBACK, json={"feedback": [
        {"id": prediction_id, "row": 0, "outcome": "correct"},
        {"id": prediction_id, "row": 1, "prediction": 0, "label": 1},
        {"id": prediction_id, "row": 2, "prediction": "setosa", "label": "setosa"}]})
    assert first.status_code == 200, first.text
    assert first.json() == {"counted": {"2": {"correct": 2, "incorrect": 1}}}
    replay = canary.post(FEEDBACK, json={"id": prediction_id, "row": 1, "outcome": "correct"})
    assert replay.status_code == 409
    assert "counted already" in replay.json()["error"]
    after = _feedback_counts(canary)
    assert after[("2", "correct")] - before.get(("2", "correct"), 0) == 2
    assert after[("2", "incorrect")] - before.get(("2", "incorrect"), 0) == 1


def test_forged_feedback_gets_4xx_and_counts_nowhere(canary: Served) -> None:
    """The review's attack: 3,000 "incorrect" outcomes for the canary's version, and feedback
    for junk versions to fill the version cap; then tampered and borrowed ids."""
    before = _feedback_counts(canary)
    genuine = _prediction_id(canary)
    tampered = genuine[:-3] + ("AAA" if not genuine.endswith("AAA") else "BBB")
    forged: list[dict[str, Any]] = [
        {"version": "2", "outcomes": ["incorrect"] * 3000},
        {"version": "2", "outcome": "incorrect"},
        *({"version": f"junk-{n}", "outcome": "correct"} for n in range(16)),
        {"id": tampered, "outcome": "incorrect"},
        {"id": "", "outcome": "incorrect"},
        {"id": 12345, "outcome": "incorrect"},
        {"id": genuine, "row": 1, "outcome": "incorrect"},  # a row the prediction never had
        {"feedback": [{"id": genuine, "outcome": "incorrect"},
                      {"id": genuine, "outcome": "incorrect"}]},  # the same row twice
        {"feedback": [{"id": genuine, "outcome": "incorrect"},
                      {"id": tampered, "outcome": "incorrect"}]},  # all or nothing
    ]
    for body in forged:
        answer = canary.post(FEEDBACK, json=body)
        assert 400 <= answer.status_code < 500, (body, answer.status_code)
        assert answer.json()["error"]
    assert _feedback_counts(canary) == before
    # the genuine id was never spent by the refused bodies
    assert canary.post(FEEDBACK, json={"id": genuine, "outcome": "correct"}).status_code == 200


def test_ids_of_another_server_count_only_where_the_key_is_shared(models, logs) -> None:
    model = models["classifier"]
    shared = {"MODELGATE_FEEDBACK_KEY": "the model's key, from a Secret"}
    with serving(model.uri, logs, name="iris", version="2", env=shared) as canary, \
            serving(model.uri, logs, name="iris", version="1", env=shared) as stable, \
            serving(model.uri, logs, name="iris", version="1") as other:
        prediction_id = _prediction_id(canary)
        refused = other.post(FEEDBACK, json={"id": prediction_id, "outcome": "incorrect"})
        assert refused.status_code == 400
        assert "not a prediction id issued" in refused.json()["error"]
        counted = stable.post(FEEDBACK, json={"id": prediction_id, "outcome": "incorrect"})
        assert counted.json() == {"counted": {"2": {"correct": 0, "incorrect": 1}}}
        assert _feedback_counts(other) == {}
        assert _feedback_counts(stable) == {("2", "incorrect"): 1.0}


def test_feedback_needs_the_token_when_one_is_set(models, logs) -> None:
    env = {"MODELGATE_FEEDBACK_TOKEN": "s3cret-from-a-Secret"}
    with serving(models["classifier"].uri, logs, name="iris", version="2", env=env) as served:
        prediction_id = _prediction_id(served)
        body = {"id": prediction_id, "outcome": "correct"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            answer = served.post(FEEDBACK, json=body, headers=headers)
            assert answer.status_code == 401, headers
            assert "Authorization: Bearer" in answer.json()["error"]
        assert _feedback_counts(served) == {}
        answer = served.post(FEEDBACK, json=body,
                             headers={"Authorization": "Bearer s3cret-from-a-Secret"})
        assert answer.status_code == 200
        assert "s3cret" not in served.log()


def test_feedback_after_the_window_is_refused(models, logs) -> None:
    with serving(models["classifier"].uri, logs, name="iris", version="2",
                 args=["--feedback-window", "500ms"]) as served:
        fresh, late = _prediction_id(served), _prediction_id(served)
        issued = time.time()
        assert served.post(FEEDBACK, json={"id": fresh, "outcome": "correct"}).ok
        while time.time() < issued + 0.7:  # the behaviour under test is the passing of time
            time.sleep(0.05)
        answer = served.post(FEEDBACK, json={"id": late, "outcome": "incorrect"})
        assert answer.status_code == 410
        assert "--feedback-window" in answer.json()["error"]
        assert _feedback_counts(served) == {("2", "correct"): 1.0}


def test_a_full_ledger_refuses_rather_than_forgets(models, logs) -> None:
    with serving(models["classifier"].uri, logs, name="iris", version="2",
                 args=["--feedback-capacity", "2"]) as served:
        ids = [_prediction_id(served) for _ in range(3)]
        for prediction_id in ids[:2]:
            assert served.post(FEEDBACK, json={"id": prediction_id,
                                               "outcome": "correct"}).status_code == 200
        full = served.post(FEEDBACK, json={"id": ids[2], "outcome": "correct"})
        assert full.status_code == 429
        assert "--feedback-capacity" in full.json()["error"]
        assert served.post(FEEDBACK, json={"id": ids[0],
                                           "outcome": "correct"}).status_code == 409
