"""The dashboard's logic and routes, in process: what it records of a rollout, what it renders
(escaped), and that it only reads (its browser tests are in
tests/kubectl/test_dashboard_in_chromium.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from kubernetes.client.exceptions import ApiException

from modelgate import dashboard


def metric(name: str, estimate: float, verdict: str = "continue") -> dict[str, Any]:
    return {"name": name, "verdict": verdict, "stable": {"value": 0.01, "samples": 100},
            "canary": {"value": 0.01 + estimate, "samples": 50},
            "effect": {"estimate": estimate, "lower": estimate - 0.02,
                       "upper": estimate + 0.02}}


def body(*, canary: str | None = None, t: float | None = None, phase: str = "Progressing",
         stable: str = "v1", message: str = "", history: list[dict[str, Any]] | None = None,
         name: str = "iris") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "observedGeneration": 2, "message": message,
                              "stable": {"version": stable}, "history": history or []}
    if canary:
        status["canary"] = {"version": canary, "startedAt": "2026-01-01T00:00:00Z",
                            "weight": 25, "desiredWeight": 25, "stepIndex": 0}
    if t is not None:
        status["analysis"] = {"decision": "continue", "reason": "waiting",
                              "time": f"2026-01-01T00:{int(t) // 60:02d}:{t % 60:06.3f}Z",
                              "elapsedSeconds": t, "metrics": [metric("error-rate", 0.001)]}
    return {"metadata": {"namespace": "default", "name": name, "generation": 2},
            "spec": {"rollout": {"steps": [{"setWeight": 25}, {"analysis": {}}]},
                     "analysis": {"metrics": [{"name": "error-rate", "type": "errorRate",
                                               "tolerance": 0.03}]}},
            "status": status}


def test_a_rollout_is_recorded_look_by_look_until_it_ends() -> None:
    rollouts = dashboard.Rollouts()
    rollouts.update([body(phase="Healthy")])
    entry = rollouts.entries[("default", "iris")]
    assert entry.story is None  # no rollout seen

    rollouts.update([body(canary="v2", t=10)])
    assert entry.story is not None
    assert entry.story.title == "default/iris: v1 → v2"
    revision = entry.revision
    rollouts.update([body(canary="v2", t=10)])  # the same analysis, read again
    assert (len(entry.story.looks), entry.revision) == (1, revision)
    rollouts.update([body(canary="v2", t=20)])
    assert [look.t for look in entry.story.looks] == [10, 20]
    assert entry.revision > revision

    rollouts.update([body(t=20, phase="Healthy", stable="v2")])
    assert entry.story.decision is not None
    assert entry.story.decision.decision == "Healthy"
    assert rollouts.entries[("default", "iris")] is entry  # the same ModelDeployment

    # v3 starts while status still holds v2's last analysis: that is not v3's
    stale = body(canary="v3", t=20, stable="v2")
    stale["status"]["analysis"]["time"] = "2025-12-31T23:59:59.000Z"
    rollouts.update([stale])
    assert entry.story.title == "default/iris: v2 → v3"
    assert entry.story.looks == []
    rollouts.update([body(canary="v3", t=5, stable="v2")])
    assert [look.t for look in entry.story.looks] == [5]

    rollouts.update([])  # deleted
    assert rollouts.entries == {}


def test_what_the_cluster_says_is_escaped() -> None:
    rollouts = dashboard.Rollouts()
    rollouts.update([body(canary="<b>v2</b>", t=1, message="<script>alert(1)</script>",
                          history=[{"at": "now", "version": "<i>", "outcome": "Promoted",
                                    "reason": "a & b"}])])
    entry = rollouts.entries[("default", "iris")]
    shown = dashboard.detail_fragment("default", "iris", entry, can_plot=True)
    assert "<script>" not in shown
    assert "&lt;script&gt;" in shown
    assert "<b>v2</b>" not in shown
    assert "&lt;b&gt;v2&lt;/b&gt;" in shown
    assert "a &amp; b" in shown
    assert "▶ setWeight 25%" in shown
    assert 'id="plot"' in shown
    assert "modelgate[plot]" in dashboard.detail_fragment("default", "iris", entry,
                                                          can_plot=False)
    assert "does not exist" in dashboard.detail_fragment("default", "nope", None, True)


def serve(board: dashboard.Dashboard,
          check: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    async def run() -> None:
        async with TestClient(TestServer(board.app())) as client:
            await board.read_once()
            await check(client)

    asyncio.run(run())


def test_pages_json_and_plot_are_served_and_nothing_else() -> None:
    bodies = [body(canary="v2", t=10)]
    board = dashboard.Dashboard(lambda: list(bodies), interval=0.5, where="namespace default")

    async def check(client: TestClient[Any, Any]) -> None:
        listing = await client.get("/")
        assert listing.status == 200
        text = await listing.text()
        nonce = re.search(r'<script nonce="([^"]+)">', text)
        assert nonce
        policy = listing.headers["Content-Security-Policy"]
        assert f"script-src 'nonce-{nonce.group(1)}'" in policy
        assert "default-src 'none'" in policy
        assert 'href="/md/default/iris"' in text

        first = await (await client.get("/api/md/default/iris")).json()
        assert first["data"]["analyses"] == 1
        plot = await client.get(f"/md/default/iris/plot.svg?r={first['revision']}")
        assert plot.status == 200
        assert plot.headers["Content-Type"] == "image/svg+xml"
        assert b"<svg" in await plot.read()

        bodies[0] = body(t=10, phase="Healthy", stable="v2")
        await board.read_once()
        second = await (await client.get("/api/md/default/iris")).json()
        assert second["revision"] != first["revision"]
        assert "Healthy" in second["html"]

        for method in ("POST", "PUT", "PATCH", "DELETE"):
            assert (await client.request(method, "/api/list")).status == 405
        assert (await client.get("/md/default/Not_A_Name")).status == 404
        assert (await client.get("/md/default/other/plot.svg")).status == 404

    serve(board, check)


def test_a_failed_read_keeps_the_last_view_and_says_so() -> None:
    answers: list[Any] = [[body(phase="Healthy")], ApiException(status=403, reason="Forbidden")]

    def read() -> list[dict[str, Any]]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return list(answer)

    board = dashboard.Dashboard(read, where="namespace default")

    async def check(client: TestClient[Any, Any]) -> None:
        await board.read_once()
        state = await (await client.get("/api/list")).json()
        assert state["error"] == "cannot read ModelDeployments: 403 Forbidden"
        assert "403 Forbidden" in state["updated"]
        assert [item["name"] for item in state["data"]] == ["iris"]

    serve(board, check)
