"""The operator serves the read-only dashboard when MODELGATE_OPERATOR_DASHBOARD_PORT asks
(the page itself is tested in a browser in tests/kubectl/test_dashboard_in_chromium.py)."""

from __future__ import annotations

import socket

import pytest
import requests
from sandbox import Sandbox
from support.rollouts import deploy, eventually

pytestmark = pytest.mark.sandbox


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_operator_serves_the_dashboard_behind_its_setting(sandbox: Sandbox,
                                                              name: str) -> None:
    deploy(sandbox, name, rate=0)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sandbox.stop_operator()
    try:
        sandbox.start_operator(MODELGATE_OPERATOR_DASHBOARD_PORT=str(port))

        def listed() -> list[dict[str, object]] | None:
            try:
                reply = requests.get(f"{base}/api/list", timeout=5)
            except requests.ConnectionError:
                return None
            return [item for item in reply.json()["data"] if item["name"] == name] or None

        found = eventually(listed, timeout=30, what="the operator's dashboard listing it")
        assert found[0]["phase"] == "Healthy"
        page = requests.get(f"{base}/md/default/{name}", timeout=5)
        assert page.status_code == 200
        assert "stable v1" in page.text
        assert "namespaces default" in page.text  # what the operator watches
        assert requests.post(f"{base}/api/list", timeout=5).status_code == 405
        assert f"read-only dashboard on {base}/" in sandbox.operator_tail(200)
    finally:
        sandbox.stop_operator()
        sandbox.start_operator()
    # off by default: the restarted operator does not listen there
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/", timeout=5)
