"""modelgate.api applies exactly the CRD's defaults.

The API server fills defaults from the CRD before the operator sees an object; the operator
(and `modelgate validate`) may also read objects that were never defaulted. Both must mean the
same thing, so for every field with a CRD default: leaving it out, and writing the CRD's
default, parse to the same spec; and writing another value parses to a different one, which
shows the field is really read.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from support import crd

from modelgate import api

# A spec with every optional section present, so every nested default applies.
BASE: dict[str, Any] = {
    "apiVersion": "modelgate.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "iris"},
    "spec": {
        "model": {"version": "2", "uri": "file:///models/iris/2.skops"},
        "baseline": {"version": "1", "uri": "file:///models/iris/1.skops"},
    },
}


def defaulted_fields() -> list[tuple[str, Any, dict[str, Any]]]:
    """(dotted path, CRD default, schema node) for every leaf field with a default."""
    found = []

    def walk(node: dict[str, Any], path: str) -> None:
        for key, prop in node.get("properties", {}).items():
            child = f"{path}.{key}" if path else key
            if "default" in prop and prop.get("type") != "object":
                found.append((child, prop["default"], prop))
            walk(prop, child)

    walk(crd.schema(), "")
    return found


def other_value(default: Any, node: dict[str, Any]) -> Any:
    """A valid value different from the default."""
    if "enum" in node:
        return next(value for value in node["enum"] if value != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default * 2
    if isinstance(default, str) and api.DURATION_RE.match(default):
        return f"{api.parse_duration(default) * 2 * 1000:.0f}ms"
    return default + "-other"


def set_path(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    result = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node = result
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return result


FIELDS = defaulted_fields()
# Fields whose other value is only valid with a companion field set too.
COMPANIONS: dict[str, dict[str, Any]] = {
    "spec.model.format": {"spec.model.trusted": True},
    "spec.baseline.format": {"spec.baseline.trusted": True},
    "spec.analysis.provider.type": {"spec.analysis.provider.address": "http://prometheus:9090"},
}
# Fields with no valid other value yet (a one-member enum).
CHANGEABLE = [field for field in FIELDS if len(field[2].get("enum", [0, 1])) > 1]


def test_the_crd_defaults_many_fields() -> None:
    assert len(FIELDS) >= 20


def test_api_fills_every_crd_default_and_nothing_else() -> None:
    assert api.parse(BASE) == api.parse(crd.apply_defaults(BASE))


@pytest.mark.parametrize("path", crd.EXAMPLES, ids=lambda p: p.name)
def test_examples_mean_the_same_before_and_after_api_server_defaulting(path: Any) -> None:
    raw = crd.load_yaml(path)
    assert api.parse(raw) == api.parse(crd.apply_defaults(raw))


@pytest.mark.parametrize(("path", "default", "node"), FIELDS, ids=[f[0] for f in FIELDS])
def test_absent_field_means_the_crd_default(path: str, default: Any,
                                            node: dict[str, Any]) -> None:
    assert crd.admit(set_path(BASE, path, default)) == []
    assert api.parse(set_path(BASE, path, default)) == api.parse(BASE)


@pytest.mark.parametrize(("path", "default", "node"), CHANGEABLE,
                         ids=[f[0] for f in CHANGEABLE])
def test_another_value_changes_the_parsed_spec(path: str, default: Any,
                                               node: dict[str, Any]) -> None:
    changed = set_path(BASE, path, other_value(default, node))
    for companion, value in COMPANIONS.get(path, {}).items():
        changed = set_path(changed, companion, value)
    assert crd.admit(changed) == []
    assert api.parse(changed) != api.parse(BASE)
