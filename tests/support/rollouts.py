"""Helpers of the sandbox tests: conditions on status, polling, deploying a first version."""

from __future__ import annotations

import time
from typing import Any

from sandbox import TIMEOUT_SCALE, Sandbox


def healthy(version: str) -> Any:
    def check(status: dict[str, Any]) -> bool:
        return status.get("phase") == "Healthy" and \
            (status.get("stable") or {}).get("version") == version
    check.__name__ = f"Healthy with stable {version}"
    return check


def phase(expected: str) -> Any:
    def check(status: dict[str, Any]) -> bool:
        return status.get("phase") == expected
    check.__name__ = f"phase {expected}"
    return check


def eventually(check: Any, timeout: float = 10, what: str = "") -> Any:
    """Poll `check()` until it returns something true; fail after `timeout` seconds (times
    the sandbox's TIMEOUT_SCALE)."""
    timeout *= TIMEOUT_SCALE
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what or check}")
        time.sleep(0.2)


def serving_pods(sandbox: Sandbox, name: str) -> list[dict[str, Any]]:
    return [pod for pod in sandbox.pods()
            if pod["metadata"]["labels"].get("app.kubernetes.io/instance") == name]


def deploy(sandbox: Sandbox, name: str, version: str = "v1", rate: float = 80,
           **spec: Any) -> None:
    """Apply a ModelDeployment of `version`, wait until it serves, start traffic to it."""
    sandbox.apply(sandbox.model_deployment(name, version, **spec))
    sandbox.wait(name, healthy(version), timeout=90)
    if rate:
        sandbox.start_traffic(name, rate)
