"""How each tool reads a ModelDeployment's health, run here on the object itself:

- `argocd_health`: manifests/argocd/health.lua under real Lua 5.1 (Argo CD runs health scripts
  on gopher-lua, which has Lua 5.1 semantics).
- `kstatus`: the reading rules of kstatus (sigs.k8s.io/cli-utils, pkg/kstatus/status,
  `Compute` for a custom resource; v0.37.2, and the same in Flux's fork fluxcd/cli-utils
  v1.2.1), which Flux's `wait`/`healthChecks` without expressions, `kubectl wait` users and
  cli-utils apply. No maintained Python implementation exists, so the rules are written here
  from their documentation and source, in their order:
  1. `metadata.deletionTimestamp` set: Terminating.
  2. `status.observedGeneration` present and different from `metadata.generation`:
     InProgress (LatestGenerationNotObserved).
  3. The first condition, in list order, that is `Reconciling=True` (InProgress) or
     `Stalled=True` (Failed) decides.
  4. (Built-in kinds have their own rules here; a custom resource has none.)
  5. A `Ready` condition: True is Current; False or Unknown is InProgress.
  6. Otherwise: Current.
- `flux_health`: kustomize-controller's `healthCheckExprs` as fluxcd/pkg/runtime/cel's
  StatusEvaluator evaluates them (Flux RFC 0009): observedGeneration first (as rule 2), then
  `inProgress`, `failed`, `current` in that order, the first that is true deciding, else
  InProgress; each expression sees the object's top-level fields as variables. Evaluated
  with cel-python.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import celpy
import yaml

ROOT = Path(__file__).resolve().parents[2]
LUA_SCRIPT = ROOT / "manifests" / "argocd" / "health.lua"
FLUX_OBJECTS = ROOT / "manifests" / "flux" / "modelgate.yaml"

CURRENT, IN_PROGRESS, FAILED, TERMINATING = "Current", "InProgress", "Failed", "Terminating"


# --- Argo CD ---------------------------------------------------------------------------------

def _lua(value: Any) -> str:
    """A Python value as a Lua table constructor."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid Lua string for these texts
    if isinstance(value, list):
        return "{" + ", ".join(_lua(item) for item in value) + "}"
    return "{" + ", ".join(f"[{json.dumps(key)}] = {_lua(item)}"
                           for key, item in value.items()) + "}"


def argocd_health(obj: Mapping[str, Any], script: str | None = None) -> tuple[str, str]:
    """(health status, message) of `obj` by the health script, run by lua5.1."""
    lua = shutil.which("lua5.1")
    assert lua, "lua5.1 is missing: `make tools` installs it (make test does)"
    program = (f"obj = {_lua(dict(obj))}\nlocal function check()\n"
               f"{script or LUA_SCRIPT.read_text()}\nend\nlocal hs = check()\n"
               "io.write(hs.status, '\\t', hs.message or '')\n")
    result = subprocess.run([lua, "-"], input=program, capture_output=True, text=True,
                            timeout=10, check=True)
    status, _, message = result.stdout.partition("\t")
    return status, message


# --- kstatus ---------------------------------------------------------------------------------

def _generation_not_observed(obj: Mapping[str, Any]) -> bool:
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return generation is not None and observed is not None and observed != generation


def kstatus(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(status, reason or message) by the kstatus rules above."""
    metadata = obj.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return TERMINATING, "Resource scheduled for deletion"
    if _generation_not_observed(obj):
        return IN_PROGRESS, "LatestGenerationNotObserved"
    conditions = (obj.get("status") or {}).get("conditions") or []
    for condition in conditions:
        if condition.get("type") == "Reconciling" and condition.get("status") == "True":
            return IN_PROGRESS, str(condition.get("reason", ""))
        if condition.get("type") == "Stalled" and condition.get("status") == "True":
            return FAILED, str(condition.get("reason", ""))
    for condition in conditions:
        if condition.get("type") == "Ready":
            if condition.get("status") == "True":
                return CURRENT, "Resource is Ready"
            if condition.get("status") in ("False", "Unknown"):
                return IN_PROGRESS, str(condition.get("reason", ""))
    return CURRENT, "Resource is current"


# --- Flux healthCheckExprs ---------------------------------------------------------------------

def flux_expressions(api_version: str = "modelgate.dev/v1alpha1",
                     kind: str = "ModelDeployment") -> dict[str, str]:
    """The healthCheckExprs entry the shipped Flux objects give ModelDeployments."""
    for doc in yaml.safe_load_all(FLUX_OBJECTS.read_text()):
        if doc and doc["kind"] == "Kustomization":
            for entry in doc["spec"].get("healthCheckExprs") or []:
                if entry["apiVersion"].split("/")[0] == api_version.split("/")[0] and \
                        entry.get("kind") in (None, kind):
                    return {key: entry[key] for key in ("inProgress", "failed", "current")
                            if key in entry}
    raise AssertionError(f"no healthCheckExprs for {kind} in {FLUX_OBJECTS}")


@functools.cache
def _program(expression: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(expression))


def flux_health(obj: Mapping[str, Any], expressions: Mapping[str, str] | None = None) -> str:
    """Current, InProgress or Failed as Flux's StatusEvaluator decides; CELEvalError raised
    where Flux would report an evaluation error (and keep waiting)."""
    expressions = expressions or flux_expressions()
    if _generation_not_observed(obj):
        return IN_PROGRESS
    activation = {key: celpy.json_to_cel(value) for key, value in obj.items()}
    for key, verdict in (("inProgress", IN_PROGRESS), ("failed", FAILED),
                         ("current", CURRENT)):
        if key not in expressions:
            continue
        result = _program(expressions[key]).evaluate(activation)
        if isinstance(result, celpy.CELEvalError):
            raise result
        if not isinstance(result, celpy.celtypes.BoolType):
            raise AssertionError(f"{key}: {expressions[key]!r} gave {result!r}, not a bool")
        if bool(result):
            return verdict
    return IN_PROGRESS
