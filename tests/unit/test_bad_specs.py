"""Bad ModelDeployments, each rejected with the right field named.

Where the API server would reject one (schema or CEL, replayed offline by support.crd), the
table says so and checks it; modelgate.api must reject those too, naming the same field, since
the operator cannot assume every object passed a current schema. A case of layer "api" would
be a rule only modelgate.api checks; there are none now (docs/architecture.md lists what CEL
cannot express, and tests/unit/test_spec_parity.py holds the two verdicts equal).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from support import crd

from modelgate import api

BASE: dict[str, Any] = {
    "apiVersion": "modelgate.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": "default"},
    "spec": {"model": {"version": "2", "uri": "file:///models/iris/2/model.skops"}},
}
DIGEST = "a" * 64
OTHER_DIGEST = "b" * 64


def metric(**fields: Any) -> dict[str, Any]:
    return {"name": "check", "type": "errorRate", **fields}


@dataclass(frozen=True)
class Bad:
    id: str
    change: Callable[[dict[str, Any]], None]
    layer: str
    """Which layer rejects first: "schema", "cel" (the API server) or "api" (the operator)."""
    field: str
    """The field a good message names."""


def set_(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = obj
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return change


def both(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        for one in changes:
            one(obj)
    return change


def drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = obj
        for key in parents:
            node = node[key]
        del node[last]
    return change


prometheus_provider = set_("spec.analysis.provider",
                           {"type": "prometheus", "address": "http://prometheus:9090"})

TABLE = [
    # --- rejected by the OpenAPI schema -------------------------------------------------
    Bad("weight-above-100", set_("spec.rollout.steps", [{"setWeight": 140}]),
        "schema", "spec.rollout.steps[0].setWeight"),
    Bad("negative-replicas", set_("spec.serving.replicas", -1), "schema",
        "spec.serving.replicas"),
    Bad("duration-in-words", set_("spec.analysis.interval", "30 seconds"), "schema",
        "spec.analysis.interval"),
    Bad("short-digest", set_("spec.model.sha256", "abc123"), "schema", "spec.model.sha256"),
    Bad("uppercase-digest", set_("spec.model.sha256", "A" * 64), "schema", "spec.model.sha256"),
    Bad("pickle-format", set_("spec.model.format", "pickle"), "schema", "spec.model.format"),
    Bad("ftp-uri", set_("spec.model.uri", "ftp://models/iris.skops"), "schema",
        "spec.model.uri"),
    Bad("credentials-in-uri", both(
        set_("spec.model.uri", "https://reader:s3cret@models.example.com/m.skops"),
        set_("spec.model.sha256", DIGEST)), "schema", "spec.model.uri"),
    Bad("missing-version", drop("spec.model.version"), "schema", "spec.model.version"),
    Bad("missing-model", drop("spec.model"), "schema", "spec.model"),
    Bad("misspelt-field", set_("spec.rollout.stepweight", 10), "schema",
        "spec.rollout.stepweight"),
    Bad("alpha-zero", set_("spec.analysis.alpha", 0), "schema", "spec.analysis.alpha"),
    Bad("alpha-half", set_("spec.analysis.alpha", 0.5), "schema", "spec.analysis.alpha"),
    Bad("beta-zero", set_("spec.analysis.beta", 0), "schema", "spec.analysis.beta"),
    Bad("unknown-metric-type", set_("spec.analysis.metrics", [metric(type="drift")]), "schema",
        "spec.analysis.metrics[0].type"),
    Bad("privileged-port", set_("spec.serving.port", 80), "schema", "spec.serving.port"),
    Bad("quantile-one", set_("spec.analysis.metrics", [metric(type="latency", quantile=1.0)]),
        "schema", "spec.analysis.metrics[0].quantile"),
    Bad("quantity-in-words", set_("spec.serving.resources", {"requests": {"cpu": "lots"}}),
        "schema", "spec.serving.resources.requests.cpu"),
    Bad("env-name-digit", set_("spec.serving.env", [{"name": "1BAD", "value": "x"}]), "schema",
        "spec.serving.env[0].name"),
    Bad("version-with-space", set_("spec.model.version", "v 2"), "schema", "spec.model.version"),
    Bad("mesh-router", set_("spec.trafficRouter", {"type": "istio"}), "schema",
        "spec.trafficRouter.type"),
    Bad("negative-tolerance", set_("spec.analysis.metrics", [metric(tolerance=-0.1)]), "schema",
        "spec.analysis.metrics[0].tolerance"),
    Bad("empty-steps", set_("spec.rollout.steps", []), "schema", "spec.rollout.steps"),
    Bad("weight-as-string", set_("spec.rollout.steps", [{"setWeight": "10"}]), "schema",
        "spec.rollout.steps[0].setWeight"),
    # --- rejected by the CRD's CEL rules ------------------------------------------------
    Bad("weights-decrease", set_("spec.rollout.steps", [{"setWeight": 50}, {"setWeight": 20}]),
        "cel", "spec.rollout.steps"),
    Bad("step-with-two-kinds", set_("spec.rollout.steps", [{"setWeight": 10, "pause": {}}]),
        "cel", "spec.rollout.steps[0]"),
    Bad("step-with-no-kind", set_("spec.rollout.steps", [{}]), "cel", "spec.rollout.steps[0]"),
    Bad("https-without-digest", set_("spec.model.uri", "https://models.example.com/m.skops"),
        "cel", "spec.model.sha256"),
    Bad("joblib-untrusted", set_("spec.model.format", "joblib"), "cel", "spec.model.trusted"),
    Bad("baseline-same-version", set_("spec.baseline", {"version": "2", "uri": "file:///m/1"}),
        "cel", "spec.baseline.version"),
    Bad("baseline-http-without-digest",
        set_("spec.baseline", {"version": "1", "uri": "http://models/iris/1.skops"}),
        "cel", "spec.baseline.sha256"),
    Bad("steps-and-shorthand",
        both(set_("spec.rollout.steps", [{"setWeight": 10}]), set_("spec.rollout.stepWeight", 5)),
        "cel", "spec.rollout"),
    Bad("max-below-step-weight",
        both(set_("spec.rollout.stepWeight", 30), set_("spec.rollout.maxWeight", 20)),
        "cel", "spec.rollout.maxWeight"),
    Bad("duplicate-metric-names", set_("spec.analysis.metrics", [metric(), metric()]), "cel",
        "spec.analysis.metrics"),
    Bad("prometheus-metric-without-query",
        both(prometheus_provider,
             set_("spec.analysis.metrics", [metric(type="prometheus",
                                                   thresholdRange={"max": 1})])),
        "cel", "spec.analysis.metrics[0]"),
    Bad("query-on-error-rate", set_("spec.analysis.metrics", [metric(query="up")]), "cel",
        "spec.analysis.metrics[0]"),
    Bad("quantile-on-error-rate", set_("spec.analysis.metrics", [metric(quantile=0.9)]), "cel",
        "spec.analysis.metrics[0].quantile"),
    Bad("threshold-min-above-max",
        both(prometheus_provider,
             set_("spec.analysis.metrics", [metric(type="prometheus", query="up",
                                                   thresholdRange={"min": 5, "max": 1})])),
        "cel", "spec.analysis.metrics[0].thresholdRange"),
    Bad("prometheus-provider-without-address", set_("spec.analysis.provider.type", "prometheus"),
        "cel", "spec.analysis.provider.address"),
    Bad("prometheus-metric-with-pod-scrape",
        set_("spec.analysis.metrics", [metric(type="prometheus", query="up",
                                              thresholdRange={"max": 1})]),
        "cel", "spec.analysis.provider.type"),
    Bad("name-too-long", set_("metadata.name", "m" * 60), "cel", "metadata.name"),
    Bad("dotted-name", set_("metadata.name", "iris.v2"), "cel", "metadata.name"),
    Bad("digit-led-name", set_("metadata.name", "2iris"), "cel", "metadata.name"),
    Bad("env-value-and-value-from",
        set_("spec.serving.env", [{"name": "TOKEN", "value": "x",
                                   "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
        "cel", "spec.serving.env[0]"),
    # --- rules that need arithmetic on durations or quantities, or a look across sections:
    # once only modelgate.api's, now CEL rules of the CRD too (issue 21) ---------------------
    Bad("zero-interval", set_("spec.analysis.interval", "0s"), "cel", "spec.analysis.interval"),
    Bad("max-duration-below-interval",
        both(set_("spec.analysis.interval", "30s"), set_("spec.analysis.maxDuration", "10s")),
        "cel", "spec.analysis.maxDuration"),
    Bad("limit-below-request",
        set_("spec.serving.resources", {"requests": {"memory": "1Gi"},
                                        "limits": {"memory": "512Mi"}}),
        "cel", "spec.serving.resources.limits"),
    Bad("reserved-env-name", set_("spec.serving.env", [{"name": "MODELGATE_MODEL_URI",
                                                       "value": "file:///other"}]),
        "cel", "spec.serving.env[0].name"),
    Bad("baseline-same-file",
        both(set_("spec.model.sha256", DIGEST),
             set_("spec.baseline", {"version": "1", "uri": "file:///m/1", "sha256": DIGEST})),
        "cel", "spec.baseline.sha256"),
    Bad("analysis-before-any-traffic",
        set_("spec.rollout.steps", [{"analysis": {}}, {"setWeight": 50}]),
        "cel", "spec.rollout.steps"),
    Bad("error-rate-tolerance-above-one", set_("spec.analysis.metrics", [metric(tolerance=5)]),
        "cel", "spec.analysis.metrics[0].tolerance"),
    Bad("scrape-timeout-not-below-interval",
        both(set_("spec.analysis.interval", "10s"), set_("spec.analysis.provider.timeout", "10s")),
        "cel", "spec.analysis.provider.timeout"),
    Bad("unknown-query-variable",
        both(prometheus_provider,
             set_("spec.analysis.metrics", [metric(type="prometheus", query="up{pod='{{pod}}'}",
                                                   thresholdRange={"max": 1})])),
        "cel", "spec.analysis.metrics[0].query"),
    Bad("tolerance-and-threshold-on-prometheus-metric",
        both(prometheus_provider,
             set_("spec.analysis.metrics", [metric(type="prometheus", query="up", tolerance=0.1,
                                                   thresholdRange={"max": 1})])),
        "cel", "spec.analysis.metrics[0]"),
    Bad("prometheus-metric-with-neither-threshold-nor-tolerance",
        both(prometheus_provider,
             set_("spec.analysis.metrics", [metric(type="prometheus", query="up")])),
        "cel", "spec.analysis.metrics[0]"),
    Bad("gate-shorter-than-interval",
        set_("spec.rollout.steps", [{"setWeight": 10}, {"analysis": {"maxDuration": "5s"}}]),
        "cel", "spec.rollout.steps"),
    Bad("baseline-same-uri-no-digest",
        set_("spec.baseline", {"version": "1", "uri": "file:///models/iris/2/model.skops"}),
        "cel", "spec.baseline.uri"),
]


def bad_object(case: Bad) -> dict[str, Any]:
    obj = copy.deepcopy(BASE)
    case.change(obj)
    return obj


def test_the_table_is_large_and_covers_every_layer() -> None:
    assert len(TABLE) >= 25
    # "api" (admitted by the API server, refused by modelgate.api) is empty since the CRD
    # holds every rule CEL can express (tests/unit/test_spec_parity.py); it stays a layer.
    assert {case.layer for case in TABLE} >= {"schema", "cel"}
    assert len({case.id for case in TABLE}) == len(TABLE)


def test_the_base_object_is_valid_everywhere() -> None:
    assert crd.admit(BASE) == []
    api.parse(BASE)


@pytest.mark.parametrize("case", TABLE, ids=lambda case: case.id)
def test_bad_spec_is_rejected_by_the_right_layer_naming_the_field(case: Bad) -> None:
    obj = bad_object(case)
    admission = crd.admit(obj)
    if case.layer == "api":
        assert admission == [], "the API server would admit this; the table says api"
    else:
        layers = {problem.layer for problem in admission}
        assert layers == {case.layer}, admission
        assert any(case.field in problem.path or case.field in problem.message
                   for problem in admission), admission

    with pytest.raises(api.SpecError) as raised:
        api.parse(obj)
    fields = [problem.split(": ", 1)[0] for problem in raised.value.problems]
    assert any(field.startswith(case.field) for field in fields), raised.value.problems


def test_credentials_in_a_model_uri_are_refused_without_repeating_them() -> None:
    """The problems go to status and Events, which the tenant's readers may see."""
    for uri in ("https://reader:s3cret@models.example.com/m.skops",
                "http://s3cret@models.example.com/m.skops", "file://s3cret@host/m.skops"):
        obj = copy.deepcopy(BASE)
        obj["spec"]["model"].update(uri=uri, sha256=DIGEST)
        with pytest.raises(api.SpecError) as raised:
            api.parse(obj)
        assert any(p.startswith("spec.model.uri: holds credentials")
                   for p in raised.value.problems), raised.value.problems
        assert "s3cret" not in str(raised.value.problems)
