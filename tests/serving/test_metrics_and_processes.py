"""Contract 4 metrics from a real server, read by the analysis; feedback; worker processes;
graceful shutdown."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from itertools import pairwise

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from support.serving import Served, serving

from modelgate.core.analysis import PodScrape, Role, observe
from modelgate.exposition import parse_exposition

# one xdist worker runs every serving test, so the session's servers start once
pytestmark = pytest.mark.xdist_group("serving")


def _samples(served: Served) -> list:
    return [sample for family in text_string_to_metric_families(served.metrics())
            for sample in family.samples]


def _value(served: Served, name: str, **labels: str) -> float:
    return sum(sample.value for sample in _samples(served)
               if sample.name == name and labels.items() <= sample.labels.items())


def test_inference_counts_requests_latency_and_classes(models, logs) -> None:
    model = models["classifier"]
    with serving(model.uri, logs, name="iris", version="3") as served:
        for _ in range(5):
            served.get("/v2/health/ready")  # probes do not count as requests
        rows = model.X[:30]
        served.predict_v1(rows.tolist())
        served.predict_v1([[1, 2]])  # a 400
        labels = {"model": "iris", "version": "3"}
        assert _value(served, "modelgate_requests_total", code="200", **labels) == 1
        assert _value(served, "modelgate_requests_total", code="400", **labels) == 1
        assert _value(served, "modelgate_requests_total", **labels) == 2
        assert _value(served, "modelgate_request_duration_seconds_count", **labels) == 2
        expected = np.unique(model.estimator.predict(rows), return_counts=True)
        for label, count in zip(*expected, strict=True):
            assert _value(served, "modelgate_predictions_total", **labels,
                          **{"class": str(label)}) == count
        assert _value(served, "modelgate_model_info", sha256=model.sha256, **labels) == 1
        buckets = {s.labels["le"] for s in _samples(served)
                   if s.name == "modelgate_request_duration_seconds_bucket"}
        # exponential, 10% apart from 0.1 ms to about 10 s: a p99 is resolved to +10%
        bounds = sorted(float(b) for b in buckets if b != "+Inf")
        assert (bounds[0], len(bounds)) == (0.0001, 122)
        assert bounds[-1] > 10.0
        assert all(abs(high / low - 1.1) < 1e-4 for low, high in pairwise(bounds))


def test_regressor_predictions_fill_the_value_histogram(regressor, models) -> None:
    rows = models["regressor"].X[:12]
    before = _value(regressor, "modelgate_prediction_value_count")
    regressor.predict_v1(rows.tolist())
    assert _value(regressor, "modelgate_prediction_value_count") - before == 12
    assert not [s for s in _samples(regressor) if s.name == "modelgate_predictions_total"]


def test_feedback_is_counted_for_the_version_that_predicted(classifier) -> None:
    feedback = "/v2/models/iris/feedback"
    first = classifier.post(feedback, json={"version": "2", "predictions": [0, 1, 2],
                                            "labels": [0, 1, 1]})
    assert first.json() == {"version": "2", "correct": 2, "incorrect": 1}
    classifier.post(feedback, json={"prediction": "setosa", "label": "setosa"},
                    headers={"X-Model-Version": "1"})
    classifier.post(feedback, json={"version": "1", "outcomes": ["incorrect", "incorrect"]})
    assert _value(classifier, "modelgate_feedback_total", version="2", outcome="correct") == 2
    assert _value(classifier, "modelgate_feedback_total", version="2", outcome="incorrect") == 1
    assert _value(classifier, "modelgate_feedback_total", version="1", outcome="correct") == 1
    assert _value(classifier, "modelgate_feedback_total", version="1", outcome="incorrect") == 2


def test_feedback_versions_are_bounded(models, logs) -> None:
    with serving(models["classifier"].uri, logs, name="iris",
                 args=["--feedback-versions", "2"]) as served:
        for version in ("1", "2"):
            assert served.post("/v2/models/iris/feedback",
                               json={"version": version, "outcome": "correct"}).ok
        third = served.post("/v2/models/iris/feedback", json={"version": "3",
                                                              "outcome": "correct"})
        assert third.status_code == 429
        assert "--feedback-versions" in third.json()["error"]


def test_analysis_reads_a_real_servers_metrics(models, logs) -> None:
    """The serving exposition is what modelgate's observe() expects (contract 4)."""
    model = models["classifier"]
    with serving(model.uri, logs, name="iris", version="1") as stable, \
            serving(model.uri, logs, name="iris", version="2") as canary:
        scrapes = [PodScrape(t=0.0, role=role, pod=f"{role.value}-0",
                             samples=parse_exposition(served.metrics()))
                   for role, served in ((Role.STABLE, stable), (Role.CANARY, canary))]
        for served in (stable, canary):
            for row in model.X[:20]:
                served.predict_v1([row.tolist()])
        stable.post("/v2/models/iris/feedback", json={"version": "2", "outcome": "correct"})
        scrapes += [PodScrape(t=30.0, role=role, pod=f"{role.value}-0",
                              samples=parse_exposition(served.metrics()))
                    for role, served in ((Role.STABLE, stable), (Role.CANARY, canary))]
        observation = observe(scrapes, at=30.0)
    assert observation.stable.version == "1"
    assert observation.canary.version == "2"
    assert observation.stable.requests == observation.canary.requests == 20
    assert observation.canary.latency.count == 20
    assert sum(observation.canary.classes.values()) == 20
    assert observation.canary.correct == 1  # counted by a stable pod, credited to version 2


def _serving_pids(served: Served) -> set[str]:
    return {line.split()[3] for line in served.log().splitlines() if "serving forest" in line}


def test_workers_share_the_port_and_sum_their_metrics(forest, models) -> None:
    deadline = time.monotonic() + 30
    while len(_serving_pids(forest)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the second worker joins the port once its model is loaded
    rows = models["forest"].X
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: requests.post(
            f"{forest.url}/v1/models/forest:predict",
            json={"instances": [rows[i % len(rows)].tolist()]}, timeout=10), range(200)))
    failed = [(answer.status_code, answer.text) for answer in answers if answer.status_code != 200]
    assert not failed, (failed[:3], forest.log())
    assert _value(forest, "modelgate_requests_total", code="200") >= 200
    info = [s for s in _samples(forest) if s.name == "modelgate_model_info"]
    assert [s.value for s in info] == [1.0]
    assert len(_serving_pids(forest)) == 2, forest.log()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_finishes_in_flight_requests_then_exits(models, logs, workers) -> None:
    model = models["forest"]
    with serving(model.uri, logs, name="forest",
                 args=["--trusted-types", "sklearn.tree._tree.Tree", "--workers", workers,
                       "--batching", "on", "--max-batch-size", "64", "--max-wait", "300ms"]) \
            as served:
        body = {"instances": [model.X[0].tolist()]}
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            pending = [pool.submit(requests.post, f"{served.url}/v1/models/forest:predict",
                                   json=body, timeout=10) for _ in range(6)]
            time.sleep(0.1)  # the requests now wait in a batch for company
            served.process.send_signal(signal.SIGTERM)
            answers = [future.result() for future in pending]
        assert [answer.status_code for answer in answers] == [200] * 6
        assert served.process.wait(30) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{served.url}/v2/health/live", timeout=2)
