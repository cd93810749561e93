"""The CRD (docs/architecture.md, contract 2): a schema that teaches the API, examples that
pass it."""

from __future__ import annotations

from typing import Any

import pytest
from support import crd

from modelgate import api
from modelgate.core import resource


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for key, prop in node.get("properties", {}).items():
        found += _walk(prop, f"{path}.{key}" if path else key)
    if isinstance(node.get("items"), dict):
        found += _walk(node["items"], f"{path}[*]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}{{*}}")
    return found


def test_crd_names_follow_the_contract() -> None:
    spec = crd.crd()["spec"]
    assert crd.crd()["metadata"]["name"] == "modeldeployments.modelgate.dev"
    assert spec["group"] == resource.GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == resource.KIND
    assert spec["names"]["plural"] == resource.PLURAL
    assert set(spec["names"]["shortNames"]) == {"md", "mdep"}
    assert "modelgate" in spec["names"]["categories"]
    [version] = spec["versions"]
    assert version["name"] == resource.VERSION
    assert version["served"]
    assert version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns_show_phase_ready_stable_canary_weight_age_and_wide_message() -> None:
    columns = crd.crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["jsonPath"], c.get("priority", 0)) for c in columns] == [
        ("Phase", ".status.phase", 0),
        ("Ready", '.status.conditions[?(@.type=="Ready")].status', 0),
        ("Stable", ".status.stable.version", 0),
        ("Canary", ".status.canary.version", 0),
        ("Weight", ".status.canary.weight", 0),
        ("Age", ".metadata.creationTimestamp", 0),
        ("Message", ".status.message", 1),
    ]


def test_status_carries_the_contract_fields() -> None:
    status = crd.schema()["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == [
        "Pending", "Progressing", "Paused", "Healthy", "RolledBack", "Degraded"]
    for field in ("observedGeneration", "stable", "canary", "conditions", "analysis"):
        assert field in status, field
    assert "weight" in status["canary"]["properties"]
    condition = status["conditions"]["items"]["properties"]
    assert set(condition) >= {"type", "status", "reason", "message", "lastTransitionTime",
                              "observedGeneration"}
    record = status["analysis"]["properties"]["metrics"]["items"]["properties"]
    assert set(record) >= {"name", "verdict", "stable", "canary", "statistic", "effect",
                           "reason"}


def test_every_field_is_typed_and_described_so_kubectl_explain_teaches_the_api() -> None:
    missing = []
    for path, node in _walk(crd.schema()):
        if path in ("", "metadata") or path.endswith("{*}"):
            continue
        if "type" not in node:
            missing.append(f"{path}: no type")
        if not node.get("description") and not path.endswith("[*]"):  # lists describe items
            missing.append(f"{path}: no description")
    assert missing == []


def test_phase_enum_matches_the_core_enum() -> None:
    from modelgate.core.types import Phase

    status = crd.schema()["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == [phase.value for phase in Phase]


def test_arrays_and_strings_under_cel_rules_are_bounded_so_the_api_server_accepts_cost() -> None:
    # The API server rejects a CRD whose CEL rules have an unbounded estimated cost: every
    # list iterated by a rule must have maxItems.
    spec = crd.schema()["properties"]["spec"]
    for path, node in _walk(spec, "spec"):
        if node.get("type") == "array":
            assert "maxItems" in node, path


@pytest.mark.parametrize("path", crd.EXAMPLES, ids=lambda p: p.name)
def test_example_is_admitted_by_schema_and_cel(path: Any) -> None:
    assert crd.admit(crd.load_yaml(path)) == []


@pytest.mark.parametrize("path", crd.EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_by_the_api(path: Any) -> None:
    parsed = api.parse(crd.load_yaml(path))
    assert parsed.name == crd.load_yaml(path)["metadata"]["name"]


def test_examples_cover_the_interesting_policies() -> None:
    names = {path.name for path in crd.EXAMPLES}
    assert names >= {"minimal.yaml", "full.yaml", "manual-promotion.yaml",
                     "accuracy-gate.yaml", "prometheus-metric.yaml", "baseline.yaml"}


def test_minimal_example_lists_no_metrics_and_gets_the_built_in_defaults() -> None:
    minimal = crd.load_yaml(crd.ROOT / "manifests" / "examples" / "minimal.yaml")
    assert "metrics" not in minimal["spec"].get("analysis", {})
    parsed = api.parse(minimal)
    assert parsed.analysis.metrics_defaulted
    assert [m.type.value for m in parsed.analysis.metrics] == [
        "errorRate", "latency", "predictionDistribution"]
    assert parsed.analysis.alpha == 0.01


def test_full_example_sets_every_spec_field() -> None:
    full = crd.load_yaml(crd.ROOT / "manifests" / "examples" / "full.yaml")
    unset = []

    def visit(node: dict[str, Any], values: list[Any], path: str) -> None:
        """values: every instance of this field in the example (list items are flattened),
        so a field shown in any one of them counts as shown."""
        if node.get("type") == "array":
            visit(node["items"], [item for value in values for item in value], path + "[]")
        elif node.get("type") == "object" and "properties" in node:
            for key, prop in node["properties"].items():
                children = [value[key] for value in values if key in value]
                if children:
                    visit(prop, children, f"{path}.{key}")
                else:
                    unset.append(f"{path}.{key}")

    visit(crd.schema()["properties"]["spec"], [full["spec"]], "spec")
    # fields that are alternatives to ones the full example shows
    alternatives = {"spec.rollout.stepWeight", "spec.rollout.maxWeight", "spec.rollout.interval",
                    "spec.analysis.metrics[].minSamples"}
    assert [path for path in unset if path not in alternatives] == []
