"""The prometheus provider against a real Prometheus (tests/support/prometheus.py) scraping the
sandbox's real serving processes: rollouts decided from Prometheus, Prometheus going away and
coming back, the same verdicts as the pod scrape, and queries that cannot be used."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox import NAMESPACE, TIMEOUT_SCALE, Sandbox
from support import prometheus as prom
from support.rollouts import deploy, eventually, healthy, phase

from modelgate import api
from modelgate.core.analysis import AnalysisDecision, Window, judge
from modelgate.core.types import MetricSpec, MetricType, ThresholdRange
from modelgate.k8s import Cluster, PodAddress
from modelgate.providers import PrometheusAuth, Target
from modelgate.providers.podscrape import PodScrapeProvider
from modelgate.providers.prometheus import PrometheusProvider

# one xdist worker: the tests share the module's Prometheus and sandbox (`--dist loadgroup`)
pytestmark = [pytest.mark.sandbox, pytest.mark.xdist_group("prometheus"),
              pytest.mark.skipif(prom.PROMETHEUS is None and not os.environ.get("CI"),
                                 reason="prometheus is not installed (make tools installs it)")]

CANARY_ERROR_RATIO = (
    '(sum(increase(modelgate_requests_total{namespace="{{namespace}}", version="{{version}}", '
    'code=~"5.."}[30s])) or vector(0)) / sum(increase(modelgate_requests_total{'
    'namespace="{{namespace}}", version="{{version}}"}[30s]))')


@pytest.fixture(scope="module")
def prometheus(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[prom.Prometheus]:
    with prom.running(Path(tmp_path_factory.mktemp("prometheus")), sandbox.pods) as server:
        yield server


def analysis(address: str, **overrides: Any) -> dict[str, Any]:
    """The sandbox's quick analysis, from Prometheus, with a custom metric beside the
    built-in ones."""
    return {"interval": "2s", "minSamples": 50, "maxDuration": "5m",
            "providerErrorLimit": 100,
            "provider": {"type": "prometheus", "address": address, "timeout": "1s"},
            "metrics": [
                {"name": "error-rate", "type": "errorRate", "tolerance": 0.03},
                {"name": "latency-p90", "type": "latency", "quantile": 0.9, "tolerance": 0.5},
                {"name": "prediction-distribution", "type": "predictionDistribution",
                 "tolerance": 0.2},
                {"name": "canary-error-ratio", "type": "prometheus", "query": CANARY_ERROR_RATIO,
                 "thresholdRange": {"max": 0.05}}],
            **overrides}


def ready_pods(sandbox: Sandbox, name: str) -> list[PodAddress]:
    return Cluster(sandbox.api).serving_pods(NAMESPACE, name).ready


def canary_in_prometheus(prometheus: prom.Prometheus, name: str) -> Any:
    return lambda: prometheus.query(
        f'modelgate_model_info{{pod=~"{name}-canary-.*"}}')


# --- rollouts decided from Prometheus ---------------------------------------------------------

def test_prometheus_stopped_mid_analysis_holds_and_a_good_canary_is_promoted_once_it_is_back(
        sandbox: Sandbox, prometheus: prom.Prometheus, name: str) -> None:
    # minSamples high enough that the analysis is still collecting when Prometheus goes
    deploy(sandbox, name, "v1", rate=40, serving={"replicas": 2, "image": "sandbox"},
           rollout={"steps": [{"setWeight": 50}, {"analysis": {}}]},
           analysis=analysis(prometheus.url, minSamples=150))
    sandbox.set_model(name, "v2")
    sandbox.wait(name, lambda s: any(m["canary"]["samples"] > 0 for m in
                                     (s.get("analysis") or {}).get("metrics", [])),
                 timeout=60, what="an analysis with canary samples from Prometheus")

    prometheus.stop()
    try:
        down = sandbox.wait(name, lambda s: (s.get("analysis") or {}).get("metrics", [{}])[0]
                            .get("verdict") == "error", timeout=30,
                            what="an analysis that could not reach Prometheus")
        sandbox.wait_ticks(6)  # three analysis intervals without Prometheus
        held = sandbox.status(name)
    finally:
        prometheus.start()

    for status in (down, held):
        assert status["phase"] == "Progressing", status["message"]
        assert status["canary"]["version"] == "v2"
        assert status["analysis"]["decision"] == "continue"
        assert "the metric provider failed" in status["analysis"]["metrics"][0]["reason"]
        assert prometheus.url in status["analysis"]["metrics"][0]["reason"]
    assert "RolledBack" not in sandbox.event_reasons(name)

    status = sandbox.wait(name, healthy("v2"), timeout=120)
    assert status["history"][-1]["outcome"] == "Promoted"
    record = {m["name"]: m for m in status["analysis"]["metrics"]}
    assert {m["verdict"] for m in record.values()} == {"pass"}
    assert record["error-rate"]["canary"]["samples"] >= 150
    assert record["canary-error-ratio"]["canary"]["value"] <= 0.05


def test_an_error_regression_is_rolled_back_from_prometheus_metrics(
        sandbox: Sandbox, prometheus: prom.Prometheus, name: str) -> None:
    deploy(sandbox, name, "v1", rate=40, serving={"replicas": 2, "image": "sandbox"},
           rollout={"steps": [{"setWeight": 50}, {"analysis": {}}]},
           analysis=analysis(prometheus.url))
    sandbox.set_model(name, "v3")  # fails a third of its requests

    status = sandbox.wait(name, phase("RolledBack"), timeout=120)

    assert status["analysis"]["decision"] == "rollback"
    failed = {m["name"] for m in status["analysis"]["metrics"] if m["verdict"] == "fail"}
    assert failed & {"error-rate", "canary-error-ratio"}
    assert status["rejected"][-1]["version"] == "v3"
    assert status["stable"]["version"] == "v1"


@pytest.fixture(scope="module")
def held_canary(sandbox: Sandbox, prometheus: prom.Prometheus) -> Iterator[str]:
    """A ModelDeployment holding a v2 canary beside v1 (a pause step: the steps never end;
    onFailure: pause), both arms scraped by Prometheus; shared by the tests below to spare
    the machine a rollout each."""
    md = "prom-held"
    deploy(sandbox, md, "v1", rate=40, serving={"replicas": 2, "image": "sandbox"},
           rollout={"steps": [{"setWeight": 50}, {"pause": {}}], "onFailure": "pause"})
    sandbox.set_model(md, "v2")
    eventually(lambda: len(ready_pods(sandbox, md)) == 2 and canary_in_prometheus(
        prometheus, md)(), timeout=60, what="a canary scraped by Prometheus")
    yield md
    with contextlib.suppress(Exception):
        sandbox.delete(md)


def test_queries_that_cannot_be_used_are_reported_by_metric_and_field_and_never_roll_back(
        sandbox: Sandbox, prometheus: prom.Prometheus, held_canary: str) -> None:
    info = 'modelgate_model_info{namespace="{{namespace}}", version="{{version}}"}'
    broken = {
        "unparsable": f"sum({info}",
        "several-series": 'modelgate_model_info{namespace="{{namespace}}", pod=~"{{name}}-.*"}',
        "not-a-number": f"sum({info}) * 0 / 0",
        "infinite": f"sum({info}) / 0",
    }
    body = sandbox.get(held_canary)
    # the held canary's analysis, now from Prometheus with these queries only, with
    # onInconclusive: rollback and a maxDuration long past
    body["spec"]["analysis"] = analysis(
        prometheus.url, onInconclusive="rollback", maxDuration="4s",
        metrics=[{"name": metric, "type": "prometheus", "query": query,
                  "thresholdRange": {"min": 0}} for metric, query in broken.items()])
    sandbox.apply(body)

    status = sandbox.wait(held_canary, lambda s: {
        m["name"]: m["verdict"] for m in (s.get("analysis") or {}).get("metrics", [])}
        == dict.fromkeys(broken, "error"), timeout=60, what="every broken query reported")
    reasons = {m["name"]: m["reason"] for m in status["analysis"]["metrics"]}
    for index, metric in enumerate(broken):
        assert reasons[metric].startswith(
            f"metric {metric} (spec.analysis.metrics[{index}].query): "), reasons[metric]
    assert "Prometheus refused the query (bad_data)" in reasons["unparsable"]
    assert re.search(r"returned \d series where one number is expected",
                     reasons["several-series"])
    assert "returned NaN" in reasons["not-a-number"]
    assert "returned +Inf" in reasons["infinite"]
    sandbox.wait_ticks(4)  # two more analyses: the same reasons, no new Events
    events = [e["message"] for e in sandbox.events(held_canary)
              if e["reason"] == "MetricQueryFailed"]
    for metric in broken:
        assert sum(f"metric {metric} (spec.analysis" in message for message in events) == 1
    # past maxDuration with onInconclusive: rollback, unusable queries never roll back
    held = sandbox.status(held_canary)
    assert held["phase"] == "Paused", held["message"]
    assert held["canary"]["version"] == "v2"
    assert "RolledBack" not in sandbox.event_reasons(held_canary)


# --- the same verdict from Prometheus as from the pods -------------------------------------

@pytest.mark.parametrize(("version", "expected"), [("v2", "promote"), ("v3", "rollback")])
def test_prometheus_and_the_pod_scrape_reach_the_same_verdict_on_the_same_traffic(
        sandbox: Sandbox, prometheus: prom.Prometheus, held_canary: str, name: str,
        version: str, expected: str) -> None:
    if version == "v2":
        name = held_canary
    else:  # the operator holds this canary too (a pause step; onFailure: pause)
        deploy(sandbox, name, "v1", rate=40, serving={"replicas": 2, "image": "sandbox"},
               rollout={"steps": [{"setWeight": 50}, {"pause": {}}], "onFailure": "pause"})
        sandbox.set_model(name, version)
        eventually(lambda: len([p for p in ready_pods(sandbox, name) if p.role == "canary"])
                   == 1 and canary_in_prometheus(prometheus, name)(), timeout=60,
                   what="the canary serving and scraped by Prometheus")
    body = sandbox.get(name)
    built_in = analysis(prometheus.url, minSamples=100)
    built_in["metrics"] = built_in["metrics"][:3]  # the pod scrape cannot answer a query
    checks = api.parse({**body, "spec": {**body["spec"], "analysis": built_in}}).analysis
    target = Target(namespace=NAMESPACE, name=name, stable_version="v1",
                    canary_version=version, interval_seconds=2, metrics=checks.metrics)
    providers = {"pods": PodScrapeProvider(timeout=2),
                 "prometheus": PrometheusProvider(prometheus.url, timeout=2)}
    windows = {key: Window() for key in providers}
    decided: dict[str, Any] = {}
    started = time.monotonic()
    deadline = started + 90 * TIMEOUT_SCALE
    while len(decided) < 2 and time.monotonic() < deadline:
        t = time.monotonic() - started
        pods = ready_pods(sandbox, name)
        for key, provider in providers.items():
            result = provider.collect(pods, 8080, t, target=target)
            assert result.error is None, (key, result.error)
            windows[key] = windows[key].add(t, result.scrapes)
            record = judge(checks, windows[key].observation(t), t, explain=False)
            if key not in decided and record.decision is not AnalysisDecision.CONTINUE:
                decided[key] = record
        time.sleep(1)  # pacing: one look a second, as an analysis interval would

    assert {key: record.decision.value for key, record in decided.items()} == \
        {"pods": expected, "prometheus": expected}
    if expected == "rollback":
        verdicts = {key: {m.name: m.verdict.value for m in record.metrics}
                    for key, record in decided.items()}
        assert verdicts["pods"]["error-rate"] == verdicts["prometheus"]["error-rate"] == "fail"
    # the same counts at the same look (read up to a scrape interval apart; the two may have
    # decided at different looks, so their deciding records are not comparable)
    last = {key: judge(checks, windows[key].observation(t), t, explain=False)
            for key in providers}
    samples = {key: next(m.canary.samples for m in record.metrics if m.name == "error-rate")
               for key, record in last.items()}
    assert samples["prometheus"] > 0
    assert abs(samples["pods"] - samples["prometheus"]) <= 0.5 * max(samples.values())


# --- provider behaviour: cache, timeouts, authentication --------------------------------------

def target_of(name: str, *custom: str, compared: str | None = None) -> Target:
    metrics = (*api.default_metrics(10),
               MetricSpec(name="accuracy", type=MetricType.ACCURACY, tolerance=0.02),
               *(MetricSpec(name=f"custom-{index}", type=MetricType.PROMETHEUS, query=query,
                            threshold=ThresholdRange(minimum=0))
                 for index, query in enumerate(custom)),
               *([MetricSpec(name="versus-stable", type=MetricType.PROMETHEUS, query=compared,
                             tolerance=0)] if compared else []))
    return Target(namespace=NAMESPACE, name=name, stable_version="v1", canary_version="v2",
                  interval_seconds=2, metrics=metrics)


def test_a_round_makes_one_query_for_the_built_in_checks_and_one_per_distinct_custom_query(
        sandbox: Sandbox, prometheus: prom.Prometheus, held_canary: str) -> None:
    pods = ('sum(modelgate_model_info{namespace="{{namespace}}", pod=~"{{name}}-.*", '
            'version="{{version}}"})')  # the pods of the arm's version: one each
    provider = PrometheusProvider(prometheus.url, timeout=2)
    target = target_of(held_canary, pods, pods, "vector(1)", compared=pods)

    result = provider.collect(ready_pods(sandbox, held_canary), 8080, 1.0, target=target)

    assert result.error is None, result.error
    # four built-in checks in one query; four custom queries in three: the canary's `pods`
    # once for three metrics, vector(1), and `pods` for stable's version
    assert len(provider.queries) == 4
    assert 'version="v2"' in provider.queries[1]
    assert 'version="v1"' in provider.queries[-1]
    assert result.custom_values == {"custom-0": 1.0, "custom-1": 1.0, "custom-2": 1.0,
                                    "versus-stable": 1.0}
    assert result.stable_values == {"versus-stable": 1.0}
    assert {scrape.role.value for scrape in result.scrapes} == {"stable", "canary"}


def test_a_prometheus_that_does_not_answer_in_time_is_a_provider_error_naming_the_timeout(
        sandbox: Sandbox, held_canary: str) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        pods = ready_pods(sandbox, held_canary)
        started = time.monotonic()
        result = PrometheusProvider(address, timeout=0.5).collect(
            pods, 8080, 1.0, target=target_of(held_canary))
    assert time.monotonic() - started < 0.5 + TIMEOUT_SCALE  # the deadline, and a busy CPU
    assert result.error == f"Prometheus at {address}: no answer within 0.5 s (provider.timeout)"


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    ca_key, ca, key, csr, cert = (directory / n for n in (
        "ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    run = lambda *args: subprocess.run(["openssl", *args], check=True,  # noqa: E731
                                       capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
        str(ca), "-days", "1", "-subj", "/CN=modelgate test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")
    extensions = directory / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(extensions))
    return ca, cert, key


def test_https_prometheus_is_trusted_through_the_operators_ca_bundle(
        sandbox: Sandbox, held_canary: str, tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path)
    web = {"tls_server_config": {"cert_file": str(cert), "key_file": str(key)}}
    with prom.running(tmp_path / "tls", sandbox.pods, web_config=web) as secured:
        pods, target = ready_pods(sandbox, held_canary), target_of(held_canary)
        untrusted = PrometheusProvider(secured.url, timeout=2).collect(
            pods, 8080, 1.0, target=target)
        assert untrusted.error is not None
        assert "Certificate" in untrusted.error or "SSL" in untrusted.error
        trusted = PrometheusProvider(secured.url, timeout=2,
                                     auth=PrometheusAuth(ca_file=str(ca)))
        result = eventually(lambda: (lambda r: r if r.error is None else None)(
            trusted.collect(pods, 8080, 1.0, target=target)), timeout=30,
            what="both arms read over https")
        assert {scrape.role.value for scrape in result.scrapes} == {"stable", "canary"}


class _TokenGate:
    """A reverse proxy that passes a request to Prometheus only with the right bearer token
    (Prometheus itself checks no bearer tokens), and records the headers it saw."""

    def __init__(self, upstream: str, token: str) -> None:
        import http.server

        import requests

        gate = self
        self.seen: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                gate.seen.append(self.headers.get("Authorization", ""))
                if self.headers.get("Authorization") != f"Bearer {token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                answer = requests.post(upstream + self.path, data=body, timeout=5, headers={
                    "Content-Type": self.headers.get("Content-Type", "")})
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_bearer_token_is_sent_only_to_the_addresses_it_is_for_and_never_shown(
        sandbox: Sandbox, prometheus: prom.Prometheus, held_canary: str,
        tmp_path: Path) -> None:
    token = "s3cret-token-value"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    gate = _TokenGate(prometheus.url, token)
    try:
        pods, target = ready_pods(sandbox, held_canary), target_of(held_canary)
        other = PrometheusProvider(gate.url, timeout=2, auth=PrometheusAuth(
            token_file=str(token_file), token_addresses=("http://prometheus.example:9090",)))
        refused = other.collect(pods, 8080, 1.0, target=target)
        allowed = PrometheusProvider(gate.url + "/", timeout=2, auth=PrometheusAuth(
            token_file=str(token_file), token_addresses=(gate.url,)))
        result = allowed.collect(pods, 8080, 1.0, target=target)
    finally:
        gate.close()
    assert refused.error is not None
    assert "answered 401: not authorised" in refused.error
    assert gate.seen[0] == ""  # not sent to an address it is not for
    assert result.error is None, result.error
    assert gate.seen[-1] == f"Bearer {token}"
    assert token not in (refused.error or "")
