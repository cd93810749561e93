"""The prometheus provider's pure parts, and the operator accepting every example the CRD
accepts. Its behaviour against a real Prometheus is in tests/operator/test_prometheus.py."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from support import crd
from support.cluster import FakeCluster

from modelgate import api
from modelgate.core.state import ScrapeResult
from modelgate.providers import PrometheusAuth, Target, provider_for
from modelgate.providers.prometheus import (
    Answer,
    PrometheusProvider,
    QueryError,
    _one_number,
    prometheus_duration,
    render,
    serving_query,
)
from modelgate.providers.static import StaticProvider
from modelgate.reconcile import reconcile
from modelgate.settings import OperatorSettings, from_env

TARGET = Target(namespace="ml", name="churn", stable_version="1", canary_version="2",
                interval_seconds=30)


@pytest.mark.parametrize("path", crd.EXAMPLES, ids=lambda p: p.name)
def test_every_example_the_crd_accepts_the_operator_accepts_and_runs(path: Any) -> None:
    raw = crd.load_yaml(path)
    if crd.admit(raw):
        pytest.skip("the CRD refuses this example")
    body = {**crd.apply_defaults(raw)}
    body["metadata"] = {"namespace": "default", **body["metadata"], "uid": "u1",
                        "generation": 1}
    spec = api.parse(body)
    provider_for(spec.analysis.provider, timeout_cap=5, concurrency=4)  # never refuses
    registry_example = spec.model.uri.startswith("models:/")
    if registry_example:
        # runs against a real MLflow in tests/operator/test_mlflow.py; here, with nothing
        # listening, it must hold for that reason and create nothing
        body["spec"]["registry"]["trackingUri"] = "http://127.0.0.1:9"
    cluster = FakeCluster(body)
    written = reconcile(cluster, OperatorSettings(), body, now=1_000_000.0,
                        provider_factory=provider_for).status
    assert written is not None
    if registry_example:
        assert {c["type"]: c["reason"] for c in written["conditions"]}["ModelResolved"] == \
            "RegistryUnavailable"
        assert cluster.deployments == {}
        return
    assert written["phase"] != "Degraded", written["message"]


def test_the_prometheus_provider_is_built_with_the_operators_credentials() -> None:
    spec = api.parse(crd.load_yaml(crd.ROOT / "manifests" / "examples" / "full.yaml"))
    auth = PrometheusAuth(token_file="/var/run/prometheus/token",
                          token_addresses=("http://prometheus.monitoring:9090",))
    provider = provider_for(spec.analysis.provider, timeout_cap=2, concurrency=4, auth=auth)
    assert isinstance(provider, PrometheusProvider)
    assert (provider.address, provider.timeout, provider.auth) == \
        ("http://prometheus.monitoring:9090", 2, auth)


def test_operator_settings_read_the_prometheus_credentials_from_the_environment() -> None:
    settings = from_env({
        "MODELGATE_OPERATOR_PROMETHEUS_TOKEN_FILE": "/var/run/prometheus/token",
        "MODELGATE_OPERATOR_PROMETHEUS_TOKEN_ADDRESSES": "https://a:9090, https://b/prom",
        "MODELGATE_OPERATOR_PROMETHEUS_CA_FILE": "/etc/prometheus-ca/ca.crt"})
    assert settings.prometheus_token_file == "/var/run/prometheus/token"
    assert settings.prometheus_token_addresses == ("https://a:9090", "https://b/prom")
    assert settings.prometheus_ca_file == "/etc/prometheus-ca/ca.crt"


def test_a_query_template_gets_the_canarys_values() -> None:
    query = ('sum(rate(x{namespace="{{namespace}}", pod=~"{{ name }}-canary-.*", '
             'version="{{version}}"}[{{interval}}]))')
    assert render(query, TARGET) == \
        'sum(rate(x{namespace="ml", pod=~"churn-canary-.*", version="2"}[30s]))'
    assert prometheus_duration(2.5) == "2500ms"
    with pytest.raises(QueryError, match=r"unknown variable \{\{pod\}\}"):
        render("up{pod='{{pod}}'}", TARGET)


def test_the_built_in_query_reads_every_counted_series_of_exactly_the_given_pods() -> None:
    query = serving_query("ml", ["churn-stable-1", "churn-canary-2.x"])
    assert 'namespace="ml"' in query
    assert r"pod=~`churn-stable-1|churn-canary-2\.x`" in query
    for series in ("requests_total", "request_duration_seconds_bucket", "predictions_total",
                   "prediction_value_bucket", "feedback_total", "model_info"):
        assert series in query
    assert query.startswith("max by (__name__, pod, version, code, le, class, outcome, sha256)")


@pytest.mark.parametrize(("answer", "expected"), [
    (Answer("vector", [{"metric": {}, "value": [1, "0.25"]}]), 0.25),
    (Answer("scalar", [1, "3"]), 3.0),
    (Answer("vector", []), None),
])
def test_a_custom_query_gives_one_number_or_none(answer: Answer, expected: float | None) -> None:
    assert _one_number(answer) == expected


@pytest.mark.parametrize(("answer", "why"), [
    (Answer("vector", [{"metric": {"pod": "a"}, "value": [1, "1"]},
                       {"metric": {"pod": "b"}, "value": [1, "2"]}]),
     "returned 2 series where one number is expected"),
    (Answer("vector", [{"metric": {}, "value": [1, "NaN"]}]), "returned NaN"),
    (Answer("vector", [{"metric": {}, "value": [1, "-Inf"]}]), "returned -Inf"),
    (Answer("matrix", []), "returned a matrix, not one number"),
])
def test_a_custom_query_answer_that_is_not_one_finite_number_is_the_querys_error(
        answer: Answer, why: str) -> None:
    with pytest.raises(QueryError, match=why):
        _one_number(answer)


BODY: dict[str, Any] = {
    "apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": "default", "uid": "u1", "generation": 1},
    "spec": {"model": {"version": "2", "uri": "file:///models/iris/2/model.skops"},
             "analysis": {"provider": {"type": "prometheus",
                                       "address": "http://prometheus:9090"}}},
}


@pytest.mark.parametrize(("address", "why"), [
    ("http://:9090", "names no host"),
    ("http://prometheus:ninety", "is not a valid URL"),
    ("https://reader:s3cret@prometheus:9090", "carries credentials"),
    ("http://prometheus:9090/?x=1", "has a query or fragment"),
])
def test_a_malformed_prometheus_address_is_refused_naming_the_field(address: str,
                                                                   why: str) -> None:
    body = copy.deepcopy(BODY)
    body["spec"]["analysis"]["provider"]["address"] = address
    # the CRD refuses these too (its pattern names the field), so kubectl apply stops them;
    # the operator still refuses an object that got past a CRD without that rule
    problems = crd.admit(body)
    assert [problem.path for problem in problems] == ["spec.analysis.provider.address"]
    with pytest.raises(api.SpecError) as raised:
        api.parse(body)
    [problem] = raised.value.problems
    assert problem.startswith("spec.analysis.provider.address: ")
    assert why in problem
    assert "s3cret" not in problem


def test_an_unknown_template_variable_is_an_invalid_spec_naming_metric_and_field() -> None:
    body = copy.deepcopy(BODY)
    body["spec"]["analysis"]["metrics"] = [
        {"name": "error-rate", "type": "errorRate"},
        {"name": "queue", "type": "prometheus", "query": "max(q{pod=~'{{pod}}'})",
         "thresholdRange": {"max": 5}}]
    written = reconcile(FakeCluster(body), OperatorSettings(), body, now=1_000_000.0,
                        provider_factory=StaticProvider(ScrapeResult()).factory).status
    assert written is not None
    assert written["phase"] == "Degraded"
    assert "spec.analysis.metrics[1].query: of metric 'queue' uses unknown variable {{pod}}" \
        in written["message"]



def test_the_podmonitor_selects_the_serving_pods_the_operator_makes_on_their_port() -> None:
    from modelgate.core import manifests

    monitor = crd.load_yaml(crd.ROOT / "manifests" / "monitoring" / "podmonitor.yaml")
    spec = api.parse(BODY)
    pod = manifests.deployment(spec, manifests.Owner("iris", "default", "u1"), "canary",
                               spec.model, 1)["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {port["name"] for port in pod["spec"]["containers"][0]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]} <= ports
    assert set(monitor["spec"]["podTargetLabels"]) <= labels.keys()


def test_the_readmes_prometheus_example_is_accepted_by_the_crd_and_the_operator() -> None:
    import re

    import yaml

    readme = (crd.ROOT / "README.md").read_text()
    blocks = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", readme,
                                                            re.DOTALL)
              if "type: prometheus" in block and "kind: ModelDeployment" in block]
    assert blocks, "the README shows a ModelDeployment with the prometheus provider"
    for body in blocks:
        assert crd.admit(body) == []
        spec = api.parse(body)
        assert isinstance(provider_for(spec.analysis.provider, timeout_cap=5, concurrency=4),
                          PrometheusProvider)


def test_a_prometheus_metric_with_a_tolerance_is_compared_with_stable() -> None:
    body = copy.deepcopy(BODY)
    body["spec"]["analysis"]["metrics"] = [
        {"name": "p95-vs-stable", "type": "prometheus", "tolerance": 0.05,
         "query": "histogram_quantile(0.95, sum by (le) (rate(modelgate_request_duration_"
                  "seconds_bucket{version='{{version}}'}[5m])))"}]
    assert crd.admit(body) == []
    [metric] = api.parse(body).analysis.metrics
    assert (metric.tolerance, metric.threshold) == (0.05, None)
    assert render(metric.query or "", TARGET, stable=True).endswith("{version='1'}[5m])))")
