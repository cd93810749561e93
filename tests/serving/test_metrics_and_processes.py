"""Contract 4 metrics from a real server, read by the analysis; feedback; worker processes;
graceful shutdown."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import socket
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sandbox import TIMEOUT_SCALE
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
        # latency of the answered prediction only, not of the refusal
        assert _value(served, "modelgate_request_duration_seconds_count", **labels) == 1
        # one request weighs 1, shared among its rows' classes
        expected = np.unique(model.estimator.predict(rows), return_counts=True)
        for label, count in zip(*expected, strict=True):
            assert _value(served, "modelgate_predictions_total", **labels,
                          **{"class": str(label)}) == pytest.approx(count / len(rows))
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
    regressor.predict_v1(rows[:1].tolist())
    # each request is one observation (a row drawn from it), however many rows it has
    assert _value(regressor, "modelgate_prediction_value_count") - before == 2
    assert not [s for s in _samples(regressor) if s.name == "modelgate_predictions_total"]


def test_analysis_reads_a_real_servers_metrics(models, logs) -> None:
    """The serving exposition is what modelgate's observe() expects (contract 4)."""
    model = models["classifier"]
    key = {"MODELGATE_FEEDBACK_KEY": "one key for every pod of the model"}
    with serving(model.uri, logs, name="iris", version="1", env=key) as stable, \
            serving(model.uri, logs, name="iris", version="2", env=key) as canary:
        scrapes = [PodScrape(t=0.0, role=role, pod=f"{role.value}-0",
                             samples=parse_exposition(served.metrics()))
                   for role, served in ((Role.STABLE, stable), (Role.CANARY, canary))]
        for served in (stable, canary):
            for row in model.X[:20]:
                answer = served.predict_v1([row.tolist()])
        counted = stable.post("/v2/models/iris/feedback",
                              json={"id": answer.headers["X-Prediction-Id"],
                                    "outcome": "correct"})
        assert counted.json() == {"counted": {"2": {"correct": 1, "incorrect": 0}}}
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


def _unread_bytes(server_port: int, client_ports: set[int]) -> dict[int, int]:
    """For each client connection the server has accepted: bytes it has not read yet (the
    receive queue of the server's end, from /proc/net/tcp)."""
    unread = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        queues = fields[4]
        if state == "01" and int(local.split(":")[1], 16) == server_port:
            client = int(remote.split(":")[1], 16)
            if client in client_ports:
                unread[client] = int(queues.split(":")[1], 16)
    return unread


def _status_line(connection: socket.socket) -> str:
    with connection.makefile("rb") as answer:
        return answer.readline().decode().strip()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_finishes_in_flight_requests_then_exits(models, logs, workers) -> None:
    model = models["forest"]
    with serving(model.uri, logs, name="forest",
                 args=["--trusted-types", "sklearn.tree._tree.Tree", "--workers", workers,
                       "--batching", "on", "--max-batch-size", "64", "--max-wait", "2s"]) \
            as served:
        body = json.dumps({"instances": [model.X[0].tolist()]}).encode()
        request = (f"POST /v1/models/forest:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                   f"Connection: close\r\n\r\n").encode() + body
        connections = [socket.create_connection(("127.0.0.1", served.port), timeout=30)
                       for _ in range(6)]
        try:
            for connection in connections:
                connection.sendall(request)
            # the server has read all six (they now wait in a batch for company): only then
            # is it told to stop, so every one of them is in flight
            ports = {connection.getsockname()[1] for connection in connections}
            deadline = time.monotonic() + 10 * TIMEOUT_SCALE
            while (unread := _unread_bytes(served.port, ports)) != dict.fromkeys(ports, 0):
                assert time.monotonic() < deadline, f"not read by the server: {unread}"
                time.sleep(0.01)
            served.process.send_signal(signal.SIGTERM)
            statuses = [_status_line(connection) for connection in connections]
        finally:
            for connection in connections:
                connection.close()
        assert statuses == ["HTTP/1.1 200 OK"] * 6
        assert served.process.wait(30) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{served.url}/v2/health/live", timeout=2)
