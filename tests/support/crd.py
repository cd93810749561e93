"""What the Kubernetes API server does with a ModelDeployment, done offline, as tests of the
operator ask it: "would a cluster have taken this, and which layer refuses it?".

The API server's behaviour itself (defaulting, pruning, schema, CEL, its error messages) is in
`sandbox.admission`, which the sandbox's API server also uses; this module reads the CRD file
and gives the unit tests a simpler view: each problem as (layer, field path, message), with
unknown fields counted as schema problems (kubectl's default strict field validation) and CEL
not run after a schema problem.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sandbox.admission import Admission, prune, strict_json_schema

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


@functools.cache
def admission() -> Admission:
    return Admission(crd())


def schema() -> dict[str, Any]:
    return admission().schema


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def apply_defaults(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of obj with the CRD's defaults applied the way the API server applies them."""
    return admission().default(obj)


@functools.cache
def _json_schema() -> dict[str, Any]:
    """The CRD schema as draft-4 JSON Schema that refuses undeclared fields."""
    return strict_json_schema(schema())


def schema_problems(obj: dict[str, Any]) -> list[Problem]:
    pruned = copy.deepcopy(obj)
    problems = [Problem("schema", path, f'unknown field "{path}"')
                for path in prune(schema(), pruned)]
    problems += [Problem("schema", error.field, str(error))
                 for error in admission().schema_errors(obj)]
    return problems


def rules() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every CEL rule of the schema, with the schema path of the node that carries it."""
    return admission().rules()


def cel_problems(obj: dict[str, Any]) -> list[Problem]:
    return [Problem("cel", error.field, error.detail) for error in admission().cel_errors(obj)]


def admit(obj: dict[str, Any]) -> list[Problem]:
    """Problems the API server would report for a create of obj (empty: admitted)."""
    defaulted = apply_defaults(obj)
    problems = schema_problems(defaulted)
    if problems:  # simpler than the API server, which runs CEL after non-blocking errors
        return problems
    return cel_problems(defaulted)
