"""Pure builders of a ModelDeployment's children: two Deployments and one Service.

Names are deterministic (<name>-stable, <name>-canary, and <name> for the Service), so a
restarted operator finds what it made. Every builder returns a plain dict that the k8s layer
creates or patches; the dict carries a hash of itself (`modelgate.dev/applied-hash`), so a
child is patched only when what it should be has changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelgate.core.resource import API_VERSION, KIND
from modelgate.core.types import ModelDeploymentSpec, ModelSource, ServingSpec

ROLE_LABEL = "modelgate.dev/role"
VERSION_LABEL = "modelgate.dev/version"
INSTANCE_LABEL = "app.kubernetes.io/instance"
NAME_LABEL = "app.kubernetes.io/name"
APPLIED_HASH = "modelgate.dev/applied-hash"
MODEL_HASH = "modelgate.dev/model-hash"
SERVING_HASH = "modelgate.dev/serving-hash"
SERVER_NAME = "modelgate-serving"
STABLE = "stable"
CANARY = "canary"


@dataclass(frozen=True)
class Owner:
    """The ModelDeployment that owns the children."""

    name: str
    namespace: str
    uid: str


def deployment_name(name: str, role: str) -> str:
    return f"{name}-{role}"


def service_name(name: str) -> str:
    return name


def selector(name: str, role: str | None = None) -> dict[str, str]:
    """Labels that pick the serving pods of one ModelDeployment (of one arm, if given)."""
    labels = {NAME_LABEL: SERVER_NAME, INSTANCE_LABEL: name}
    if role is not None:
        labels[ROLE_LABEL] = role
    return labels


def model_hash(model: ModelSource) -> str:
    """Identity of a model file and how it is loaded: a different hash is a new model."""
    return _digest({"version": model.version, "uri": model.uri, "sha256": model.sha256,
                    "format": model.format.value, "trusted": model.trusted,
                    "trustedTypes": list(model.trusted_types)})[:16]


def serving_hash(serving: ServingSpec) -> str:
    """Identity of how the pods serve a model: everything in spec.serving that goes into the
    pod template (image, pull policy, port, workers, resources, env, batching). replicas is
    not part of it: a different count is applied at once, without a canary."""
    fields = {key: value for key, value in dataclasses.asdict(serving).items()
              if key != "replicas"}
    return _digest(fields)[:16]


def serving_changes(before: ServingSpec, after: ServingSpec) -> list[str]:
    """The spec.serving fields (their API names) that differ, replicas aside."""
    return [name for field, name in _SERVING_FIELDS
            if getattr(before, field) != getattr(after, field)]


_SERVING_FIELDS = (("image", "image"), ("image_pull_policy", "imagePullPolicy"),
                   ("port", "port"), ("workers", "workers"), ("resources", "resources"),
                   ("env", "env"), ("batching", "batching"))
"""Each pod-template field of ServingSpec and its name in spec.serving."""


def spec_hash(spec: Mapping[str, Any]) -> str:
    """Hash of a whole .spec, as status.specHash records it."""
    return _digest(spec)[:16]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": owner.name, "uid": owner.uid,
            "controller": True, "blockOwnerDeletion": True}


def controller_uid(child: Mapping[str, Any] | None) -> str | None:
    """The uid of the object that controls `child` (its controller owner reference), if any."""
    for reference in ((child or {}).get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(reference, Mapping) and reference.get("controller"):
            uid = reference.get("uid")
            return uid if isinstance(uid, str) else None
    return None


def is_owned(child: Mapping[str, Any] | None, owner_uid: str) -> bool:
    """True when `child` carries the controller owner reference of the ModelDeployment with
    `owner_uid`: only such children are patched or deleted, never a same-named stranger."""
    return controller_uid(child) == owner_uid


def conflict(kind: str, child: Mapping[str, Any] | None, owner_uid: str) -> str | None:
    """Why an existing `child` may not be touched (None when it is ours or does not exist)."""
    if child is None or is_owned(child, owner_uid):
        return None
    name = (child.get("metadata") or {}).get("name")
    return (f"{kind} {name} exists and is not controlled by this ModelDeployment; modelgate "
            f"neither changes nor deletes it: rename the ModelDeployment, or remove that "
            f"{kind} if it is no longer needed")


def _labels(spec: ModelDeploymentSpec, role: str, model: ModelSource | None) -> dict[str, str]:
    labels = {
        **selector(spec.name, role),
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": "modelgate",
    }
    if model is not None:
        labels["app.kubernetes.io/version"] = model.version
        labels[VERSION_LABEL] = model.version
    return labels


def _server_env(spec: ModelDeploymentSpec, model: ModelSource,
                serving: ServingSpec) -> list[dict[str, Any]]:
    settings = {
        "MODELGATE_MODEL_URI": model.uri,
        "MODELGATE_MODEL_NAME": spec.model_name,
        "MODELGATE_MODEL_VERSION": model.version,
        "MODELGATE_SHA256": model.sha256,
        "MODELGATE_MODEL_FORMAT": model.format.value,
        "MODELGATE_TRUSTED": "true" if model.trusted else "false",
        "MODELGATE_TRUSTED_TYPES": ",".join(model.trusted_types) or None,
        "MODELGATE_HOST": "0.0.0.0",
        "MODELGATE_PORT": str(serving.port),
        "MODELGATE_WORKERS": str(serving.workers),
        "MODELGATE_BATCHING": serving.batching.mode.value,
        "MODELGATE_MAX_BATCH_SIZE": str(serving.batching.max_batch_size),
        "MODELGATE_MAX_WAIT": f"{serving.batching.max_wait_seconds:g}s",
    }
    env: list[dict[str, Any]] = [{"name": key, "value": value}
                                 for key, value in settings.items() if value is not None]
    token = spec.registry.token_secret_ref
    if token is not None:  # the registry's token, for the pods' download (never a literal)
        env.append({"name": "MODELGATE_DOWNLOAD_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": token.name, "key": token.key}}})
    for variable in serving.env:
        if variable.value_from is not None:
            ref_kind = ("secretKeyRef" if variable.value_from.kind == "secret"
                        else "configMapKeyRef")
            env.append({"name": variable.name, "valueFrom": {
                ref_kind: {"name": variable.value_from.name, "key": variable.value_from.key}}})
        else:
            env.append({"name": variable.name, "value": variable.value or ""})
    return env


def deployment(spec: ModelDeploymentSpec, owner: Owner, role: str, model: ModelSource,
               replicas: int, serving: ServingSpec | None = None) -> dict[str, Any]:
    """The Deployment of one arm serving `model` with `replicas` pods, configured by
    `serving` (the arm's own serving section; spec.serving when not given)."""
    serving = serving or spec.serving
    labels = _labels(spec, role, model)
    probe = {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 2,
             "timeoutSeconds": 2, "failureThreshold": 2}
    container: dict[str, Any] = {
        "name": "server",
        "image": serving.image,
        "imagePullPolicy": serving.image_pull_policy,
        "ports": [{"name": "http", "containerPort": serving.port, "protocol": "TCP"}],
        "env": _server_env(spec, model, serving),
        # Loading (and downloading) a model may take a while: readiness waits for it, liveness
        # only asks whether the process answers.
        "readinessProbe": probe,
        # a crash's last log lines in the pod's status (lastState.terminated.message), where
        # the operator reads why a canary never became ready without reading logs
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"},
                          "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3},
        "resources": {key: dict(values) for key, values in (
            ("requests", serving.resources.requests), ("limits", serving.resources.limits))
            if values},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        # The server writes only under /tmp (multiprocess metrics, downloads).
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(spec.name, role),
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(spec.name, role)},
            # A rolling update that never drops below the declared capacity.
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(serving.port),
                    "prometheus.io/path": "/metrics"}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                        "runAsGroup": 65532, "fsGroup": 65532,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }
    return _stamped(body, {MODEL_HASH: model_hash(model), SERVING_HASH: serving_hash(serving)})


def service(spec: ModelDeploymentSpec, owner: Owner) -> dict[str, Any]:
    """One Service over both arms: the replicas router splits traffic by pod count."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(spec.name),
            "namespace": owner.namespace,
            "labels": {**selector(spec.name), "app.kubernetes.io/managed-by": "modelgate"},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "selector": selector(spec.name),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return _stamped(body)


def _stamped(body: dict[str, Any], annotations: Mapping[str, str] | None = None
             ) -> dict[str, Any]:
    metadata = body["metadata"]
    metadata["annotations"] = {**(annotations or {}), APPLIED_HASH: _digest(body)[:16]}
    return body


def applied_hash(child: Mapping[str, Any] | None) -> str | None:
    """The hash an existing child was last written with (None if unknown)."""
    if not child:
        return None
    annotations = (child.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(APPLIED_HASH)
    return value if isinstance(value, str) else None
