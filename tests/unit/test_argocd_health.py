"""manifests/argocd/health.lua under Lua 5.1 (Argo CD runs health scripts on gopher-lua, which
has Lua 5.1 semantics) over a table of ModelDeployments: docs/architecture.md, contract 6."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from support.health import argocd_health

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "manifests" / "argocd" / "health.lua"


def health(obj: dict[str, Any], script: str | None = None) -> tuple[str, str]:
    return argocd_health(obj, script)


def md(phase: str | None = None, message: str = "m", generation: int = 2,
       observed: int | None = 2, conditions: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelDeployment",
                            "metadata": {"name": "iris", "generation": generation}}
    if phase is not None:
        status: dict[str, Any] = {"phase": phase, "message": message}
        if observed is not None:
            status["observedGeneration"] = observed
        if conditions:
            status["conditions"] = [{"type": "Ready", "status": "True"}]
        body["status"] = status
    return body


@pytest.mark.parametrize(("phase", "expected"), [
    ("Healthy", "Healthy"), ("Progressing", "Progressing"), ("Pending", "Progressing"),
    ("Paused", "Suspended"), ("RolledBack", "Degraded"), ("Degraded", "Degraded"),
])
def test_every_phase_maps_to_its_argo_cd_health_with_the_message(phase: str,
                                                                  expected: str) -> None:
    assert health(md(phase, message=f"why {phase}")) == (expected, f"why {phase}")


def test_no_status_is_progressing() -> None:
    status, message = health(md())
    assert status == "Progressing"
    assert "observe" in message


def test_no_conditions_still_maps_the_phase() -> None:
    assert health(md("Healthy", conditions=False)) == ("Healthy", "m")


def test_a_generation_newer_than_the_observed_one_is_progressing() -> None:
    status, message = health(md("Healthy", generation=3, observed=2))
    assert status == "Progressing"
    assert "new spec" in message
    assert health(md("RolledBack", generation=3, observed=None))[0] == "Progressing"


def test_an_unknown_phase_is_unknown() -> None:
    assert health(md("Sideways"))[0] == "Unknown"


def test_the_argocd_cm_snippet_carries_the_same_script() -> None:
    snippet = yaml.safe_load((ROOT / "manifests" / "argocd" / "argocd-cm.yaml").read_text())
    embedded = snippet["data"]["resource.customizations.health.modelgate.dev_ModelDeployment"]
    assert embedded == SCRIPT.read_text()
    assert health(md("Paused"), script=embedded) == ("Suspended", "m")
