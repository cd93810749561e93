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

And what kubectl needs to drive it as a cluster (see kubeapi.py and admission.py):

- discovery with short names and categories (subresources carry none, or `md` is ambiguous),
  `/version` reporting the emulated Kubernetes release, OpenAPI v3 documents (`kubectl
  explain`, and the fieldValidation parameter that lets `kubectl apply` validate server-side);
- custom resources admitted from their CRD: unknown fields pruned (refused with
  fieldValidation=Strict, kubectl's default), defaults applied, schema and CEL rules checked,
  errors as a Status with causes; `dryRun=All` stores nothing;
- server-side apply, strategic merge patches of core kinds, Table answers with printer
  columns, field selectors on lists and watches, pod logs from the kubelet stand-in's files;
- garbage collection by ownerReferences: background (the default: dependents go once their
  owner is gone), foreground (the owner stays, with a deletionTimestamp and the
  foregroundDeletion finalizer, until its dependents are gone) and orphan.

- a Service's name must be a DNS-1035 label (422, in the API server's words);
- admission refusals a test switches on with a ConfigMap (admission.REFUSALS_CONFIGMAP): a
  write of a kind, verb and name refused with 403 as a webhook's denial or 422 as a
  ValidatingAdmissionPolicy's.
What stays unlike a real server: no RBAC or authentication, no admission webhooks (beyond
that switch), no validation of core kinds beyond metadata.name, no conflict detection between
server-side apply managers, watches replay everything on reconnect.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import json
import re
import threading
import traceback
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
import yaml
from kmock._internal import dicts, enums, k8s_dicts, parsing, rendering

from sandbox import kubeapi
from sandbox.admission import REFUSALS_CONFIGMAP, Admission, FieldError, core_name_errors, refusals

HISTORY_KEPT = 3
"""Versions of each object kmock keeps in memory (it would otherwise keep every one)."""

RESOURCES: dict[str, tuple[str, bool, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # "group/version/plural": (kind, namespaced, subresources, short names, categories)
    "v1/namespaces": ("Namespace", False, ("status",), ("ns",), ()),
    "v1/pods": ("Pod", True, ("status", "log"), ("po",), ("all",)),
    "v1/services": ("Service", True, ("status",), ("svc",), ("all",)),
    "v1/events": ("Event", True, (), ("ev",), ()),
    "v1/configmaps": ("ConfigMap", True, (), ("cm",), ()),
    "apps/v1/deployments": ("Deployment", True, ("status", "scale"), ("deploy",), ("all",)),
    "apps/v1/replicasets": ("ReplicaSet", True, ("status",), ("rs",), ("all",)),
    "events.k8s.io/v1/events": ("Event", True, (), ("ev",), ()),
    # stored and listed only (no RBAC is enforced): what `kubectl apply/delete -k` of the
    # install manifests touches besides the above
    "v1/serviceaccounts": ("ServiceAccount", True, (), ("sa",), ()),
    "rbac.authorization.k8s.io/v1/clusterroles": ("ClusterRole", False, (), (), ()),
    "rbac.authorization.k8s.io/v1/clusterrolebindings": ("ClusterRoleBinding", False, (), (),
                                                         ()),
    "rbac.authorization.k8s.io/v1/roles": ("Role", True, (), (), ()),
    "rbac.authorization.k8s.io/v1/rolebindings": ("RoleBinding", True, (), (), ()),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False,
                                                          ("status",), ("crd", "crds"), ()),
}
POD = kmock.resource("", "v1", "pods")
CONFIGMAP = kmock.resource("", "v1", "configmaps")
GC_PERIOD = 0.1
"""Seconds between passes of the garbage collector."""
APPLY = "application/apply-patch+yaml"
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


REQUESTS_KEPT = 64
"""Of kmock's request history: enough for every request still being served (watches
included, which only need their own entry while they match)."""


class Emulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """KubernetesEmulator with the behaviour of a real API server that kopf relies on."""

    def setup(self, crds: list[Mapping[str, Any]], namespaces: list[str]) -> None:
        self._kinds: dict[Any, tuple[str, str, set[str]]] = {}
        self._infos: dict[Any, dict[str, Any]] = {}
        self._admissions: dict[Any, Admission] = {}
        self._applied: dict[tuple[Any, str | None, str, str], set[tuple[str, ...]]] = {}
        self._versions = itertools.count(1000)
        self.pod_logs: Path | None = None
        self.admit_custom_resources = True
        """False: custom resources are stored unchecked, as under a CRD older than its rules
        (how an operator test still meets a spec only the operator can refuse)."""
        for key, (kind, namespaced, subresources, short, categories) in RESOURCES.items():
            self._declare(key, kind, namespaced, subresources, singular=kind.lower(),
                          shortnames=short, categories=categories)
        for crd in crds:
            spec = crd["spec"]
            for version in spec["versions"]:
                key = f"{spec['group']}/{version['name']}/{spec['names']['plural']}"
                self._declare(key, spec["names"]["kind"], spec["scope"] == "Namespaced",
                              tuple(version.get("subresources", {})),
                              singular=spec["names"]["singular"],
                              shortnames=spec["names"].get("shortNames", ()),
                              categories=spec["names"].get("categories", ()))
                resource = kmock.resource(key)
                self._admissions[resource] = Admission(crd, version["name"])
                self._infos[resource]["schema"] = version["schema"]["openAPIV3Schema"]
                self._infos[resource]["columns"] = version.get("additionalPrinterColumns", [])
            # the CRD object itself, as `kubectl get crd` shows it on a cluster
            self.objects[kmock.resource("apiextensions.k8s.io", "v1",
                                        "customresourcedefinitions"), None,
                         crd["metadata"]["name"]] = self._stamp_new(copy.deepcopy(dict(crd)))
        for namespace in namespaces:
            self.objects[kmock.resource("", "v1", "namespaces"), None, namespace] = \
                self._stamp_new({"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": namespace}, "status": {"phase": "Active"}})

    def _declare(self, key: str, kind: str, namespaced: bool, subresources: tuple[str, ...],
                 singular: str, shortnames: tuple[str, ...] = (),
                 categories: tuple[str, ...] = ()) -> None:
        self.resources[key] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, singular=singular, verbs=set(VERBS),
            subresources=set(subresources), shortnames=set(shortnames))
        parts = key.split("/")
        group, version, plural = ("", *parts) if len(parts) == 2 else parts
        api_version = f"{group}/{version}" if group else version
        resource = kmock.resource(group, version, plural)
        self._kinds[resource] = (kind, api_version, set(subresources))
        self._infos[resource] = {"group": group, "version": version, "plural": plural,
                                 "kind": kind, "namespaced": namespaced, "singular": singular,
                                 "subresources": subresources, "shortNames": list(shortnames),
                                 "categories": list(categories)}

    def _stamp_new(self, obj: dict[str, Any]) -> dict[str, Any]:
        metadata = obj.setdefault("metadata", {})
        metadata["uid"] = str(uuid.uuid4())
        metadata["resourceVersion"] = str(next(self._versions))
        metadata["creationTimestamp"] = _now()
        metadata["generation"] = 1
        return obj

    # --- dispatch ----------------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        # kmock keeps every request it ever served, and matching a request to a reaction walks
        # that whole history (`request in view`) applying the reaction's filter to each, once
        # per reaction: the cost of a request grew with the number before it (9 ms of CPU at
        # 300, 88 ms at 1,500). No test reads the history: it holds the requests in flight
        # (watches stay while they stream), capped in case a client leaves many hanging.
        del self._requests[:-REQUESTS_KEPT]
        try:
            return await self._serve(request)
        finally:
            for index in range(len(self._requests) - 1, -1, -1):
                if self._requests[index] is request:
                    del self._requests[index]
                    break

    async def _serve(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path.rstrip("/")
        if request.method == enums.method.GET:
            if path == "/version":
                return aiohttp.web.json_response(_version())
            if path == "/openapi/v3" or path.startswith("/openapi/v3/"):
                return self._openapi(path)
            if path in ("/openapi/v2", "/swagger-2.0.0.pb-v1"):
                # kubectl falls back to v3 or to its built-in types when v2 is missing
                return _status(404, "NotFound", "OpenAPI v2 is not served: use v3")
            if re.fullmatch(r"/api/v1|/apis/[^/]+/[^/]+", path):
                return self._discovery(path)
        if request.resource is not None and request.resource in self._kinds:
            if request.subresource == "log" and request.name is not None:
                return await self._log(request)
            if request.subresource == "scale" and request.name is not None:
                return await self._scale(request)
            if request.action == enums.action.CREATE:
                return await self._create(request)
            if request.action == enums.action.UPDATE or request.method == enums.method.PUT:
                return await self._patch(request)
            if request.action == enums.action.DELETE and request.name is not None:
                return await self._delete(request)
            if request.action == enums.action.WATCH:
                return await self._watch(request)
            if request.action == enums.action.FETCH and self._current(request)[0] is None:
                return _status(404, "NotFound",
                               f'{self._qualified(request)} "{request.name}" not found')
            if request.action in (enums.action.LIST, enums.action.FETCH) and \
                    kubeapi.wants_table(request.headers.get("Accept", "")):
                return await self._table(request)
        return await super()._handle(request)

    # --- discovery, version, OpenAPI --------------------------------------------------------

    def _discovery(self, path: str) -> aiohttp.web.StreamResponse:
        """APIResourceList of one group-version, subresources without short names or
        categories (kmock copies them onto subresources, which makes `md` ambiguous)."""
        group_version = "v1" if path == "/api/v1" else path.removeprefix("/apis/")
        resources = []
        for info in self._infos.values():
            if (f"{info['group']}/{info['version']}" if info["group"] else info["version"]) \
                    != group_version:
                continue
            resources.append({"name": info["plural"], "singularName": info["singular"],
                              "namespaced": info["namespaced"], "kind": info["kind"],
                              "verbs": [*VERBS, "update"],
                              "shortNames": info["shortNames"],
                              "categories": info["categories"]})
            for sub in info["subresources"]:
                resources.append({"name": f"{info['plural']}/{sub}", "singularName": "",
                                  "namespaced": info["namespaced"],
                                  "kind": "Scale" if sub == "scale" else info["kind"],
                                  "verbs": ["get"] if sub == "log" else
                                  ["get", "patch", "update"]})
        if not resources:
            return _status(404, "NotFound", f"the server could not find {path}")
        return aiohttp.web.json_response({"kind": "APIResourceList", "apiVersion": "v1",
                                          "groupVersion": group_version,
                                          "resources": resources})

    def _openapi_documents(self) -> dict[str, dict[str, Any]]:
        by_group_version: dict[str, list[dict[str, Any]]] = {}
        for info in self._infos.values():
            key = f"apis/{info['group']}/{info['version']}" if info["group"] \
                else f"api/{info['version']}"
            by_group_version.setdefault(key, []).append(info)
        return {key: kubeapi.openapi_v3(infos[0]["group"], infos[0]["version"], infos)
                for key, infos in by_group_version.items()}

    def _openapi(self, path: str) -> aiohttp.web.StreamResponse:
        documents = self._openapi_documents()
        if path == "/openapi/v3":
            return aiohttp.web.json_response({"paths": {
                key: {"serverRelativeURL": f"/openapi/v3/{key}?hash="
                                           f"{kubeapi.document_hash(document)}"}
                for key, document in documents.items()}})
        document = documents.get(path.removeprefix("/openapi/v3/"))
        if document is None:
            return _status(404, "NotFound", f"no OpenAPI document at {path}")
        return aiohttp.web.json_response(document)

    # --- reads: tables, selectors, logs -----------------------------------------------------

    async def _table(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        info = self._infos[request.resource]
        if request.action == enums.action.FETCH:
            stored, current = self._current(request)
            if stored is None:
                return _status(404, "NotFound",
                               f'{self._qualified(request)} "{request.name}" not found')
            objects = [current]
        else:
            objects = list((await self._serve_list(request))["items"])
        return aiohttp.web.json_response(kubeapi.table(
            objects, info["kind"], info.get("columns"), str(next(self._versions)),
            datetime.datetime.now(tz=datetime.UTC)))

    def _selected(self, request: rendering.Request, obj: Mapping[str, Any]) -> bool:
        return kubeapi.matches_labels(obj, kubeapi.parse_selector(
            request.params.get("labelSelector"))) and kubeapi.matches_fields(
            obj, kubeapi.parse_selector(request.params.get("fieldSelector")))

    def _deleted_since_list(self, request: rendering.Request) -> list[dict[str, Any]]:
        """The named object of a watch that resumes a list (`resourceVersion` given) if it was
        deleted meanwhile. kmock starts every watch with what exists now, so a deletion
        between a client's list and its watch would never reach it (kubectl delete and
        kubectl wait --for=delete then wait forever); an API server replays it from the
        resourceVersion."""
        if not request.params.get("resourceVersion"):
            return []
        names = [term.split("=", 1)[1].lstrip("=") for term in
                 (request.params.get("fieldSelector") or "").split(",")
                 if term.startswith("metadata.name=")]
        if len(names) != 1:
            return []
        key = (request.resource, request.namespace, names[0])
        if key not in self.objects:  # kmock's ObjectsArray: a mapping without .get
            return []
        stored = self.objects[key]
        if not stored.deleted:
            return []
        return [json.loads(json.dumps(stored.last.raw))]

    async def _serve_watch(self, request: rendering.Request) -> Any:
        as_table = kubeapi.wants_table(request.headers.get("Accept", ""))
        info = self._infos.get(request.resource, {})
        replayed = False
        async for event in super()._serve_watch(request):
            if not replayed:  # after the stream's first (empty) chunk, as events would come
                replayed = True
                yield event
                for gone in self._deleted_since_list(request):
                    yield {"type": "DELETED", "object": gone}
                continue
            if isinstance(event, dict):
                obj = event.get("object") or {}
                if not self._selected(request, obj):
                    continue
                if as_table:
                    event = {"type": event["type"], "object": kubeapi.table(
                        [obj], info.get("kind", ""), info.get("columns"),
                        obj.get("metadata", {}).get("resourceVersion", ""),
                        datetime.datetime.now(tz=datetime.UTC))}
            yield event

    async def _watch(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """A watch stream as the API server sends it: JSON lines, typed application/json
        (kmock's own is application/octet-stream, which kubectl cannot decode)."""
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        try:
            async with asyncio.timeout(timeout):
                async for event in self._serve_watch(request):
                    if isinstance(event, dict):
                        await response.write(json.dumps(event).encode() + b"\n")
        except (TimeoutError, ConnectionResetError):
            pass
        return response

    async def _log(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """A pod's log: the file the kubelet stand-in writes its process's output to."""
        stored, _ = self._current(request)
        if stored is None:
            return _status(404, "NotFound", f'pods "{request.name}" not found')
        path = (self.pod_logs or Path("/nonexistent")) / f"{request.name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        tail = request.params.get("tailLines")
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-int(tail):] if int(tail) else [])
        if request.params.get("follow") != "true":
            return aiohttp.web.Response(text=text, content_type="text/plain")
        raw = request._raw_request
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(raw)
        await response.write(text.encode())
        offset = path.stat().st_size if path.exists() else 0
        while self._current(request)[0] is not None:
            await asyncio.sleep(0.2)
            if path.exists() and path.stat().st_size > offset:
                with path.open("rb") as log:
                    log.seek(offset)
                    chunk = log.read()
                offset += len(chunk)
                await response.write(chunk)
        return response

    async def _serve_list(self, request: rendering.Request) -> dict[str, Any]:
        payload: dict[str, Any] = dict(await super()._serve_list(request))
        payload["items"] = [item for item in payload["items"] if self._selected(request, item)]
        kind, api_version, _ = self._kinds.get(request.resource, ("", "v1", set()))
        payload["kind"] = f"{kind}List"
        payload["apiVersion"] = api_version
        payload["metadata"] = {"resourceVersion": str(next(self._versions))}
        return payload

    # --- writes ------------------------------------------------------------------------

    def _conflict(self, request: rendering.Request) -> aiohttp.web.Response:
        """409 for a write that names a resourceVersion other than the stored one."""
        return _status(409, "Conflict", f'Operation cannot be fulfilled on '
                       f'{self._qualified(request)} "{request.name}": the object has been '
                       "modified; please apply your changes to the latest version and try again")

    def _admit(self, request: rendering.Request, obj: dict[str, Any],
               old: dict[str, Any] | None = None) -> tuple[dict[str, Any] | None,
                                                            aiohttp.web.Response | None,
                                                            list[str]]:
        """Admission of a custom resource about to be stored: (object to store, None,
        warnings), or (None, error response, []). Core kinds only need a name."""
        kind, api_version, _ = self._kinds[request.resource]
        name = str((obj.get("metadata") or {}).get("name") or "")
        refused = self._policy_refusal(request, "create" if old is None else "patch", name)
        if refused is not None:
            return None, refused, []
        if old is None and (errors := core_name_errors(kind, name)):
            group = self._infos[request.resource]["group"]
            return None, _invalid(f"{kind}.{group}" if group else kind, obj, errors), []
        admission = self._admissions.get(request.resource)
        if admission is None or not self.admit_custom_resources:
            return obj, None, []
        verdict = admission.admit(obj)
        validation = request.params.get("fieldValidation", "Warn")
        if verdict.unknown_fields and validation == "Strict":
            unknown = ", ".join(f'unknown field "{path}"' for path in verdict.unknown_fields)
            return None, _status(400, "BadRequest",
                                 f'{kind} in version "{api_version.split("/")[-1]}" cannot be '
                                 f"handled as a {kind}: strict decoding error: {unknown}"), []
        errors = verdict.errors
        if request.subresource == "status":  # a status write is judged on its status
            errors = [e for e in errors if e.field.startswith("status")]
        if old is not None:  # as the API server ratchets: errors already stored pass
            errors = [e for e in errors if e not in set(admission.admit(old).errors)]
        if errors:
            return None, _invalid(admission.qualified_kind, obj, errors), []
        warnings = [] if validation == "Ignore" else \
            [f'unknown field "{path}"' for path in verdict.unknown_fields]
        return verdict.obj, None, warnings

    def _policy_refusal(self, request: rendering.Request, verb: str,
                        name: str) -> aiohttp.web.Response | None:
        """The refusal the namespace's sandbox-admission-refusals ConfigMap declares for this
        write (admission.REFUSALS_CONFIGMAP), if any; status subresource writes pass."""
        if request.subresource is not None or request.namespace is None:
            return None
        kind = self._kinds[request.resource][0]
        key = (CONFIGMAP, request.namespace, REFUSALS_CONFIGMAP)
        if key not in self.objects or self.objects[key].deleted:
            return None
        configmap = self.objects[key]
        for rule in refusals(configmap.raw):
            if rule.matches(kind, verb, name):
                body = rule.status(self._qualified(request), name)
                return aiohttp.web.json_response(body, status=rule.code)
        return None

    async def _create(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        obj = copy.deepcopy(request.data) if isinstance(request.data, dict) else {}
        return await self._create_object(request, obj)

    async def _create_object(self, request: rendering.Request,
                             obj: dict[str, Any]) -> aiohttp.web.StreamResponse:
        kind, api_version, _ = self._kinds[request.resource]
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
        obj, refusal, warnings = self._admit(request, obj)
        if refusal is not None or obj is None:
            return refusal or _status(500, "InternalError", "admission failed")
        key = (request.resource, namespace, name)
        async with self._lock:
            if key in self.objects and not self.objects[key].deleted:
                return _status(409, "AlreadyExists",
                               f'{self._qualified(request)} "{name}" already exists')
            self._stamp_new(obj)
            obj["metadata"]["managedFields"] = self._managed_fields(request, None, obj, obj)
            if request.params.get("dryRun"):
                return _json(obj, 201, warnings)
            if key in self.objects:
                self.objects[key].create(obj)
            else:
                self.objects[key] = obj
            await self._buses[request.resource].put({"type": "ADDED", "object": obj})
        return _json(obj, 201, warnings)

    def _qualified(self, request: rendering.Request) -> str:
        info = self._infos[request.resource]
        return f"{info['plural']}.{info['group']}" if info["group"] else info["plural"]

    async def _patch(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        content_type = request.headers.get("Content-Type", "").split(";")[0]
        patch = request.data
        if patch is None and request.text:
            try:
                patch = yaml.safe_load(request.text)
            except yaml.YAMLError as exc:
                return _status(400, "BadRequest", f"the body is neither JSON nor YAML: {exc}")
        # one write at a time, computed on the latest version, as the API server's
        # GuaranteedUpdate does (only an explicit resourceVersion in the patch conflicts)
        async with self._lock:
            stored, current = self._current(request)
            if stored is None and not (content_type == APPLY and isinstance(patch, dict)):
                return _status(404, "NotFound", f'{self._qualified(request)} '
                               f'"{request.name}" not found')
            if stored is not None:
                return await self._patch_locked(request, content_type, patch, stored, current)
        self._remember_apply(request, patch)  # server-side apply creates
        return await self._create_object(request, copy.deepcopy(patch))

    async def _patch_locked(self, request: rendering.Request, content_type: str, patch: Any,
                            stored: Any, current: dict[str, Any]) -> aiohttp.web.StreamResponse:
        _, _, subresources = self._kinds[request.resource]
        try:
            if content_type == APPLY and isinstance(patch, dict):
                manager = request.params.get("fieldManager", "")
                previous = self._applied.get((request.resource, request.namespace,
                                              request.name, manager), set())
                changed = kubeapi.server_side_apply(current, patch, previous)
            elif isinstance(patch, list):
                changed = jsonpatch.apply_patch(copy.deepcopy(current), patch)
            elif isinstance(patch, dict):
                wanted_version = (patch.get("metadata") or {}).get("resourceVersion")
                if wanted_version and wanted_version != current["metadata"]["resourceVersion"]:
                    return self._conflict(request)
                if request.method == enums.method.PUT:
                    changed = copy.deepcopy(patch)
                elif content_type == "application/strategic-merge-patch+json":
                    changed = kubeapi.strategic_merge(copy.deepcopy(current), patch)
                else:
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
                      "generation", "deletionTimestamp"):
            if field in current["metadata"]:
                changed.setdefault("metadata", {})[field] = current["metadata"][field]
        admitted, refusal, warnings = self._admit(request, changed, current)
        if refusal is not None or admitted is None:
            return refusal or _status(500, "InternalError", "admission failed")
        changed = admitted
        if content_type == APPLY and isinstance(patch, dict):
            self._remember_apply(request, patch)
        if changed == current or request.params.get("dryRun"):
            return _json(changed, 200, warnings)
        changed["metadata"]["managedFields"] = self._managed_fields(request, current, changed,
                                                                    patch)
        if changed.get("spec") != current.get("spec"):
            changed["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        changed["metadata"]["resourceVersion"] = str(next(self._versions))
        metadata = changed["metadata"]
        if metadata.get("deletionTimestamp") and not metadata.get("finalizers"):
            stored.delete()
            await self._buses[request.resource].put({"type": "DELETED", "object": changed})
            return _json(changed, 200, warnings)
        self._store(stored, changed)
        await self._buses[request.resource].put({"type": "MODIFIED", "object": changed})
        return _json(changed, 200, warnings)

    def _managed_fields(self, request: rendering.Request, before: dict[str, Any] | None,
                        after: dict[str, Any], config: Any) -> list[dict[str, Any]]:
        """metadata.managedFields after this write; the manager is the request's fieldManager,
        else the client's User-Agent up to its first "/", as the API server does."""
        apply = request.headers.get("Content-Type", "").split(";")[0] == APPLY
        manager = request.params.get("fieldManager") or \
            request.headers.get("User-Agent", "").split("/")[0] or "unknown"
        _, _, subresources = self._kinds[request.resource]
        return kubeapi.managed_fields(
            before, after, manager, "Apply" if apply else "Update",
            request.subresource if request.subresource in ("status", "scale") else None,
            _now(), applied=config if apply and isinstance(config, dict) else None,
            status_subresource="status" in subresources,
            keyed=request.resource not in self._admissions)

    async def _scale(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """The scale subresource (autoscaling/v1 Scale) of a kind that has one, as `kubectl
        scale` and autoscalers use it: a read, or a write of spec.replicas (merge or JSON
        patch, or PUT) that the API server records for the writer under `subresource: scale`."""
        _, _, subresources = self._kinds[request.resource]
        if "scale" not in subresources:
            return _status(404, "NotFound", f"the server could not find the requested "
                           f"resource ({request.url.path})")
        async with self._lock:
            stored, current = self._current(request)
            if stored is None:
                return _status(404, "NotFound", f'{self._qualified(request)} '
                               f'"{request.name}" not found')
            scale = _scale_of(current)
            if request.method == enums.method.GET:
                return aiohttp.web.json_response(scale)
            patch = request.data
            try:
                if request.method == enums.method.PUT and isinstance(patch, dict):
                    wanted = patch
                elif isinstance(patch, list):
                    wanted = jsonpatch.apply_patch(copy.deepcopy(scale), patch)
                elif isinstance(patch, dict):
                    wanted = dict(dicts.merge_patch_dict(copy.deepcopy(scale), patch))
                else:
                    return _status(400, "BadRequest", "the patch is not JSON")
            except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict) as exc:
                return _status(422, "Invalid", f"the JSON patch failed: {exc}")
            version = (wanted.get("metadata") or {}).get("resourceVersion")
            if version and version != current["metadata"]["resourceVersion"]:
                return self._conflict(request)
            replicas = (wanted.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                return _status(422, "Invalid", f"spec.replicas: Invalid value: {replicas!r}: "
                               "must be greater than or equal to 0")
            if replicas == (current.get("spec") or {}).get("replicas") or \
                    request.params.get("dryRun"):
                return aiohttp.web.json_response({**scale, "spec": {"replicas": replicas}})
            changed = copy.deepcopy(current)
            changed.setdefault("spec", {})["replicas"] = replicas
            changed["metadata"]["managedFields"] = self._managed_fields(request, current,
                                                                        changed, wanted)
            changed["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            changed["metadata"]["resourceVersion"] = str(next(self._versions))
            self._store(stored, changed)
            await self._buses[request.resource].put({"type": "MODIFIED", "object": changed})
        return aiohttp.web.json_response(_scale_of(changed))

    def _remember_apply(self, request: rendering.Request, config: Mapping[str, Any]) -> None:
        manager = request.params.get("fieldManager", "")
        self._applied[(request.resource, request.namespace, request.name, manager)] = \
            set(kubeapi.leaf_paths(dict(config)))

    async def _delete(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        options = request.data if isinstance(request.data, dict) else {}
        policy = options.get("propagationPolicy") or request.params.get("propagationPolicy") \
            or ("Orphan" if options.get("orphanDependents") else "Background")
        if request.params.get("dryRun") or options.get("dryRun"):
            stored, current = self._current(request)
            if stored is None:
                return _status(404, "NotFound", f'{self._qualified(request)} '
                               f'"{request.name}" not found')
            return aiohttp.web.json_response(current)
        refused = self._policy_refusal(request, "delete", request.name or "")
        if refused is not None:
            return refused
        grace = options.get("gracePeriodSeconds", request.params.get("gracePeriodSeconds"))
        async with self._lock:
            found = await self._delete_object(request.resource, request.namespace,
                                              request.name or "", policy,
                                              None if grace is None else int(grace))
        if found is None:
            return _status(404, "NotFound", f'{self._qualified(request)} "{request.name}" '
                           "not found")
        current, held = found
        return aiohttp.web.json_response(current, status=202 if held else 200)

    async def _delete_object(self, resource: Any, namespace: str | None, name: str,
                             policy: str, grace: int | None = None,
                             ) -> tuple[dict[str, Any], bool] | None:
        """Delete one object (the lock held); (its last state, still held by finalizers) or
        None if there is none. Foreground holds the owner until its dependents are gone;
        Orphan releases the dependents first; Background leaves them to the collector. A
        running pod is only marked (Terminating, as with a grace period): the kubelet
        stand-in stops its process, then deletes it for good with a grace period of 0."""
        key = (resource, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        stored = self.objects[key]
        current = copy.deepcopy(stored.raw)
        metadata = current["metadata"]
        if resource == POD and grace != 0 and \
                (current.get("status") or {}).get("phase") == "Running":
            if not metadata.get("deletionTimestamp"):
                metadata["deletionTimestamp"] = _now()
                metadata["deletionGracePeriodSeconds"] = 30 if grace is None else grace
                metadata["resourceVersion"] = str(next(self._versions))
                self._store(stored, current)
                await self._buses[resource].put({"type": "MODIFIED", "object": current})
            return current, True
        if policy == "Orphan":
            await self._orphan(metadata["uid"])
        finalizers = list(metadata.get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if finalizers:
            if not metadata.get("deletionTimestamp") or \
                    finalizers != list(metadata.get("finalizers") or []):
                metadata.setdefault("deletionTimestamp", _now())
                metadata["finalizers"] = finalizers
                metadata["resourceVersion"] = str(next(self._versions))
                self._store(stored, current)
                await self._buses[resource].put({"type": "MODIFIED", "object": current})
            return current, True
        stored.delete()
        await self._buses[resource].put({"type": "DELETED", "object": current})
        return current, False

    async def _orphan(self, owner_uid: str) -> None:
        for (resource, _, _), stored in list(self.objects.items()):
            if stored.deleted:
                continue
            refs = (stored.raw.get("metadata") or {}).get("ownerReferences") or []
            if any(ref.get("uid") == owner_uid for ref in refs):
                current = copy.deepcopy(stored.raw)
                current["metadata"]["ownerReferences"] = [
                    ref for ref in refs if ref.get("uid") != owner_uid] or None
                current["metadata"] = {k: v for k, v in current["metadata"].items()
                                       if v is not None}
                current["metadata"]["resourceVersion"] = str(next(self._versions))
                self._store(stored, current)
                await self._buses[resource].put({"type": "MODIFIED", "object": current})

    # --- the garbage collector ---------------------------------------------------------------

    async def collect_garbage(self) -> None:
        """One pass of the garbage collector, as kube-controller-manager's: a dependent whose
        owners are all gone is deleted (in the background); an owner deleted in the foreground
        has its dependents deleted and loses its foregroundDeletion finalizer when none is
        left."""
        async with self._lock:
            live = [(key, stored) for key, stored in list(self.objects.items())
                    if not stored.deleted]
            uids = {stored.raw["metadata"].get("uid") for _, stored in live}
            dependents: dict[str, list[tuple[Any, Any, str]]] = {}
            for (resource, namespace, name), stored in live:
                for ref in (stored.raw.get("metadata") or {}).get("ownerReferences") or []:
                    dependents.setdefault(ref.get("uid"), []).append((resource, namespace, name))
            for (resource, namespace, name), stored in live:
                if stored.deleted:  # collected earlier in this pass
                    continue
                metadata = stored.raw.get("metadata") or {}
                refs = metadata.get("ownerReferences") or []
                if refs and not any(ref.get("uid") in uids for ref in refs) and \
                        not metadata.get("deletionTimestamp"):
                    await self._delete_object(resource, namespace, name, "Background")
                if "foregroundDeletion" in (metadata.get("finalizers") or []) and \
                        metadata.get("deletionTimestamp"):
                    children = [child for child in dependents.get(metadata["uid"], [])
                                if child in self.objects and not self.objects[child].deleted]
                    for child in children:
                        await self._delete_object(*child, "Background")
                    if not children and not stored.deleted:
                        await self._release_foreground(resource, stored)

    async def _release_foreground(self, resource: Any, stored: Any) -> None:
        current = copy.deepcopy(stored.raw)
        metadata = current["metadata"]
        metadata["finalizers"] = [f for f in metadata["finalizers"] if f != "foregroundDeletion"]
        metadata["resourceVersion"] = str(next(self._versions))
        if not metadata["finalizers"]:
            del metadata["finalizers"]
            stored.delete()
            await self._buses[resource].put({"type": "DELETED", "object": current})
        else:
            self._store(stored, current)
            await self._buses[resource].put({"type": "MODIFIED", "object": current})

    async def collect_garbage_forever(self) -> None:
        while True:
            try:
                await self.collect_garbage()
            except Exception:  # a bug here must show, and must not stop collection
                traceback.print_exc()
            await asyncio.sleep(GC_PERIOD)

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


def _scale_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object's autoscaling/v1 Scale, as the API server derives it."""
    metadata = obj.get("metadata") or {}
    labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {key: metadata[key] for key in (
                "name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if key in metadata},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": ",".join(f"{key}={value}"
                                            for key, value in sorted(labels.items()))}}


def _json(obj: Any, status: int, warnings: list[str]) -> aiohttp.web.Response:
    headers = {"Warning": ", ".join(f'299 - {json.dumps(w)}' for w in warnings)} \
        if warnings else None
    return aiohttp.web.json_response(obj, status=status, headers=headers)


def _invalid(qualified_kind: str, obj: Mapping[str, Any],
             errors: list[FieldError]) -> aiohttp.web.Response:
    """422 Invalid, worded as the API server words it (errors.NewInvalid)."""
    unique = list(dict.fromkeys(errors))
    texts = [str(error) for error in unique]
    name = (obj.get("metadata") or {}).get("name", "")
    listed = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    kind, _, group = qualified_kind.partition(".")  # a core kind has no group
    return aiohttp.web.json_response({
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": f'{qualified_kind} "{name}" is invalid: {listed}', "reason": "Invalid",
        "details": {"name": name, "group": group, "kind": kind, "causes": [
            {"reason": error.reason, "message": error.body(), "field": error.field}
            for error in unique]},
        "code": 422}, status=422)


def _version() -> dict[str, str]:
    major, minor, _ = kubeapi.KUBERNETES_VERSION.lstrip("v").split(".")
    return {"major": major, "minor": minor,
            "gitVersion": f"{kubeapi.KUBERNETES_VERSION}+modelgate-sandbox",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
            "goVersion": "python", "compiler": "kmock", "platform": "linux/amd64"}


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EmulatedCluster:
    """The emulator served over HTTP on 127.0.0.1 from a thread of its own, with a kubeconfig."""

    def __init__(self, crds: list[Mapping[str, Any]], namespaces: list[str], workdir: Path,
                 port: int = 0):
        self.crds = crds
        self.namespaces = namespaces
        self.workdir = workdir
        self.port = port
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
            emulator.pod_logs = self.workdir
            async with emulator, kmock.Server(emulator, host="127.0.0.1",
                                              port=self.port or None) as server:
                collector = asyncio.get_running_loop().create_task(
                    emulator.collect_garbage_forever())
                self.emulator = emulator
                self.url = f"http://127.0.0.1:{server.port}"
                started.set()
                await self._stop.wait()
                collector.cancel()

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
