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


WAITING_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                             "CrashLoopBackOff", "CreateContainerConfigError",
                             "CreateContainerError", "RunContainerError"})
"""A container's waiting reasons that say it cannot start as it is (not "ContainerCreating")."""


def pod_problem(pod: Mapping[str, Any]) -> str | None:
    """Why a pod is not ready, in the words of its status; None if it is ready (or nothing
    says why). For a crash loop, the last line of the container's termination message, which
    the pod template's terminationMessagePolicy FallbackToLogsOnError fills from its log."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    name = metadata.get("name", "?")
    conditions = {c.get("type"): c for c in status.get("conditions") or []
                  if isinstance(c, Mapping)}
    if (conditions.get("Ready") or {}).get("status") == "True":
        return None
    scheduled = conditions.get("PodScheduled") or {}
    if scheduled.get("status") == "False":
        return _sentence(f"pod {name} is Pending", scheduled.get("reason"),
                         scheduled.get("message"))
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        last = state.get("terminated") or \
            (container.get("lastState") or {}).get("terminated") or {}
        where = f"pod {name}, container {container.get('name', '?')}"
        if waiting.get("reason") in WAITING_REASONS or state.get("terminated"):
            return _sentence(where, waiting.get("reason") or last.get("reason"),
                             waiting.get("message")) + _ended(last)
        if last and container.get("restartCount"):
            return (f"{where}: restarted {container['restartCount']} times, last "
                    f"{last.get('reason') or 'exited'}{_ended(last)}")
    if status.get("phase") == "Pending":
        return f"pod {name} is Pending"
    return f"pod {name} is running but not ready (its readiness probe fails)"


def _sentence(subject: str, reason: Any, message: Any) -> str:
    text = f"{subject}: {reason or 'not ready'}"
    return f"{text}: {' '.join(str(message).split())[:300]}" if message else text


def _ended(terminated: Mapping[str, Any]) -> str:
    """" (exit code N; last log line: ...)" of a container that ended; "" if none did."""
    if not terminated:
        return ""
    lines = [line for line in str(terminated.get("message") or "").splitlines() if line.strip()]
    text = f" (exit code {terminated.get('exitCode', '?')}"
    return text + (f"; last log line: {lines[-1].strip()[:300]})" if lines else ")")
