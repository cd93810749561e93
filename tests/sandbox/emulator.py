"""An emulated Kubernetes API server: kmock's KubernetesEmulator plus the shim kopf needs.

kmock 0.8 stores objects and streams watch events, but leaves out what a real API server
adds, and bare kmock does not work with kopf 1.45.2. This shim owns the writes
(create, patch, delete) and fixes the reads the operator and kubectl-like clients use:

- create: uid, resourceVersion, creationTimestamp, generation, apiVersion/kind, the URL's
  namespace in metadata, generateName, 409 on a duplicate;
- patch: merge patch (null deletes) or JSON patch (a failed `test` is 422), a stale
  metadata.resourceVersion is 409, resourceVersion bumped on every change (not on a no-op),
  generation bumped when .spec changes, /status isolated from the main resource;
- delete: finalizers hold the object with a deletionTimestamp, as the real server does;
- list: equality label selectors, kind and apiVersion on the list;
- namespaces: kmock's path parser fails on /api/v1/namespaces[/name]; a wrapper reads them;
- discovery of the core group says groupVersion v1, not /v1.

What stays unlike a real server (the kind end-to-end tests cover it): no garbage collection
by owner references, no strategic merge, no admission or schema validation, watches replay
everything on reconnect.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import json
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
from kmock._internal import dicts, enums, k8s_dicts, parsing, rendering

HISTORY_KEPT = 3
"""Versions of each object kmock keeps in memory (it would otherwise keep every one)."""

RESOURCES: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    # "group/version/plural": (kind, namespaced, subresources)
    "v1/namespaces": ("Namespace", False, ("status",)),
    "v1/pods": ("Pod", True, ("status",)),
    "v1/services": ("Service", True, ("status",)),
    "v1/events": ("Event", True, ()),
    "apps/v1/deployments": ("Deployment", True, ("status", "scale")),
    "events.k8s.io/v1/events": ("Event", True, ()),
}
VERBS = ("get", "list", "watch", "create", "patch", "delete")


_parse_path = parsing.parse_path


def _parse_namespaces(path: str) -> parsing.ParsedPath:
    """kmock reads /api/v1/namespaces[/name] as a namespaced path missing its resource."""
    match = re.fullmatch(r"/api/v1/namespaces(?:/([^/]+))?(?:/(status|finalize))?/?", path)
    if match:
        return parsing.ParsedPath("", "v1", "namespaces", None, match.group(1), match.group(2))
    return _parse_path(path)


parsing.parse_path = _parse_namespaces


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return aiohttp.web.json_response({"apiVersion": "v1", "kind": "Status", "metadata": {},
                                      "status": "Failure", "code": code, "reason": reason,
                                      "message": message}, status=code)


class Emulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """KubernetesEmulator with the behaviour of a real API server that kopf relies on."""

    def setup(self, crds: list[Mapping[str, Any]], namespaces: list[str]) -> None:
        self._kinds: dict[Any, tuple[str, str, set[str]]] = {}
        self._versions = itertools.count(1000)
        for key, (kind, namespaced, subresources) in RESOURCES.items():
            self._declare(key, kind, namespaced, subresources, singular=kind.lower())
        for crd in crds:
            spec = crd["spec"]
            for version in spec["versions"]:
                self._declare(f"{spec['group']}/{version['name']}/{spec['names']['plural']}",
                              spec["names"]["kind"], spec["scope"] == "Namespaced",
                              tuple(version.get("subresources", {})),
                              singular=spec["names"]["singular"],
                              shortnames=spec["names"].get("shortNames", ()))
        for namespace in namespaces:
            self.objects[kmock.resource("", "v1", "namespaces"), None, namespace] = \
                self._stamp_new({"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": namespace}, "status": {"phase": "Active"}})

    def _declare(self, key: str, kind: str, namespaced: bool, subresources: tuple[str, ...],
                 singular: str, shortnames: tuple[str, ...] = ()) -> None:
        self.resources[key] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, singular=singular, verbs=set(VERBS),
            subresources=set(subresources), shortnames=set(shortnames))
        parts = key.split("/")
        group, version, plural = ("", *parts) if len(parts) == 2 else parts
        api_version = f"{group}/{version}" if group else version
        self._kinds[kmock.resource(group, version, plural)] = (kind, api_version,
                                                                set(subresources))

    def _stamp_new(self, obj: dict[str, Any]) -> dict[str, Any]:
        metadata = obj.setdefault("metadata", {})
        metadata["uid"] = str(uuid.uuid4())
        metadata["resourceVersion"] = str(next(self._versions))
        metadata["creationTimestamp"] = _now()
        metadata["generation"] = 1
        return obj

    # --- dispatch ----------------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path.rstrip("/")
        if request.method == enums.method.GET and path == "/api/v1":
            payload = await self._serve_version(request)
            payload["groupVersion"] = "v1"
            return aiohttp.web.json_response(payload)
        if request.resource is not None and request.resource in self._kinds:
            if request.action == enums.action.CREATE:
                return await self._create(request)
            if request.action == enums.action.UPDATE:
                return await self._patch(request)
            if request.action == enums.action.DELETE and request.name is not None:
                return await self._delete(request)
        return await super()._handle(request)

    async def _serve_list(self, request: rendering.Request) -> dict[str, Any]:
        payload: dict[str, Any] = dict(await super()._serve_list(request))
        selector = request.params.get("labelSelector")
        if selector:
            wanted = dict(part.split("=", 1) for part in selector.replace("==", "=").split(",")
                          if "=" in part)
            payload["items"] = [item for item in payload["items"] if all(
                ((item.get("metadata") or {}).get("labels") or {}).get(key) == value
                for key, value in wanted.items())]
        kind, api_version, _ = self._kinds.get(request.resource, ("", "v1", set()))
        payload["kind"] = f"{kind}List"
        payload["apiVersion"] = api_version
        payload["metadata"] = {"resourceVersion": str(next(self._versions))}
        return payload

    # --- writes ------------------------------------------------------------------------

    async def _create(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        kind, api_version, _ = self._kinds[request.resource]
        obj = copy.deepcopy(request.data) if isinstance(request.data, dict) else {}
        metadata = obj.setdefault("metadata", {})
        namespace = request.namespace or metadata.get("namespace")
        if namespace:
            metadata["namespace"] = namespace
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
        name = metadata.get("name")
        if not name:
            return _status(422, "Invalid", "metadata.name: Required value")
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind)
        key = (request.resource, namespace, name)
        async with self._lock:
            if key in self.objects and not self.objects[key].deleted:
                return _status(409, "AlreadyExists", f'{kind} "{name}" already exists')
            self._stamp_new(obj)
            if key in self.objects:
                self.objects[key].create(obj)
            else:
                self.objects[key] = obj
            await self._buses[request.resource].put({"type": "ADDED", "object": obj})
        return aiohttp.web.json_response(obj, status=201)

    async def _patch(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        kind, _, subresources = self._kinds[request.resource]
        async with self._lock:
            stored, current = self._current(request)
            if stored is None:
                return _status(404, "NotFound", f'{kind} "{request.name}" not found')
            patch = request.data
            try:
                if isinstance(patch, list):
                    changed = jsonpatch.apply_patch(copy.deepcopy(current), patch)
                elif isinstance(patch, dict):
                    wanted_version = (patch.get("metadata") or {}).get("resourceVersion")
                    if wanted_version and wanted_version != current["metadata"]["resourceVersion"]:
                        return _status(409, "Conflict", f'Operation cannot be fulfilled on '
                                       f'{kind} "{request.name}": the object has been modified')
                    changed = dict(dicts.merge_patch_dict(copy.deepcopy(current), patch))
                else:
                    return _status(400, "BadRequest", "the patch is not JSON")
            except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict) as exc:
                return _status(422, "Invalid", f"the JSON patch failed: {exc}")
            if request.subresource == "status":
                changed = {**current, "status": changed.get("status")}
            elif "status" in subresources:
                changed = {**changed, "status": current.get("status")}
            changed = {key_: value for key_, value in changed.items() if value is not None}
            # identity and bookkeeping are the server's, whatever the patch said
            for field in ("uid", "name", "namespace", "creationTimestamp", "resourceVersion",
                          "generation"):
                if field in current["metadata"]:
                    changed.setdefault("metadata", {})[field] = current["metadata"][field]
            if changed == current:
                return aiohttp.web.json_response(current)
            if changed.get("spec") != current.get("spec"):
                changed["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            changed["metadata"]["resourceVersion"] = str(next(self._versions))
            metadata = changed["metadata"]
            if metadata.get("deletionTimestamp") and not metadata.get("finalizers"):
                stored.delete()
                await self._buses[request.resource].put({"type": "DELETED", "object": changed})
                return aiohttp.web.json_response(changed)
            self._store(stored, changed)
            await self._buses[request.resource].put({"type": "MODIFIED", "object": changed})
        return aiohttp.web.json_response(changed)

    async def _delete(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        kind, _, _ = self._kinds[request.resource]
        async with self._lock:
            stored, current = self._current(request)
            if stored is None:
                return _status(404, "NotFound", f'{kind} "{request.name}" not found')
            metadata = current["metadata"]
            if metadata.get("finalizers"):
                if not metadata.get("deletionTimestamp"):
                    metadata["deletionTimestamp"] = _now()
                    metadata["resourceVersion"] = str(next(self._versions))
                    self._store(stored, current)
                    await self._buses[request.resource].put({"type": "MODIFIED",
                                                             "object": current})
                return aiohttp.web.json_response(current, status=202)
            stored.delete()
            await self._buses[request.resource].put({"type": "DELETED", "object": current})
        return aiohttp.web.json_response(current)

    def _current(self, request: rendering.Request) -> tuple[Any, dict[str, Any]]:
        """The stored object a request names and a copy of its content; (None, {}) if none."""
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return None, {}
        return self.objects[key], copy.deepcopy(self.objects[key].raw)

    @staticmethod
    def _store(stored: Any, obj: dict[str, Any]) -> None:
        history = stored.history
        history.append(k8s_dicts.ObjectVersion(obj))
        while len(history) > HISTORY_KEPT:
            del history[0]

    # --- direct access for the harness (thread-safe snapshots) -------------------------

    def snapshot(self, resource_key: str, namespace: str | None = None) -> list[dict[str, Any]]:
        resource = kmock.resource(resource_key)
        return [json.loads(json.dumps(obj.raw)) for (res, ns, _), obj in
                list(self.objects.items())
                if res == resource and not obj.deleted and (namespace is None or ns == namespace)]


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EmulatedCluster:
    """The emulator served over HTTP on 127.0.0.1 from a thread of its own, with a kubeconfig."""

    def __init__(self, crds: list[Mapping[str, Any]], namespaces: list[str], workdir: Path):
        self.crds = crds
        self.namespaces = namespaces
        self.kubeconfig = workdir / "kubeconfig"
        self.emulator: Emulator | None = None
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @contextmanager
    def running(self) -> Iterator[EmulatedCluster]:
        started = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            self._stop = asyncio.Event()
            emulator = Emulator()
            emulator.setup(self.crds, self.namespaces)
            async with emulator, kmock.Server(emulator, host="127.0.0.1") as server:
                self.emulator = emulator
                self.url = f"http://127.0.0.1:{server.port}"
                started.set()
                await self._stop.wait()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(serve())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                started.set()

        self._thread = threading.Thread(target=main, name="emulated-apiserver", daemon=True)
        self._thread.start()
        started.wait(30)
        if failure or not self.url:
            raise RuntimeError(f"the emulated API server did not start: {failure!r}")
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "sandbox",
            "clusters": [{"name": "sandbox", "cluster": {"server": self.url}}],
            "users": [{"name": "sandbox", "user": {"token": "sandbox"}}],
            "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox",
                                                         "user": "sandbox",
                                                         "namespace": "default"}}],
        }))
        try:
            yield self
        finally:
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
