"""The parts of a Kubernetes API server that kubectl needs beyond storage, as pure functions the
sandbox's emulator (emulator.py) serves: OpenAPI v3 documents, Table output with the CRD's
printer columns, field selectors, strategic merge and server-side apply merges, ages.

Written by hand because no Python library serves these (the Go API server is the reference:
k8s.io/apiserver, apiextensions-apiserver, kubectl's printers); each function says how far it
goes.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

KUBERNETES_VERSION = "v1.32.0"
"""The Kubernetes release whose API behaviour the sandbox emulates (kubectl v1.32 here)."""

# --- OpenAPI v3 --------------------------------------------------------------------------------

# Query parameters of a PATCH that kubectl looks for before it trusts the server to validate
# (QueryParamVerifierV3): with fieldValidation listed, `kubectl apply` sends
# fieldValidation=Strict instead of downloading OpenAPI v2 to validate client-side.
_PATCH_PARAMETERS = [
    {"name": name, "in": "query", "schema": {"type": "string"}, "description": text}
    for name, text in (("dryRun", "All: run admission, store nothing."),
                       ("fieldManager", "Name of the actor making the change."),
                       ("fieldValidation", "Ignore, Warn (default) or Strict: what to do with "
                                           "unknown fields."),
                       ("force", "Server-side apply: take over conflicting fields."))]


def schema_name(group: str, version: str, kind: str) -> str:
    """The components/schemas key of a kind, as the API server names it (reversed group)."""
    builtin = {"": "io.k8s.api.core", "apps": "io.k8s.api.apps",
               "events.k8s.io": "io.k8s.api.events"}
    prefix = builtin.get(group) or ".".join(reversed(group.split(".")))
    return f"{prefix}.{version}.{kind}"


def openapi_v3(group: str, version: str, kinds: list[dict[str, Any]]) -> dict[str, Any]:
    """The OpenAPI v3 document of one group-version. `kinds`: dicts with kind, plural,
    namespaced, subresources and, for custom resources, schema (openAPIV3Schema)."""
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    gvk_of = {"group": group, "version": version}
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {
            "type": "object",
            "description": "Standard object's metadata: name, namespace, labels, annotations, "
                           "ownerReferences, finalizers and the server's bookkeeping.",
        }}
    for entry in kinds:
        gvk = {**gvk_of, "kind": entry["kind"]}
        base = f"{prefix}/namespaces/{{namespace}}/{entry['plural']}" if entry["namespaced"] \
            else f"{prefix}/{entry['plural']}"
        ref = {"$ref": f"#/components/schemas/{schema_name(group, version, entry['kind'])}"}
        one = {"x-kubernetes-group-version-kind": gvk, "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}}
        paths[base] = {"get": {**one, "x-kubernetes-action": "list"},
                       "post": {**one, "x-kubernetes-action": "post",
                                "parameters": _PATCH_PARAMETERS}}
        for suffix in ("", *(f"/{sub}" for sub in entry.get("subresources", ()))):
            paths[f"{base}/{{name}}{suffix}"] = {
                "get": {**one, "x-kubernetes-action": "get"},
                "patch": {**one, "x-kubernetes-action": "patch", "parameters": _PATCH_PARAMETERS},
                "delete": {**one, "x-kubernetes-action": "delete"},
            }
        if "schema" in entry:
            schema = copy.deepcopy(entry["schema"])
            schema.setdefault("properties", {})["metadata"] = {
                "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                "description": "Standard object's metadata."}
            schema["x-kubernetes-group-version-kind"] = [gvk]
            schemas[schema_name(group, version, entry["kind"])] = schema
    return {"openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
            "paths": paths, "components": {"schemas": schemas}}


def document_hash(document: Mapping[str, Any]) -> str:
    return hashlib.sha512(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32].upper()


# --- Tables ------------------------------------------------------------------------------------

def _column(name: str, type_: str = "string", description: str = "", priority: int = 0,
            format_: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": format_, "description": description,
            "priority": priority}


NAME_COLUMN = _column("Name", format_="name",
                      description="Name must be unique within a namespace.")


_FILTER = re.compile(r"""\[\?\(@\.(\w+)==["']([^"']*)["']\)\]""")


def lookup(obj: Any, json_path: str) -> Any:
    """Value at a simple JSONPath (`.status.canary.weight`, `.spec.ports[0].port`, and the
    first match of an equality filter, `.status.conditions[?(@.type=="Ready")].status`), None
    if absent. Printer columns of this project's CRD and of core kinds need no more."""
    node = obj
    path = _FILTER.sub(lambda m: f"[?{m.group(1)}={m.group(2)}]", json_path.strip("{}"))
    for part in path.lstrip(".").replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("[?"):
            key, _, value = part[2:-1].partition("=")
            node = next((item for item in node if isinstance(item, dict)
                         and str(item.get(key)) == value), None) \
                if isinstance(node, list) else None
        elif part.startswith("["):
            index = int(part.strip("[]"))
            node = node[index] if isinstance(node, list) and len(node) > index else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


def human_age(timestamp: str | None, now: datetime.datetime) -> str:
    """An age as kubectl prints it (k8s.io/apimachinery/pkg/util/duration.HumanDuration)."""
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int((now - then).total_seconds())
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d" if days < 365 * 2 else f"{days // 365}y"


def _ports(service: Mapping[str, Any]) -> str:
    ports = (service.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


def _pod_ready(pod: Mapping[str, Any]) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return f"{sum(1 for s in statuses if s.get('ready'))}/{len(containers)}"


def _pod_status(pod: Mapping[str, Any]) -> str:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    return str((pod.get("status") or {}).get("phase") or "Pending")


def _event_object(event: Mapping[str, Any]) -> str:
    involved = event.get("involvedObject") or event.get("regarding") or {}
    return f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"


def _event_time(event: Mapping[str, Any]) -> str | None:
    return (event.get("lastTimestamp") or event.get("eventTime")
            or (event.get("metadata") or {}).get("creationTimestamp"))


def _age(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    return human_age((obj.get("metadata") or {}).get("creationTimestamp"), now)


# kind -> (columns after Name, cells of one object); as kubectl prints them from a real server
BUILTIN_COLUMNS: dict[str, tuple[list[dict[str, Any]], Any]] = {
    "Pod": ([_column("Ready"), _column("Status"), _column("Restarts", "string"),
             _column("Age"), _column("IP", priority=1), _column("Node", priority=1)],
            lambda o, now: [_pod_ready(o), _pod_status(o), str(sum(
                s.get("restartCount", 0) for s in (o.get("status") or {}).get(
                    "containerStatuses") or [])), _age(o, now),
                lookup(o, ".status.podIP") or "<none>", "sandbox"]),
    "Deployment": ([_column("Ready"), _column("Up-to-date", "integer"),
                    _column("Available", "integer"), _column("Age"),
                    _column("Containers", priority=1), _column("Images", priority=1)],
                   lambda o, now: [
                       f"{lookup(o, '.status.readyReplicas') or 0}/"
                       f"{lookup(o, '.spec.replicas') or 0}",
                       lookup(o, ".status.updatedReplicas") or 0,
                       lookup(o, ".status.availableReplicas") or 0, _age(o, now),
                       ",".join(c["name"] for c in lookup(o, ".spec.template.spec.containers")
                                or []),
                       ",".join(c.get("image", "") for c in
                                lookup(o, ".spec.template.spec.containers") or [])]),
    "Service": ([_column("Type"), _column("Cluster-IP"), _column("External-IP"),
                 _column("Port(s)"), _column("Age")],
                lambda o, now: [lookup(o, ".spec.type") or "ClusterIP",
                                lookup(o, ".spec.clusterIP") or "<none>", "<none>", _ports(o),
                                _age(o, now)]),
    "Event": ([_column("Last Seen"), _column("Type"), _column("Reason"), _column("Object"),
               _column("Message")],
              lambda o, now: [human_age(_event_time(o), now), o.get("type", ""),
                              o.get("reason", ""), _event_object(o),
                              str(o.get("message") or o.get("note") or "")]),
    "Namespace": ([_column("Status"), _column("Age")],
                  lambda o, now: [lookup(o, ".status.phase") or "Active", _age(o, now)]),
}


def table(objects: list[dict[str, Any]], kind: str, printer_columns: list[dict[str, Any]] | None,
          resource_version: str, now: datetime.datetime) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table of objects, as the API server answers `Accept: ...;as=Table`.
    Custom resources get their CRD's additionalPrinterColumns (date columns as ages, which is
    how kubectl shows them); core kinds the columns a real server gives them."""
    if printer_columns is not None:
        definitions = [NAME_COLUMN] + [
            _column(c["name"], "string" if c["type"] == "date" else c["type"],
                    c.get("description", ""), c.get("priority", 0)) for c in printer_columns]

        def cells(obj: dict[str, Any]) -> list[Any]:
            out: list[Any] = []
            for column in printer_columns:
                value = lookup(obj, column["jsonPath"])
                if column["type"] == "date":
                    value = human_age(value, now) if value else "<unknown>"
                out.append(value)
            return out
    elif kind in BUILTIN_COLUMNS:
        extra, render = BUILTIN_COLUMNS[kind]
        definitions = [NAME_COLUMN, *extra]

        def cells(obj: dict[str, Any]) -> list[Any]:
            return list(render(obj, now))
    else:
        definitions = [NAME_COLUMN, _column("Age")]

        def cells(obj: dict[str, Any]) -> list[Any]:
            return [_age(obj, now)]

    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": definitions,
            "rows": [{"cells": [obj["metadata"]["name"], *cells(obj)],
                      "object": {"kind": "PartialObjectMetadata",
                                 "apiVersion": "meta.k8s.io/v1",
                                 "metadata": obj.get("metadata", {})}}
                     for obj in objects]}


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


# --- selectors -----------------------------------------------------------------------------------

def parse_selector(text: str | None) -> list[tuple[str, str, str]]:
    """(key, operator, value) for each term of an equality selector (=, ==, !=). Set-based
    label selectors (in, notin, exists) are not needed by kubectl's get/wait/logs here."""
    terms = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "!=" in part:
            key, value = part.split("!=", 1)
            terms.append((key.strip(), "!=", value.strip()))
        elif "=" in part:
            key, value = part.replace("==", "=").split("=", 1)
            terms.append((key.strip(), "=", value.strip()))
        else:  # `key` alone: the label exists
            terms.append((part, "exists", ""))
    return terms


def matches_labels(obj: Mapping[str, Any], terms: list[tuple[str, str, str]]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all((key in labels) if op == "exists" else
               ((labels.get(key) == value) == (op == "=")) for key, op, value in terms)


def matches_fields(obj: Mapping[str, Any], terms: list[tuple[str, str, str]]) -> bool:
    for key, op, value in terms:
        actual = lookup(obj, "." + key)
        text = "" if actual is None else str(actual)
        if (text == value) != (op == "="):
            return False
    return True


# --- merges --------------------------------------------------------------------------------------

# The merge keys of the lists kubectl's strategic merge patches touch on core kinds
# (patchMergeKey in k8s.io/api); other lists are replaced whole, as for atomic lists.
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name",
               "env": "name", "volumeMounts": "mountPath", "imagePullSecrets": "name",
               "conditions": "type", "ports": ("containerPort", "port")}


def strategic_merge(current: Any, patch: Any, field: str = "") -> Any:
    """Apply a strategic merge patch: maps merge, `null` deletes, lists with a merge key merge
    item by item (`$patch: delete` removes one), `$setElementOrder` orders them; other
    directives are dropped. Enough for what kubectl apply/annotate/scale send for core kinds."""
    if isinstance(patch, dict) and isinstance(current, dict):
        result = dict(current)
        orders = {key.split("/", 1)[1]: value for key, value in patch.items()
                  if key.startswith("$setElementOrder/")}
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if value is None:
                result.pop(key, None)
            else:
                result[key] = strategic_merge(current.get(key), value, key)
        for key, order in orders.items():
            merge_key = _merge_key(key, result.get(key) or [])
            if merge_key and isinstance(result.get(key), list):
                rank = {json.dumps(item.get(merge_key)): i for i, item in enumerate(order)}
                result[key] = sorted(result[key], key=lambda item: rank.get(
                    json.dumps(item.get(merge_key)), len(rank)))
        return result
    if isinstance(patch, dict):
        return {key: strategic_merge(None, value, key) for key, value in patch.items()
                if not key.startswith("$") and value is not None}
    if isinstance(patch, list) and isinstance(current, list):
        merge_key = _merge_key(field, patch + current)
        if merge_key and all(isinstance(item, dict) for item in patch + current):
            merged = [dict(item) for item in current]
            for item in patch:
                found = next((i for i, old in enumerate(merged)
                              if old.get(merge_key) == item.get(merge_key)), None)
                if item.get("$patch") == "delete":
                    if found is not None:
                        del merged[found]
                elif found is None:
                    merged.append(strategic_merge(None, item, ""))
                else:
                    merged[found] = strategic_merge(merged[found], item, "")
            return merged
    if isinstance(patch, list):
        return [strategic_merge(None, item, "") if isinstance(item, dict) else item
                for item in patch]
    return patch


def _merge_key(field: str, items: list[Any]) -> str | None:
    keys = _MERGE_KEYS.get(field)
    if keys is None:
        return None
    for key in (keys,) if isinstance(keys, str) else keys:
        if any(isinstance(item, dict) and key in item for item in items):
            return key
    return None


def leaf_paths(config: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The fields a server-side apply configuration sets: map keys recursively, lists and
    scalars as leaves (lists of this project's CRD are atomic)."""
    if isinstance(config, dict) and config:
        for key, value in config.items():
            yield from leaf_paths(value, (*prefix, key))
    else:
        yield prefix


def server_side_apply(current: dict[str, Any], config: Mapping[str, Any],
                      previously_owned: set[tuple[str, ...]]) -> dict[str, Any]:
    """The object after a server-side apply by one manager: fields it applied before and no
    longer applies are removed, the configuration's fields are set. Other managers' fields
    stay; conflicts between managers are not detected (the sandbox has one person applying)."""
    result = copy.deepcopy(current)
    now_owned = set(leaf_paths(dict(config)))
    for path in sorted(previously_owned - now_owned, key=len, reverse=True):
        if path[:1] in (("metadata",), ("apiVersion",), ("kind",)) and len(path) < 3:
            continue
        node: Any = result
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return _deep_set(result, config)


def _deep_set(target: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = _deep_set(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


# --- managedFields ------------------------------------------------------------------------------

_BOOKKEEPING = {("apiVersion",), ("kind",), ("metadata", "managedFields"),
                ("metadata", "resourceVersion"), ("metadata", "generation"),
                ("metadata", "uid"), ("metadata", "creationTimestamp"),
                ("metadata", "deletionTimestamp"), ("metadata", "deletionGracePeriodSeconds"),
                ("metadata", "selfLink"), ("metadata", "name"), ("metadata", "namespace")}


_LIST_KEYS = {"containers": ("name",), "initContainers": ("name",), "env": ("name",),
              "volumes": ("name",), "volumeMounts": ("mountPath",),
              "ports": ("containerPort", "port", "protocol"), "imagePullSecrets": ("name",)}
"""The associative lists of the core kinds the sandbox serves and their merge keys (the
`x-kubernetes-list-map-keys` of the API server's OpenAPI; a container's ports are keyed by
containerPort and protocol, a Service's by port and protocol): each item is owned field by field
under `k:{"key":value}`, as a real server's managedFields show. Other lists are atomic."""


def _item_key(item: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    return "k:" + json.dumps({key: item[key] for key in keys if key in item},
                             separators=(",", ":"), sort_keys=True)


def _keyed_paths(value: Any, prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Like leaf_paths, with the items of associative lists (_LIST_KEYS) as maps of their own
    under a `k:` path element; yields (path, value)."""
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from _keyed_paths(child, (*prefix, key))
    elif isinstance(value, list) and value and prefix and prefix[-1] in _LIST_KEYS and \
            all(isinstance(item, dict) for item in value):
        for item in value:
            yield from _keyed_paths(item, (*prefix, _item_key(item, _LIST_KEYS[prefix[-1]])))
    else:
        yield prefix, value


def _leaves(obj: Mapping[str, Any], status: bool | None,
            keyed: bool = False) -> dict[tuple[str, ...], Any]:
    """Each field of obj a manager can own, with its value; `status`: only status (True),
    everything but status (False), or everything (None). `keyed`: associative lists are
    owned item by item (the core kinds); otherwise every list is atomic (this project's CRD
    declares no list-map)."""
    leaves = {}
    if keyed:
        walked = list(_keyed_paths(dict(obj), ()))
    else:
        walked = []
        for path in leaf_paths(dict(obj)):
            node: Any = obj
            for key in path:
                node = node[key]
            walked.append((path, node))
    for path, value in walked:
        if not path or path[:2] in _BOOKKEEPING or path[:1] in _BOOKKEEPING:
            continue
        if status is not None and (path[0] == "status") != status:
            continue
        leaves[path] = value
    return leaves


def fields_v1(paths: set[tuple[str, ...]]) -> dict[str, Any]:
    """Owned fields in the API server's FieldsV1 form (`{"f:metadata": {"f:annotations":
    {"f:key": {}}}}`); atomic lists are owned whole, an associative list's items under their
    `k:` keys."""
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for key in path:
            node = node.setdefault(key if key.startswith("k:") else f"f:{key}", {})
    return tree


def owned_paths(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """The inverse of fields_v1."""
    paths: set[tuple[str, ...]] = set()
    for key, child in tree.items():
        if key == ".":
            continue
        path = (*prefix, key[2:] if key.startswith("f:") else key)
        inner = {k: v for k, v in (child or {}).items() if k != "."}
        paths |= owned_paths(inner, path) if inner else {path}
    return paths


def managed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any], manager: str,
                   operation: str, subresource: str | None, now: str,
                   applied: Mapping[str, Any] | None = None,
                   status_subresource: bool = True, keyed: bool = False) -> list[dict[str, Any]]:
    """`after`'s metadata.managedFields once `manager` wrote it, as the API server keeps them
    (k8s.io/apiserver fieldmanager): an Update owns what it changed, added to what it owned;
    an Apply owns exactly its configuration; a field one manager changes leaves every other
    manager; fields that are gone leave everyone; an entry that owns nothing is dropped.
    Entries are per (manager, operation, subresource). Lists are owned whole (with `keyed`,
    the core kinds' associative lists item by item), and conflicts between managers are not
    detected (the sandbox has one person applying)."""
    scope = True if subresource == "status" else (False if status_subresource else None)
    old = _leaves(before or {}, scope, keyed)
    new = _leaves(after, scope, keyed)
    changed = {path for path, value in new.items() if path not in old or old[path] != value}
    entries = [dict(entry) for entry in (before or {}).get("metadata", {}).get(
        "managedFields") or []]
    mine = next((entry for entry in entries if entry.get("manager") == manager
                 and entry.get("operation") == operation
                 and entry.get("subresource") == subresource), None)
    result = []
    for entry in entries:
        if entry is mine:
            continue
        owned = owned_paths(entry.get("fieldsV1") or {})
        if (entry.get("subresource") == "status") == (subresource == "status"):
            owned = {path for path in owned - changed if path in new}
        if owned:
            result.append({**entry, "fieldsV1": fields_v1(owned)})
    if operation == "Apply":
        owned = {path for path in _leaves(dict(applied or {}), scope, keyed) if path in new}
    else:
        previous = owned_paths((mine or {}).get("fieldsV1") or {})
        owned = {path for path in previous | changed if path in new}
    if owned:
        entry = {"manager": manager, "operation": operation,
                 "apiVersion": after.get("apiVersion"), "time": now, "fieldsType": "FieldsV1",
                 "fieldsV1": fields_v1(owned)}
        if subresource:
            entry["subresource"] = subresource
        result.append(entry)
    return result
