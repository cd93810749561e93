"""One arm's Deployment, as the API returns it -> the core's ArmObserved; and a child as the
API returns it against what the operator writes (drift, and who made it)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelgate.api import parse_quantity
from modelgate.core.manifests import MODEL_HASH, SERVING_HASH
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
        serving_hash=(metadata.get("annotations") or {}).get(SERVING_HASH),
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


# --- drift: the fields modelgate owns, as the live object shows them ---------------------------

_LIST_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",), "env": ("name",), "volumes": ("name",),
    "volumeMounts": ("mountPath",), "ports": ("containerPort", "port", "protocol")}
"""Lists modelgate writes whose items have an identity (the API's merge keys; a container's
ports by containerPort, a Service's by port): compared item by item, an item that is missing
or extra being a change."""

_WHOLE = {"resources", "requests", "limits", "selector"}
"""Maps compared whole: a key someone added (a limit modelgate does not set, a label the
Service's selector should not require) is a change."""

_SAFE_TO_SHOW = {"replicas", "image", "imagePullPolicy", "workers"}
"""Fields whose values an Event may quote; every other one is named only (an env value may
be a secret someone pasted)."""

FIELD_MANAGER = "modelgate"
"""The field manager of the operator's writes to its children (metadata.managedFields)."""

PathElement = str | tuple[tuple[str, Any], ...]
"""A field name, or an item of a keyed list by its key fields."""


@dataclass(frozen=True)
class Change:
    """One field the operator owns that differs in the live object from what it writes."""

    path: tuple[PathElement, ...]
    how: str
    """"changed", "removed" (the operator writes it, the object lacks it) or "added"."""
    wanted: Any = None
    found: Any = None

    def field(self) -> str:
        text = ""
        for element in self.path:
            if isinstance(element, str):
                text += ("." if text else "") + element
            else:
                text += "[" + ",".join(str(value) for _, value in element) + "]"
        return text

    def describe(self) -> str:
        last = next((e for e in reversed(self.path) if isinstance(e, str)), "")
        if self.how == "changed" and last in _SAFE_TO_SHOW:
            return f"{self.field()} was {self.found!r}, restored to {self.wanted!r}"
        return {"changed": f"{self.field()} was changed", "removed": f"{self.field()} was "
                "removed", "added": f"{self.field()} was added"}[self.how]


def drift(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> list[Change]:
    """The fields of a child (a Deployment or the Service) that modelgate writes and that the
    live object shows otherwise: our labels and annotations, and the whole spec as we write
    it (replicas, strategy, the pod template's labels, annotations, security settings,
    volumes and containers: image, env, resources, ports, probes, mounts; a Service's
    selector and ports), except a Deployment's immutable selector. Fields the API server
    defaults and fields nobody asked modelgate to set (another annotation, a node selector)
    are not ours and never a change.

    Only meaningful when `live` was last written from `desired` (the same applied hash):
    otherwise the difference is a planned update, not drift."""
    if not live:
        return []
    changes: list[Change] = []
    metadata, live_metadata = desired.get("metadata") or {}, live.get("metadata") or {}
    for key in ("labels", "annotations"):
        _compare(metadata.get(key) or {}, live_metadata.get(key) or {}, ("metadata", key),
                 changes)
    immutable = ("selector",) if desired.get("kind") == "Deployment" else ()
    spec = {key: value for key, value in (desired.get("spec") or {}).items()
            if key not in immutable}
    _compare(spec, live.get("spec") or {}, ("spec",), changes)
    return changes


def _compare(want: Any, found: Any, path: tuple[PathElement, ...],
             changes: list[Change]) -> None:
    last = path[-1] if path and isinstance(path[-1], str) else ""
    if isinstance(want, Mapping):
        if not isinstance(found, Mapping):
            changes.append(Change(path, "changed", want, found))
            return
        for key, value in want.items():
            if key not in found:
                # the API server omits empty values (an env variable's value "")
                if value not in ({}, [], None, ""):
                    changes.append(Change((*path, key), "removed", value, None))
                continue
            _compare(value, found[key], (*path, key), changes)
        if last in _WHOLE:
            changes.extend(Change((*path, key), "added", None, found[key])
                           for key in found if key not in want)
        return
    if isinstance(want, list):
        keys = _LIST_KEYS.get(last)
        if keys and isinstance(found, list) and all(isinstance(i, Mapping) for i in want):
            _compare_keyed(want, found, keys, path, changes)
        elif not isinstance(found, list) or len(found) != len(want):
            changes.append(Change(path, "changed", want, found))
        else:
            for index, (item, other) in enumerate(zip(want, found, strict=True)):
                _compare(item, other, (*path, str(index)), changes)
        return
    if not _same_scalar(want, found, path):
        changes.append(Change(path, "changed", want, found))


def _identity(item: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    return tuple((key, item[key]) for key in keys if key in item)


def _compare_keyed(want: list[Any], found: list[Any], keys: tuple[str, ...],
                   path: tuple[PathElement, ...], changes: list[Change]) -> None:
    by_key = {_identity(item, keys): item for item in found if isinstance(item, Mapping)}
    wanted_keys = set()
    at_start = len(changes)
    for item in want:
        identity = _identity(item, keys)
        wanted_keys.add(identity)
        if identity not in by_key:
            changes.append(Change((*path, identity), "removed", item, None))
            continue
        other = by_key[identity]
        before = len(changes)
        _compare(item, other, (*path, identity), changes)
        if path[-1] == "env" and len(changes) == before and set(other) - set(item):
            # an env entry is one value: `value` turned into `valueFrom` (or back) is a change
            changes.append(Change((*path, identity), "changed", item, other))
    changes.extend(Change((*path, identity), "added", None, item)
                   for identity, item in by_key.items() if identity not in wanted_keys)
    # the server's own order of env entries matters ($(VAR) references): a reorder is drift
    if path[-1] == "env" and len(changes) == at_start and [_identity(i, keys) for i in want] != [
            _identity(i, keys) for i in found if isinstance(i, Mapping)]:
        changes.append(Change(path, "changed", want, found))


def _same_scalar(want: Any, found: Any, path: tuple[PathElement, ...]) -> bool:
    if want == found:
        return True
    if any(isinstance(element, str) and element in ("requests", "limits") for element in path):
        # the API server writes quantities in canonical form ("0.5" cpu is read back "500m")
        try:
            return parse_quantity(str(want)) == parse_quantity(str(found))
        except ValueError:
            return False
    return False


def changed_by(live: Mapping[str, Any], change: Change) -> str | None:
    """Who made `change`, from the live object's metadata.managedFields: the manager whose
    entry owns the field (for a removed field, the deepest part of its path that someone
    other than modelgate owns; the most recent such entry on a tie); None when no entry
    tells (an API server without managedFields, or only modelgate's own)."""
    steps = [element if isinstance(element, str) else
             "k:" + json.dumps(dict(element), separators=(",", ":"), sort_keys=True)
             for element in change.path]
    best: tuple[int, str, str] | None = None
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        if not isinstance(entry, Mapping) or entry.get("manager") == FIELD_MANAGER or \
                entry.get("subresource") == "status":
            continue
        node: Any = entry.get("fieldsV1") or {}
        depth = 0
        for step in steps:
            key = step if step.startswith("k:") else f"f:{step}"
            if not isinstance(node, Mapping) or key not in node:
                break
            node = node[key]
            depth += 1
        # a node without children is a field owned whole (a list, a map set at once)
        whole = depth < len(steps) and isinstance(node, Mapping) and depth > 0 and \
            not [key for key in node if key != "."]
        if depth == len(steps) or whole or (change.how != "changed" and depth > 0):
            score = (len(steps) if whole else depth, str(entry.get("time") or ""))
            if best is None or score > best[:2]:
                manager = str(entry.get("manager"))
                if entry.get("subresource"):
                    manager += f" (through the {entry['subresource']} subresource)"
                best = (*score, manager)
    return best[2] if best is not None else None
