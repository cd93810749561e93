"""Webhook notifications without a receiver: spec.notifications as parsed, the payload, body
templates and the Slack message, the delivery key's idempotency and the retry backoff. With
real HTTP receivers and the operator: tests/operator/test_notifications.py."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from modelgate import api, notifications
from modelgate.core.state import Event, HistoryEntry, Outcome, RolloutState
from modelgate.core.types import WebhookFormat
from modelgate.core.webhooks import TemplateError, check_template, render_template

URL = "http://127.0.0.1:9/hook"


def resource(*webhooks: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1"},
            "spec": {"model": {"version": "v2", "uri": "file:///m/v2.skops"},
                     "notifications": {"webhooks": list(webhooks)}}}


def problems(*webhooks: dict[str, Any]) -> str:
    with pytest.raises(api.SpecError) as caught:
        api.parse(resource(*webhooks))
    return "\n".join(caught.value.problems)


def test_no_notifications_by_default() -> None:
    body = resource()
    del body["spec"]["notifications"]
    assert api.parse(body).notifications.webhooks == ()


def test_webhooks_are_parsed() -> None:
    spec = api.parse(resource({"name": "chat", "url": "https://hooks.example/x", "format": "slack"},
                              {"name": "retrain", "url": URL, "body": '{"v": "${version}"}',
                               "transitions": ["RolledBack"]}))
    chat, retrain = spec.notifications.webhooks
    assert chat.format is WebhookFormat.SLACK
    assert chat.body is None
    assert chat.transitions == ()
    assert retrain.body == '{"v": "${version}"}'
    assert retrain.transitions == ("RolledBack",)


@pytest.mark.parametrize(("webhook", "said"), [
    ({"name": "a", "url": "ftp://x/y"}, "webhooks[0].url: 'ftp://x/y' is not valid"),
    ({"name": "a", "url": "http://user:pw@x/y"}, "webhooks[0].url"),
    ({"name": "a"}, "webhooks[0].url: is required"),
    ({"name": "a", "url": URL, "format": "teams"}, "is not one of json, slack"),
    ({"name": "a", "url": URL, "format": "slack", "body": "{}"}, "for format json"),
    ({"name": "a", "url": URL, "transitions": ["Exploded"]}, "'Exploded' is not one of"),
    ({"name": "a", "url": URL, "headers": {}}, "webhooks[0].headers: is not a field"),
])
def test_bad_webhooks_are_refused_with_the_reason(webhook: dict[str, Any], said: str) -> None:
    assert said in problems(webhook)


def test_two_webhooks_may_not_share_a_name() -> None:
    assert "names another webhook too" in problems({"name": "a", "url": URL},
                                                   {"name": "a", "url": URL})


@pytest.mark.parametrize(("template", "said"), [
    ('{"x": "$nope"}', "unknown variables nope"),
    ("not json $version", "does not render to JSON"),
    ('{"x": "5$"}', "write $$ for a '$'"),
])
def test_a_bad_template_fails_its_deliveries_with_the_reason(template: str, said: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(said)):
        check_template(template)
    body = resource({"name": "a", "url": URL, "body": template})
    worker = Recorder()
    written, events = tick(body, (promoted()[1],), 0.0, worker)
    assert written is not None
    [entry] = written["deliveries"]
    assert entry["state"] == "Failed"
    assert said in entry["error"]
    assert [e.reason for e in events] == ["NotificationFailed"]
    assert said in events[0].message
    assert worker.jobs == []


def promoted() -> tuple[RolloutState, Event]:
    state = RolloutState(history=(HistoryEntry("v2", Outcome.PROMOTED, "all passed", 1.0),))
    return state, Event("Promoted", 'version v2 is "stable"')


def test_the_payload_names_the_model_the_versions_and_the_transition() -> None:
    body = resource({"name": "a", "url": URL})
    state, event = promoted()
    data = notifications.payload(api.parse(body), body, event, state, None, "2026-01-01T00:00Z")
    assert data == {
        "kind": "ModelDeploymentTransition", "payloadVersion": 1,
        "modelDeployment": {"namespace": "ml", "name": "iris", "uid": "u-1"},
        "model": "iris", "transition": "Promoted", "message": 'version v2 is "stable"',
        "warning": False, "at": "2026-01-01T00:00Z", "phase": "Pending", "version": "v2",
        "versions": {"stable": None, "canary": None, "declared": "v2"},
        "decision": None, "summary": None}


def test_a_template_escapes_values_and_can_embed_the_payload() -> None:
    template = '{"conf": {"version": "${version}", "why": "$message"}, "event": $payload}'
    check_template(template)
    data = {"version": "v2", "message": 'a "quoted"\nline', "transition": "Promoted"}
    rendered = json.loads(render_template(template, data))
    assert rendered == {"conf": {"version": "v2", "why": 'a "quoted"\nline'}, "event": data}


def test_dollars_are_written_twice() -> None:
    check_template('{"price": "$$5"}')
    assert json.loads(render_template('{"price": "$$5"}', {})) == {"price": "$5"}
    with pytest.raises(TemplateError):
        check_template('{"x": "${payload"}')


def test_slack_format_sends_a_text_message() -> None:
    body = resource({"name": "chat", "url": URL, "format": "slack"})
    spec = api.parse(body)
    state, event = promoted()
    data = notifications.payload(spec, body, event, state, None, "t")
    sent = json.loads(notifications.body(spec.notifications.webhooks[0], data))
    assert set(sent) == {"text"}
    assert "*Promoted* ml/iris" in sent["text"]
    assert "version v2" in sent["text"]


class Recorder(notifications.Deliverer):
    """The worker's bookkeeping without its thread: jobs are kept, answers set by the test."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[notifications.Job] = []
        self.answers: dict[str, notifications.Answer] = {}

    def submit(self, job: notifications.Job) -> bool:
        self.jobs.append(job)
        return True

    def answer(self, key: str) -> notifications.Answer | None:
        return self.answers.get(key)


def tick(body: dict[str, Any], events: tuple[Event, ...], now: float, worker: Recorder
         ) -> tuple[dict[str, Any] | None, tuple[Event, ...]]:
    """One tick's bookkeeping: record, write status (into `body`), dispatch."""
    spec = api.parse(body)
    state, _ = promoted()
    written, said = notifications.record(spec, body, events, state, None, f"t{now}", now,
                                         deliverer=worker)
    body["status"] = {"notifications": written}
    notifications.dispatch(spec, written, now, deliverer=worker)
    return written, said


def test_each_transition_is_delivered_once_per_webhook_by_its_key() -> None:
    body = resource({"name": "a", "url": URL}, {"name": "b", "url": URL,
                                                "transitions": ["RolledBack"]})
    worker = Recorder()
    _, event = promoted()
    written, _ = tick(body, (event, Event("StepCompleted", "step 1")), 10.0, worker)
    assert written is not None
    [entry] = written["deliveries"]
    assert (entry["webhook"], entry["transition"], entry["state"]) == ("a", "Promoted", "Pending")
    [job] = worker.jobs
    assert job.attempt == 1
    assert json.loads(job.data)["deliveryKey"] == entry["key"]
    worker.answers[entry["key"]] = notifications.Answer(1, True)
    written, _ = tick(body, (), 15.0, worker)
    assert written is not None
    [entry] = written["deliveries"]
    assert entry["state"] == "Delivered"
    assert entry["attempts"] == 1
    assert "payload" not in entry
    tick(body, (), 20.0, worker)  # a later tick, or a restarted operator reading status
    assert len(worker.jobs) == 1


def test_a_failing_webhook_is_retried_with_backoff_then_marked_failed() -> None:
    body = resource({"name": "a", "url": URL})
    worker = Recorder()
    _, event = promoted()
    now = 0.0
    tick(body, (event,), now, worker)
    delays = []
    for attempt in range(1, notifications.MAX_ATTEMPTS + 1):
        key = worker.jobs[-1].key
        assert worker.jobs[-1].attempt == attempt
        worker.answers[key] = notifications.Answer(attempt, False, "answered 500 Boom")
        written, said = tick(body, (), now, worker)
        assert written is not None
        [entry] = written["deliveries"]
        if attempt == notifications.MAX_ATTEMPTS:
            assert entry["state"] == "Failed"
            assert entry["error"] == "answered 500 Boom"
            assert [e.reason for e in said] == ["NotificationFailed"]
            assert said[0].warning
            break
        assert said == ()
        assert entry["state"] == "Pending"
        jobs = len(worker.jobs)
        tick(body, (), entry["nextAttemptAt"] - 0.5, worker)  # not due yet
        assert len(worker.jobs) == jobs
        delays.append(entry["nextAttemptAt"] - now)
        now = entry["nextAttemptAt"]
        tick(body, (), now, worker)
        assert len(worker.jobs) == jobs + 1
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert notifications.backoff(20) == notifications.BACKOFF_CAP_SECONDS


def test_a_removed_webhook_fails_its_pending_deliveries() -> None:
    body = resource({"name": "a", "url": URL})
    worker = Recorder()
    tick(body, (promoted()[1],), 0.0, worker)
    body["spec"]["notifications"]["webhooks"] = []
    written, _ = tick(body, (), 1.0, worker)
    assert written is not None
    assert written["deliveries"][0]["state"] == "Failed"


def test_the_worker_does_not_queue_a_key_twice() -> None:
    worker = notifications.Deliverer(queue_size=1)
    worker._thread = type("Alive", (), {"is_alive": lambda self: True})()  # type: ignore[assignment]
    job = notifications.Job(key="k", attempt=1, url=URL, data=b"{}")
    assert worker.submit(job)
    assert not worker.submit(job)
    assert not worker.submit(notifications.Job(key="k2", attempt=1, url=URL, data=b"{}"))
