"""One arm's Deployment, as the API returns it -> the core's ArmObserved."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelgate.core.manifests import MODEL_HASH
from modelgate.core.state import ArmObserved


def arm_observed(deployment: Mapping[str, Any] | None) -> ArmObserved | None:
    """What a Deployment of one arm shows; None if it does not exist."""
    if not deployment:
        return None
    metadata = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    replicas = int(spec.get("replicas", 1) or 0)
    ready = int(status.get("readyReplicas", 0) or 0)
    updated = int(status.get("updatedReplicas", 0) or 0)
    current = int(status.get("replicas", 0) or 0)
    seen = int(status.get("observedGeneration", 0) or 0) >= int(metadata.get("generation", 0) or 0)
    return ArmObserved(
        model_hash=(metadata.get("annotations") or {}).get(MODEL_HASH),
        replicas=replicas, ready=ready, updated=updated, current=current,
        settled=seen and updated == replicas and current == replicas and ready >= replicas,
    )
