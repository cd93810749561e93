"""What the `modelgate status --watch` view reads beyond the operator's own calls: a
ModelDeployment's pods and its Events. These are the CLI's reads, made with the person's
credentials; the operator never makes them, so its role does not grant them
(tests/unit/test_delivery.py leaves this file out of the operator's calls)."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from modelgate.core import manifests, resource


def _items(response: Any) -> list[dict[str, Any]]:
    import json

    return list((json.loads(response.data or b"null") or {}).get("items") or [])


class Viewer:
    """Read-only: get and list, nothing else."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.core = client.CoreV1Api(api_client or client.ApiClient())

    def pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The serving pods of both arms of the ModelDeployment `name`."""
        selector = ",".join(f"{key}={value}" for key, value in manifests.selector(name).items())
        return _items(self.core.list_namespaced_pod(namespace, label_selector=selector,
                                                    _preload_content=False))

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The Events about the ModelDeployment `name`, oldest first."""
        events = _items(self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.kind={resource.KIND},"
            f"involvedObject.name={name}", _preload_content=False))
        return sorted(events, key=lambda event: str(event.get("lastTimestamp")
                                                    or event.get("eventTime") or ""))
