"""Controls that survive GitOps: the `modelgate` CLI and `kubectl annotate
--field-manager=modelgate` write the control annotations as the field manager `modelgate`,
which Flux's kustomize-controller does not take over; kubectl annotate's default manager
(`kubectl-annotate`) is one it does (docs/gitops.md, "Controls that survive GitOps"). Real
kubectl and the real CLI against `make sandbox-up`, reading metadata.managedFields."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.kubectl import Kubectl

from modelgate import control_annotations

pytestmark = [pytest.mark.kubectl, pytest.mark.xdist_group("kubectl")]

NAME = "field-manager"

# kustomize-controller v1.9.4 (internal/controller/kustomization_controller.go) removes
# these managers' entries before it applies, matching by prefix (fluxcd/pkg/ssa, patch.go,
# matchFieldManager), so what they set is dropped unless git declares it.
FLUX_TAKES_OVER = [("kubectl", "Apply"), ("kubectl", "Update"), ("before-first-apply", "Update"),
                   ("kustomize-controller", "Update")]


def flux_takes_over(entry: dict[str, Any]) -> bool:
    return not entry.get("subresource") and any(
        entry["manager"].startswith(name) and entry["operation"] == operation
        for name, operation in FLUX_TAKES_OVER)


def owner_of(obj: dict[str, Any], annotation: str) -> list[dict[str, Any]]:
    """The managedFields entries that own metadata.annotations[annotation]."""
    return [entry for entry in obj["metadata"].get("managedFields") or []
            if f"f:{annotation}" in ((entry.get("fieldsV1") or {}).get("f:metadata") or {})
            .get("f:annotations", {})]


def managed(kubectl: Kubectl) -> dict[str, Any]:
    result: dict[str, Any] = kubectl.json("get", "md", NAME, "--show-managed-fields")
    return result


def modelgate_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).parent / "modelgate"
    return subprocess.run([str(cli), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_control_writes_carry_a_field_manager_flux_leaves_alone(
        sandbox_env: dict[str, str], kubectl: Kubectl) -> None:
    example = Path(sandbox_env["MODELGATE_SANDBOX"]) / "examples" / "iris-v1.yaml"
    body = yaml.safe_load(example.read_text())
    body["metadata"]["name"] = NAME
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))
    try:
        # the CLI: pause, without waiting for the operator (no canary is needed for the write)
        result = modelgate_cli({**os.environ, **sandbox_env}, "pause", NAME, "--wait", "0")
        assert result.returncode == 0, result.stderr
        (entry,) = owner_of(managed(kubectl), control_annotations.CONTROL_PAUSED)
        assert (entry["manager"], entry["operation"]) == (control_annotations.FIELD_MANAGER,
                                                          "Update")
        assert not flux_takes_over(entry)

        # what docs/gitops.md tells people to type
        kubectl("annotate", "--field-manager=modelgate", "md", NAME,
                f"{control_annotations.CONTROL_PROMOTE}=1")
        (entry,) = owner_of(managed(kubectl), control_annotations.CONTROL_PROMOTE)
        assert entry["manager"] == "modelgate"
        assert not flux_takes_over(entry)

        # kubectl annotate's default manager is one Flux takes over: the trap the docs name
        kubectl("annotate", "md", NAME, f"{control_annotations.CONTROL_RETRY}=1")
        (entry,) = owner_of(managed(kubectl), control_annotations.CONTROL_RETRY)
        assert entry["manager"] == "kubectl-annotate"
        assert flux_takes_over(entry)

        # resume removes the annotation, and with it the manager's ownership
        result = modelgate_cli({**os.environ, **sandbox_env}, "resume", NAME, "--wait", "0")
        assert result.returncode == 0, result.stderr
        after = managed(kubectl)
        assert control_annotations.CONTROL_PAUSED not in after["metadata"]["annotations"]
        assert owner_of(after, control_annotations.CONTROL_PAUSED) == []
    finally:
        kubectl("delete", "md", NAME, "--ignore-not-found", "--wait=false")
