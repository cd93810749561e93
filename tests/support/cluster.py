"""An in-memory stand-in for the Kubernetes calls one reconcile tick makes
(`modelgate.reconcile.ClusterCalls`), for unit tests of reconcile without an API server."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from modelgate.k8s import ApiException, PodAddress, ServingPods


class FakeCluster:
    """Keeps Deployments, Services, the last status written and the Events posted."""

    def __init__(self, *model_deployments: Mapping[str, Any]) -> None:
        self.model_deployments = {
            (body["metadata"].get("namespace", "default"), body["metadata"]["name"]):
                copy.deepcopy(dict(body)) for body in model_deployments}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: list[PodAddress] = []
        self.pod_problems: dict[str, str] = {}
        """By role: why that arm's pods are not ready (as Cluster.serving_pods reads it)."""
        self.statuses: list[dict[str, Any]] = []
        self.events: list[str] = []
        self.changed_since_read = False
        """Set: the next status write is refused as the API server refuses a stale one."""

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.deployments.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def ensure_deployment(self, body: Mapping[str, Any], existing: Mapping[str, Any] | None,
                          *, force: bool = False) -> None:
        metadata = body["metadata"]
        self.deployments[(metadata["namespace"], metadata["name"])] = copy.deepcopy(dict(body))

    def delete_deployment(self, existing: Mapping[str, Any], owner_uid: str) -> None:
        metadata = existing["metadata"]
        self.deployments.pop((metadata["namespace"], metadata["name"]), None)

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.services.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def ensure_service(self, body: Mapping[str, Any], existing: Mapping[str, Any] | None,
                       *, force: bool = False) -> None:
        metadata = body["metadata"]
        self.services[(metadata["namespace"], metadata["name"])] = copy.deepcopy(dict(body))

    def serving_pods(self, namespace: str, name: str) -> ServingPods:
        return ServingPods(ready=list(self.pods), problems=dict(self.pod_problems))

    def find_model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.model_deployments.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any], *,
                     resource_version: str | None = None) -> None:
        if self.changed_since_read and resource_version is not None:
            raise ApiException(status=409, reason="Conflict")
        self.statuses.append(copy.deepcopy(dict(status)))

    def post_event(self, body: Mapping[str, Any], reason: str, message: str, *,
                   warning: bool = False) -> None:
        self.events.append(reason)
