"""The only code that talks to the Kubernetes API.

Responses are read as plain dicts (`_preload_content=False`), the same shape the builders in
`modelgate.core.manifests` produce, so nothing depends on the client's model classes. Writes are
JSON merge patches of whole sub-objects (lists are replaced, never merged), which a real API
server and the sandbox's emulator apply alike.
"""

from __future__ import annotations

import datetime
import json
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelgate import control_annotations, deployments
from modelgate.core import manifests, resource

MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class PodAddress:
    """A ready serving pod and where its server listens."""

    name: str
    role: str
    ip: str
    port: int | None = None
    """The serving container's `http` port as the pod declares it (each arm may run its own
    spec.serving.port while a serving change is canaried); None if it declares none."""


@dataclass(frozen=True)
class ServingPods:
    """Both arms' pods from one list call: the ready ones, and why an arm's others are not."""

    ready: list[PodAddress]
    problems: dict[str, str]
    """By role: the first not-ready pod's cause (deployments.pod_problem), "and N more"."""


class ConfigError(Exception):
    """No usable kubeconfig (missing file, unknown context, ...)."""


_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def load_config(context: str | None = None, kubeconfig: str | None = None) -> str:
    """In a pod, the service account; elsewhere, $KUBECONFIG or ~/.kube/config (or
    `kubeconfig`), with its current context (or `context`), as kubectl does. Returns the
    namespace a command without -n works in: the context's, else the pod's, else "default"."""
    if context is None and kubeconfig is None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            pass
        else:
            try:
                with open(_SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as stream:
                    return stream.read().strip() or "default"
            except OSError:
                return "default"
    try:
        config.load_kube_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as exc:
        raise ConfigError(f"cannot use the kubeconfig: {' '.join(str(exc).split())}") from exc
    chosen = next((item for item in contexts or [] if item.get("name") == context), None) \
        if context else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def _json(response: Any) -> Any:
    return json.loads(response.data or b"null")


class Cluster:
    """The API calls the operator and the CLI make (RBAC in manifests/ grants exactly these)."""

    def __init__(self, api_client: client.ApiClient | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.api_client = api_client or client.ApiClient()
        self.apps = client.AppsV1Api(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.on_error = on_error or (lambda _verb: None)

    def _call(self, verb: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return _json(function(*args, _preload_content=False, **kwargs))
        except ApiException as exc:
            if exc.status != 404:
                self.on_error(verb)
            raise

    # --- ModelDeployments ------------------------------------------------------------------

    def get_model_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self._call("get", self.custom.get_namespaced_custom_object,
                               resource.GROUP, resource.VERSION, namespace, resource.PLURAL, name))

    def list_model_deployments(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace:
            result = self._call("list", self.custom.list_namespaced_custom_object,
                                resource.GROUP, resource.VERSION, namespace, resource.PLURAL)
        else:
            result = self._call("list", self.custom.list_cluster_custom_object,
                                resource.GROUP, resource.VERSION, resource.PLURAL)
        return list(result.get("items", []))

    def annotate_model_deployment(self, namespace: str, name: str,
                                  annotations: Mapping[str, str | None]) -> None:
        """Set (or, with None, remove) annotations; never touches .spec. Written as the
        field manager `control_annotations.FIELD_MANAGER`, which GitOps tools leave alone."""
        self._call("patch", self.custom.patch_namespaced_custom_object, resource.GROUP,
                   resource.VERSION, namespace, resource.PLURAL, name,
                   {"metadata": {"annotations": dict(annotations)}}, _content_type=MERGE_PATCH,
                   field_manager=control_annotations.FIELD_MANAGER)

    def find_model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as the API server holds it now; None if it is gone."""
        try:
            return self.get_model_deployment(namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any], *,
                     resource_version: str | None = None) -> None:
        """Write the whole status; with `resource_version`, only onto that version of the
        object (the API server answers 409 Conflict if it has changed since)."""
        patch: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        self._call("patch", self.custom.patch_namespaced_custom_object_status, resource.GROUP,
                   resource.VERSION, namespace, resource.PLURAL, name, patch,
                   _content_type=MERGE_PATCH)

    def post_event(self, body: Mapping[str, Any], reason: str, message: str, *,
                   warning: bool = False) -> None:
        """A Kubernetes Event about a ModelDeployment."""
        metadata = body.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "default")
        now = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._call("create", self.core.create_namespaced_event, namespace, {
            "metadata": {"generateName": f"{metadata.get('name')}.", "namespace": namespace},
            "involvedObject": {"apiVersion": resource.API_VERSION, "kind": resource.KIND,
                               "name": metadata.get("name"), "namespace": namespace,
                               "uid": metadata.get("uid")},
            "reason": reason, "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "modelgate"}, "reportingComponent": "modelgate",
            "reportingInstance": socket.gethostname(),
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        })

    # --- children --------------------------------------------------------------------------

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(self._call("get", self.apps.read_namespaced_deployment, name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def ensure_deployment(self, body: Mapping[str, Any], existing: Mapping[str, Any] | None,
                          *, force: bool = False) -> None:
        """Create the Deployment, or patch it if what it should be has changed (or, with
        `force`, because someone else changed fields the operator owns)."""
        namespace = body["metadata"]["namespace"]
        _refuse_unowned("Deployment", existing, body)
        if existing is None:
            self._call("create", self.apps.create_namespaced_deployment, namespace, dict(body),
                       field_manager=deployments.FIELD_MANAGER)
        elif force or manifests.applied_hash(existing) != manifests.applied_hash(body):
            self._call("patch", self.apps.patch_namespaced_deployment,
                       body["metadata"]["name"], namespace,
                       {"metadata": {key: body["metadata"][key] for key in
                                     ("labels", "annotations", "ownerReferences")},
                        "spec": body["spec"]}, _content_type=MERGE_PATCH,
                       field_manager=deployments.FIELD_MANAGER)

    def delete_deployment(self, existing: Mapping[str, Any], owner_uid: str) -> None:
        """Delete a Deployment this ModelDeployment controls, and only if it still is that one
        (the uid precondition): never one that replaced it under the same name."""
        metadata = existing["metadata"]
        if not manifests.is_owned(existing, owner_uid):
            raise NotOwnedError(manifests.conflict("Deployment", existing, owner_uid) or "")
        try:
            self._call("delete", self.apps.delete_namespaced_deployment, metadata["name"],
                       metadata["namespace"], propagation_policy="Foreground",
                       body={"preconditions": {"uid": metadata.get("uid")}})
        except ApiException as exc:
            if exc.status != 404:
                raise

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(self._call("get", self.core.read_namespaced_service, name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def ensure_service(self, body: Mapping[str, Any], existing: Mapping[str, Any] | None,
                       *, force: bool = False) -> None:
        """Create the Service, or patch it if what it should be has changed (or, with
        `force`, because someone else changed fields the operator owns)."""
        namespace = body["metadata"]["namespace"]
        name = body["metadata"]["name"]
        _refuse_unowned("Service", existing, body)
        if existing is None:
            self._call("create", self.core.create_namespaced_service, namespace, dict(body),
                       field_manager=deployments.FIELD_MANAGER)
            return
        if force or manifests.applied_hash(existing) != manifests.applied_hash(body):
            self._call("patch", self.core.patch_namespaced_service, name, namespace,
                       {"metadata": {key: body["metadata"][key] for key in
                                     ("labels", "annotations", "ownerReferences")},
                        "spec": {"ports": body["spec"]["ports"], "selector": {
                            # a merge patch merges maps: a key someone added is removed by null
                            **dict.fromkeys((existing.get("spec") or {}).get("selector") or {}),
                            **body["spec"]["selector"]}}},
                       _content_type=MERGE_PATCH, field_manager=deployments.FIELD_MANAGER)

    def serving_pods(self, namespace: str, name: str) -> ServingPods:
        """Both arms' pods in one list: the ready ones with their addresses, and for each arm
        why its other pods are not ready, from their status (no read per pod)."""
        selector = ",".join(f"{key}={value}" for key, value in manifests.selector(name).items())
        pods = self._call("list", self.core.list_namespaced_pod, namespace,
                          label_selector=selector)
        result = []
        problems: dict[str, list[str]] = {}
        for pod in pods.get("items", []):
            metadata = pod.get("metadata") or {}
            status = pod.get("status") or {}
            role = (metadata.get("labels") or {}).get(manifests.ROLE_LABEL)
            ready = any(condition.get("type") == "Ready" and condition.get("status") == "True"
                        for condition in status.get("conditions") or [])
            if role not in (manifests.STABLE, manifests.CANARY) or \
                    metadata.get("deletionTimestamp"):
                continue
            if ready and status.get("podIP"):
                result.append(PodAddress(name=metadata["name"], role=role, ip=status["podIP"],
                                         port=_http_port(pod)))
            else:
                problem = deployments.pod_problem(pod)
                if problem:
                    problems.setdefault(role, []).append(problem)
        return ServingPods(ready=result, problems={
            role: found[0] + (f" (and {len(found) - 1} more not ready)" if len(found) > 1
                              else "")
            for role, found in problems.items()})


def _http_port(pod: Mapping[str, Any]) -> int | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == "http" and isinstance(port.get("containerPort"), int):
                return int(port["containerPort"])
    return None


class NotOwnedError(Exception):
    """An object of the child's name exists and another controls it (or none does)."""


def _refuse_unowned(kind: str, existing: Mapping[str, Any] | None,
                    body: Mapping[str, Any]) -> None:
    """The last guard before a write: the caller checks first and reports the conflict."""
    owner_uid = manifests.controller_uid(body)
    if existing is not None and (owner_uid is None or not manifests.is_owned(existing,
                                                                             owner_uid)):
        raise NotOwnedError(manifests.conflict(kind, existing, owner_uid or "") or "")


__all__ = ["ApiException", "Cluster", "ConfigError", "NotOwnedError", "PodAddress",
           "ServingPods", "load_config"]
