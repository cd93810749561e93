"""The control annotations people set on a ModelDeployment -> the core's ControlRequests.

A control is an annotation, never a change of .spec, so git keeps declaring only what should
serve; `modelgate promote|abort|retry|pause|resume` writes them (modelgate.control).
"""

from __future__ import annotations

from collections.abc import Mapping

from modelgate.core.state import ControlRequests

CONTROL_PROMOTE = "modelgate.dev/promote"
"""Annotation: any new value promotes the canary now, skipping the remaining steps."""
CONTROL_ABORT = "modelgate.dev/abort"
"""Annotation: any new value rolls the canary back now."""
CONTROL_RETRY = "modelgate.dev/retry"
"""Annotation: any new value lets a rolled-back model be tried again."""
CONTROL_PAUSED = "modelgate.dev/paused"
"""Annotation: while "true", the step program does not advance (analysis still runs)."""

FIELD_MANAGER = "modelgate"
"""The field manager the `modelgate` controls write annotations as (and the one to give
`kubectl annotate --field-manager=modelgate`). Flux's kustomize-controller takes over, and so
removes at its next apply, fields whose manager's name starts with "kubectl" (kubectl
annotate's default manager is "kubectl-annotate"), or is "before-first-apply" or its own;
a manager of another name keeps its fields (docs/gitops.md, "Controls that survive GitOps")."""


def controls(annotations: Mapping[str, str] | None) -> ControlRequests:
    annotations = annotations or {}
    return ControlRequests(
        promote=annotations.get(CONTROL_PROMOTE) or None,
        abort=annotations.get(CONTROL_ABORT) or None,
        retry=annotations.get(CONTROL_RETRY) or None,
        paused=str(annotations.get(CONTROL_PAUSED, "")).lower() == "true",
    )
