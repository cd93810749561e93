"""Webhook notifications against real HTTP receivers on 127.0.0.1 (tests/support/webhooks.py):
a promotion delivers one payload per transition, each once; a receiver that answers 500 at
first is retried and accepts the delivery once; one that never answers delays no decision."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from sandbox import Sandbox
from support import webhooks
from support.rollouts import deploy, eventually, healthy

from modelgate.core.webhooks import TRANSITIONS

pytestmark = [pytest.mark.sandbox, pytest.mark.xdist_group("notifications")]


@pytest.fixture
def receivers() -> Iterator[dict[str, webhooks.Receiver]]:
    with ExitStack() as stack:
        yield {mode: stack.enter_context(webhooks.receiving(mode))
               for mode in ("ok", "flaky", "hang")}


def ticks_while_held(sandbox: Sandbox, seconds: float = 4.0) -> Callable[[], bool]:
    """For the hanging receiver: does the operator finish a tick while it holds a request
    (shorter than the operator's 5 s read timeout)? A tick that waited for the webhook
    would not finish until that timeout."""
    def check() -> bool:
        start = sandbox.ticks()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if sandbox.ticks() > start:
                return True
            time.sleep(0.05)
        return False
    return check


def deliveries(status: dict, webhook: str) -> list[dict]:
    return [entry for entry in (status.get("notifications") or {}).get("deliveries") or []
            if entry["webhook"] == webhook]


def test_transitions_are_delivered_once_retried_and_never_wait_for_a_hanging_webhook(
        sandbox: Sandbox, name: str, receivers: dict[str, webhooks.Receiver]) -> None:
    notifications = {"webhooks": [
        {"name": "ok", "url": receivers["ok"].url},
        {"name": "flaky", "url": receivers["flaky"].url, "transitions": ["Promoted"]},
        {"name": "hang", "url": receivers["hang"].url, "transitions": ["RolloutStarted",
                                                                       "Promoted"]}]}
    deploy(sandbox, name, "v1", serving={"replicas": 2, "image": "sandbox"},
           notifications=notifications)
    receivers["hang"].while_held = ticks_while_held(sandbox)
    sandbox.set_model(name, "v2")

    sandbox.wait(name, healthy("v2"), timeout=150)
    sandbox.wait_events(name, "Promoted")

    transitions = Counter(reason for reason in sandbox.event_reasons(name)
                          if reason in TRANSITIONS)
    assert transitions["Promoted"] == 1
    assert transitions["RolloutStarted"] == 1

    def all_delivered(status: dict) -> bool:
        ok, flaky = deliveries(status, "ok"), deliveries(status, "flaky")
        return (len(ok) == sum(transitions.values()) and len(flaky) == 1
                and all(entry["state"] == "Delivered" for entry in ok + flaky))

    status = sandbox.wait(name, all_delivered, timeout=60,
                          what="every transition delivered to ok and flaky")
    # ok: one payload per transition, each once, its key in the header and the payload
    got = receivers["ok"].all()
    assert Counter(r.body["transition"] for r in got) == transitions
    assert len({r.key for r in got}) == len(got)
    assert {r.key for r in got} == {entry["key"] for entry in deliveries(status, "ok")}
    assert all(r.body["deliveryKey"] == r.key for r in got)
    promoted = next(r.body for r in got if r.body["transition"] == "Promoted")
    assert promoted["modelDeployment"]["name"] == name
    assert promoted["version"] == "v2"
    assert promoted["versions"]["stable"] == "v2"
    # flaky: 500 first, then accepted once; status counts both attempts
    [entry] = deliveries(status, "flaky")
    assert [r.answered for r in receivers["flaky"].all()] == [500, 204]
    assert {r.key for r in receivers["flaky"].all()} == {entry["key"]}
    assert entry["attempts"] == 2
    # hang: its attempts time out and are retried later; nothing was accepted
    eventually(lambda: any(entry.get("error") == "timed out"
                           for entry in deliveries(sandbox.status(name), "hang")),
               timeout=60, what="the hanging webhook's attempt timed out")
    assert receivers["hang"].accepted() == []
    # while it held the RolloutStarted delivery, the operator kept ticking (and deciding)
    assert receivers["hang"].held[:1] == [True]
    # a later tick (or a restarted operator) never delivers again
    sandbox.wait_ticks(3)
    assert len(receivers["ok"].all()) == len(got)
