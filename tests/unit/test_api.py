"""modelgate.api: what a spec means once parsed, and how it reports what is wrong."""

from __future__ import annotations

import contextlib
import copy
from decimal import Decimal
from typing import Any

import pytest
from support import crd

from modelgate import api
from modelgate.core.types import (
    AnalysisGate,
    KeyRef,
    MetricType,
    ModelFormat,
    OnFailure,
    Pause,
    Promotion,
    SetWeight,
)


def resource(**spec: Any) -> dict[str, Any]:
    body = {"model": {"version": "2", "uri": "file:///models/iris/2.skops"}, **spec}
    return {"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml"}, "spec": body}


def problems_of(obj: dict[str, Any]) -> list[str]:
    with pytest.raises(api.SpecError) as raised:
        api.parse(obj)
    return raised.value.problems


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25), ("1.5h", 5400.0),
    ("2m30s", 150.0), ("0s", 0.0),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert api.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "5 m", "1d", "-5s", "s", "1m 30s"])
def test_parse_duration_rejects_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        api.parse_duration(text)


@pytest.mark.parametrize(("text", "value"), [
    ("500m", Decimal("0.5")), ("2", Decimal(2)), ("1Gi", Decimal(2) ** 30),
    ("256Mi", Decimal(256) * 2**20), ("1.5G", Decimal("1.5e9")), ("2e3", Decimal(2000)),
    ("100k", Decimal(100000)),
])
def test_parse_quantity(text: str, value: Decimal) -> None:
    assert api.parse_quantity(text) == value


def test_minimal_spec_gets_the_default_step_program() -> None:
    parsed = api.parse(resource())
    assert parsed.rollout.steps == (
        SetWeight(20), Pause(30.0), SetWeight(40), Pause(30.0), SetWeight(60), AnalysisGate())
    assert parsed.rollout.promotion is Promotion.AUTOMATIC
    assert parsed.rollout.on_failure is OnFailure.ROLLBACK


def test_shorthand_expands_to_weights_pauses_and_a_final_gate() -> None:
    parsed = api.parse(resource(rollout={"stepWeight": 25, "maxWeight": 60, "interval": "2m"}))
    assert parsed.rollout.steps == (
        SetWeight(25), Pause(120.0), SetWeight(50), Pause(120.0), SetWeight(60), AnalysisGate())


def test_shorthand_max_weight_alone_caps_the_default_step() -> None:
    parsed = api.parse(resource(rollout={"maxWeight": 10}))
    assert parsed.rollout.steps == (SetWeight(10), AnalysisGate())


def test_explicit_steps_parse_to_step_values() -> None:
    parsed = api.parse(resource(rollout={"steps": [
        {"setWeight": 10}, {"pause": {"duration": "1m"}}, {"analysis": {"maxDuration": "10m"}},
        {"setWeight": 50}, {"pause": {}}, {"analysis": {}}]}))
    assert parsed.rollout.steps == (
        SetWeight(10), Pause(60.0), AnalysisGate(600.0), SetWeight(50), Pause(None),
        AnalysisGate(None))


def test_model_name_defaults_to_the_object_name() -> None:
    assert api.parse(resource()).model_name == "iris"
    named = resource()
    named["spec"]["model"]["name"] = "iris-classifier"
    assert api.parse(named).model_name == "iris-classifier"


def test_no_metrics_means_the_built_in_defaults_at_the_analysis_min_samples() -> None:
    parsed = api.parse(resource(analysis={"minSamples": 250}))
    assert parsed.analysis.metrics_defaulted
    assert [(m.name, m.type, m.quantile, m.min_samples) for m in parsed.analysis.metrics] == [
        ("error-rate", MetricType.ERROR_RATE, None, 250),
        ("latency-p99", MetricType.LATENCY, 0.99, 250),
        ("prediction-distribution", MetricType.PREDICTION_DISTRIBUTION, None, 250),
    ]


def test_listed_metrics_replace_the_defaults_and_get_type_specific_tolerances() -> None:
    parsed = api.parse(resource(analysis={"metrics": [
        {"name": "acc", "type": "accuracy", "minSamples": 40},
        {"name": "p95", "type": "latency", "quantile": 0.95, "tolerance": 0.3}]}))
    accuracy, latency = parsed.analysis.metrics
    assert not parsed.analysis.metrics_defaulted
    assert (accuracy.tolerance, accuracy.min_samples) == (0.02, 40)
    assert (latency.quantile, latency.tolerance, latency.min_samples) == (0.95, 0.3, 100)


def test_env_and_resources_are_carried_over() -> None:
    parsed = api.parse(resource(serving={
        "env": [{"name": "A", "value": "1"},
                {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": 1, "memory": "1Gi"}}}))
    assert [(e.name, e.value, e.value_from) for e in parsed.serving.env] == [
        ("A", "1", None), ("T", None, KeyRef(kind="secret", name="s", key="k"))]
    assert parsed.serving.resources.requests == (("cpu", "250m"),)
    assert parsed.serving.resources.limits == (("cpu", "1"), ("memory", "1Gi"))


def test_joblib_is_accepted_when_marked_trusted() -> None:
    obj = resource()
    obj["spec"]["model"].update(format="joblib", trusted=True)
    assert api.parse(obj).model.format is ModelFormat.JOBLIB


def test_a_message_names_the_field_the_value_and_what_would_be_right() -> None:
    assert problems_of(resource(rollout={"steps": [{"setWeight": 140}]})) == [
        "spec.rollout.steps[0].setWeight: 140 is above 100"]
    assert problems_of(resource(analysis={"alpha": 0})) == [
        "spec.analysis.alpha: 0 must be above 0.0"]
    assert problems_of(resource(analysis={"beta": 0.6})) == [
        "spec.analysis.beta: 0.6 is above 0.5"]
    [message] = problems_of(resource(analysis={"interval": "half a minute"}))
    assert message.startswith("spec.analysis.interval: 'half a minute' is not valid")
    assert "30s" in message


def test_every_problem_is_reported_not_only_the_first() -> None:
    problems = problems_of(resource(
        serving={"replicas": -2, "port": 80},
        analysis={"alpha": 2, "interval": "0s"},
        rollout={"steps": [{"setWeight": 30}, {"setWeight": 10}]}))
    fields = sorted(problem.split(":")[0] for problem in problems)
    assert fields == ["spec.analysis.alpha", "spec.analysis.interval",
                      "spec.rollout.steps[1].setWeight", "spec.serving.port",
                      "spec.serving.replicas"]


def test_a_misspelt_field_is_named_with_the_fields_that_exist() -> None:
    [message] = problems_of(resource(serving={"replica": 3}))
    assert message.startswith("spec.serving.replica: is not a field of this object")
    assert "replicas" in message


@pytest.mark.parametrize("broken", [
    {"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelDeployment"},
    {"metadata": {"name": "x"}, "spec": "model: v2"},
    {"metadata": {"name": "x"}, "spec": {"model": ["v2"]}},
    {"metadata": "x", "spec": {}},
])
def test_structurally_broken_objects_raise_spec_error(broken: dict[str, Any]) -> None:
    with pytest.raises(api.SpecError):
        api.parse(broken)


JUNK: list[Any] = [None, "junk", -1, 10**9, 0.5, True, [], [1, "x"], {}, {"x": 1}, float("nan")]


def _leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [path] + [p for k, v in value.items() for p in _leaf_paths(v, (*path, k))]
    if isinstance(value, list):
        return [path] + [p for i, v in enumerate(value) for p in _leaf_paths(v, (*path, i))]
    return [path]


def test_no_junk_anywhere_in_the_full_example_crashes_the_parser() -> None:
    full = crd.load_yaml(crd.ROOT / "manifests" / "examples" / "full.yaml")
    checked = 0
    for path in _leaf_paths(full["spec"]):
        for junk in JUNK:
            obj = copy.deepcopy(full)
            node = obj["spec"]
            for key in path[:-1]:
                node = node[key]
            if path:
                node[path[-1]] = junk
            else:
                obj["spec"] = junk
            with contextlib.suppress(api.SpecError):
                api.parse(obj)
            checked += 1
    assert checked > 1000


def test_the_fields_the_api_knows_are_the_fields_the_crd_declares() -> None:
    declared = {}

    def walk(node: dict[str, Any], path: str) -> None:
        if "properties" in node:
            declared[path] = set(node["properties"])
            for key, prop in node["properties"].items():
                walk(prop, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[*]")

    walk(crd.schema()["properties"]["spec"], "spec")
    assert {path: set(fields) for path, fields in api.FIELDS.items()} == declared
