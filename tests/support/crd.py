"""What the Kubernetes API server does with a ModelDeployment, done offline.

In order, as the API server does on create: structural defaulting from the CRD's `default`s,
then OpenAPI schema validation (with unknown fields rejected, as kubectl's default strict field
validation does), then the `x-kubernetes-validations` CEL rules. Each problem comes back as
(field path, message). The CEL rules run on cel-python, with `isSorted` added as Kubernetes'
CEL list library defines it.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy import celtypes

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "modeldeployments.modelgate.dev.yaml"
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))


@dataclass(frozen=True)
class Problem:
    layer: str
    """"schema" or "cel"."""
    path: str
    message: str


@functools.cache
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text(encoding="utf-8"))


def schema() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --- defaulting -----------------------------------------------------------------------------

def apply_defaults(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of obj with the CRD's defaults applied the way the API server applies them:
    a default fills an absent field whose parent object is present, and the default value
    itself is defaulted in turn."""
    result = copy.deepcopy(obj)
    _default_node(schema(), result)
    return result


def _default_node(node_schema: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict):
        for key, prop in node_schema.get("properties", {}).items():
            if key not in value and "default" in prop:
                value[key] = copy.deepcopy(prop["default"])
            if key in value:
                _default_node(prop, value[key])
        extra = node_schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                _default_node(extra, value[key])
    elif isinstance(value, list) and "items" in node_schema:
        for item in value:
            _default_node(node_schema["items"], item)


# --- OpenAPI schema -------------------------------------------------------------------------

@functools.cache
def _json_schema() -> dict[str, Any]:
    """The CRD schema as draft-4 JSON Schema: `nullable` becomes a null type, and objects
    that declare properties reject others (strict field validation)."""

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: convert(value) for key, value in node.items()
               if not key.startswith("x-kubernetes-")}
        if node.get("nullable") and "type" in node:
            out["type"] = [node["type"], "null"]
        if (node.get("type") == "object" and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out

    converted = convert(schema())
    converted["properties"]["metadata"] = {"type": "object"}
    return converted


def schema_problems(obj: dict[str, Any]) -> list[Problem]:
    validator = jsonschema.Draft4Validator(_json_schema())
    problems = []
    for error in validator.iter_errors(obj):
        path = _dotted(error.absolute_path)
        # name the field itself, as the API server does ("spec.model.version: Required value")
        if error.validator in ("required", "additionalProperties"):
            path = _join(path, error.message.split("'")[1])
        problems.append(Problem("schema", path, error.message))
    return problems


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _dotted(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# --- CEL ------------------------------------------------------------------------------------

def _is_sorted(values: celtypes.ListType) -> celtypes.BoolType:
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(values)))


_CEL_FUNCTIONS = {"isSorted": _is_sorted}


@functools.cache
def _program(rule: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule), functions=_CEL_FUNCTIONS)


def rules() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every CEL rule of the schema, with the schema path of the node that carries it."""

    def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for rule in node.get("x-kubernetes-validations", []):
            yield path, rule
        for key, prop in node.get("properties", {}).items():
            yield from walk(prop, f"{path}.{key}" if path else key)
        if "items" in node:
            yield from walk(node["items"], f"{path}[*]")

    yield from walk(schema(), "")


def cel_problems(obj: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    _cel_node(schema(), obj, "", problems)
    return problems


def _cel_node(node_schema: dict[str, Any], value: Any, path: str,
              problems: list[Problem]) -> None:
    for rule in node_schema.get("x-kubernetes-validations", []):
        activation = {"self": celpy.json_to_cel(value)}
        try:
            ok = bool(_program(rule["rule"]).evaluate(activation))
        except celpy.CELEvalError as exc:  # a rule that cannot evaluate is a CRD bug
            raise AssertionError(f"CEL rule {rule['rule']!r} at {path!r} failed: {exc}") from exc
        if not ok:
            problems.append(Problem("cel", path + rule.get("fieldPath", ""), rule["message"]))
    if isinstance(value, dict):
        for key, prop in node_schema.get("properties", {}).items():
            if key in value:
                _cel_node(prop, value[key], f"{path}.{key}" if path else key, problems)
    elif isinstance(value, list) and "items" in node_schema:
        for index, item in enumerate(value):
            _cel_node(node_schema["items"], item, f"{path}[{index}]", problems)


def admit(obj: dict[str, Any]) -> list[Problem]:
    """Problems the API server would report for a create of obj (empty: admitted)."""
    defaulted = apply_defaults(obj)
    problems = schema_problems(defaulted)
    if problems:  # the API server stops before CEL when the schema fails
        return problems
    return cel_problems(defaulted)
