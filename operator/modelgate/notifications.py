"""Webhooks told of rollout transitions (spec.notifications), recorded in `status.notifications`.

A tick turns each transition Event it posts (TRANSITIONS) into one delivery per webhook: an
entry in `status.notifications.deliveries` with a delivery key, the payload, and the state
Pending. Only after that status is written (a tick whose write is refused delivers nothing) are
pending deliveries handed to a background worker (`Deliverer`: one thread, a bounded queue,
short timeouts), so a webhook that fails or hangs never delays a decision. The worker's answers
are read by the next tick, which marks the delivery Delivered, or schedules a retry with
exponential backoff, or after MAX_ATTEMPTS marks it Failed (a warning Event says so). The key
is sent as the `Modelgate-Delivery` header: a recorded delivery is never sent again, but an
operator that dies between a receiver's answer and the status write that records it sends it
once more, so receivers that must act once deduplicate by that header (at-least-once).

Body templates are modelgate.core.webhooks's.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from modelgate.core.analysis import AnalysisRecord
from modelgate.core.state import Event, RolloutState
from modelgate.core.types import ModelDeploymentSpec, WebhookFormat, WebhookSpec
from modelgate.core.webhooks import (
    PAYLOAD_KIND,
    TRANSITIONS,
    TemplateError,
    check_template,
    render_template,
)

KEY_HEADER = "Modelgate-Delivery"
MAX_ATTEMPTS = 6
BACKOFF_SECONDS = 2.0
"""The first retry's delay; each further one doubles it, up to BACKOFF_CAP_SECONDS."""
BACKOFF_CAP_SECONDS = 300.0
TIMEOUT_SECONDS = (3.0, 5.0)
"""Connect and read timeouts of one attempt."""
KEPT = 20
"""Deliveries kept in status (every pending one, and the newest finished ones)."""


def slack_message(payload: Mapping[str, Any]) -> dict[str, Any]:
    deployment = payload.get("modelDeployment") or {}
    icon = ":warning:" if payload.get("warning") else ":white_check_mark:"
    text = (f"{icon} *{payload.get('transition')}* {deployment.get('namespace')}/"
            f"{deployment.get('name')} (model {payload.get('model')}, version "
            f"{payload.get('version')}): {payload.get('message')}")
    summary = payload.get("summary")
    if summary:
        text += f"\n> {summary}"
    return {"text": text}


def body(webhook: WebhookSpec, payload: Mapping[str, Any]) -> bytes:
    """What is POSTed to the webhook (always JSON)."""
    if webhook.format is WebhookFormat.SLACK:
        return json.dumps(slack_message(payload)).encode()
    if webhook.body is not None:
        return render_template(webhook.body, payload).encode()
    return json.dumps(payload, sort_keys=True).encode()


def summary(record: AnalysisRecord | None) -> str | None:
    if record is None:
        return None
    metrics = "; ".join(f"{metric.name}: {metric.verdict.value} ({metric.reason})"
                        for metric in record.metrics)
    return f"{record.decision.value}: {record.reason}" + (f" | {metrics}" if metrics else "")


def delivery_key(uid: str, webhook: str, transition: str, at: str, message: str) -> str:
    digest = hashlib.sha256("\0".join((uid, webhook, transition, at, message)).encode())
    return digest.hexdigest()[:32]


def payload(spec: ModelDeploymentSpec, body: Mapping[str, Any], event: Event,
            state: RolloutState, record: AnalysisRecord | None, at: str) -> dict[str, Any]:
    """The documented JSON payload of one transition (docs/notifications.md)."""
    metadata = body.get("metadata") or {}
    stable = state.stable.model.version if state.stable else None
    canary = state.canary.model.version if state.canary else None
    outcome = event.reason in ("Promoted", "RolledBack", "Superseded")
    version = (state.history[-1].version if outcome and state.history
               else canary or stable or spec.model.version)
    decision = None
    if record is not None:
        decision = {"decision": record.decision.value, "reason": record.reason,
                    "metrics": [{"name": metric.name, "verdict": metric.verdict.value,
                                 "reason": metric.reason} for metric in record.metrics]}
    return {
        "kind": PAYLOAD_KIND, "payloadVersion": 1,
        "modelDeployment": {"namespace": str(metadata.get("namespace") or "default"),
                            "name": str(metadata.get("name")), "uid": str(metadata.get("uid"))},
        "model": spec.model_name, "transition": event.reason, "message": event.message,
        "warning": event.warning, "at": at, "phase": state.phase.value, "version": version,
        "versions": {"stable": stable, "canary": canary, "declared": spec.model.version},
        "decision": decision, "summary": summary(record),
    }


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failed ones."""
    return float(min(BACKOFF_SECONDS * 2 ** max(attempts - 1, 0), BACKOFF_CAP_SECONDS))


@dataclass(frozen=True)
class Job:
    key: str
    attempt: int
    """This attempt's number (1 for the first)."""
    url: str
    data: bytes


@dataclass(frozen=True)
class Answer:
    attempt: int
    ok: bool
    error: str = ""


def send(job: Job, timeout: tuple[float, float] = TIMEOUT_SECONDS) -> Answer:
    """One POST. The error says what failed without the URL's query (it may hold a secret)."""
    try:
        response = requests.post(job.url, data=job.data, timeout=timeout, allow_redirects=False,
                                 headers={"Content-Type": "application/json",
                                          KEY_HEADER: job.key, "User-Agent": "modelgate"})
    except requests.Timeout:
        return Answer(job.attempt, False, "timed out")
    except requests.RequestException as exc:
        return Answer(job.attempt, False, f"not reachable ({type(exc).__name__})")
    if 200 <= response.status_code < 300:
        return Answer(job.attempt, True)
    return Answer(job.attempt, False, f"answered {response.status_code} {response.reason}")


class Deliverer:
    """One background thread sending jobs from a bounded queue; answers kept by key until
    a tick reads them (bounded too)."""

    def __init__(self, queue_size: int = 256, answers_kept: int = 4096) -> None:
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._answers: OrderedDict[str, Answer] = OrderedDict()
        self._answers_kept = answers_kept
        self._thread: threading.Thread | None = None

    def submit(self, job: Job) -> bool:
        """Queue `job` unless its key is in flight or the queue is full (the next tick tries
        again); never blocks."""
        with self._lock:
            if job.key in self._in_flight:
                return False
            answer = self._answers.get(job.key)
            if answer is not None and answer.attempt >= job.attempt:
                return False
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="modelgate-webhooks",
                                                daemon=True)
                self._thread.start()
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                return False
            self._in_flight.add(job.key)
            return True

    def answer(self, key: str) -> Answer | None:
        with self._lock:
            return self._answers.get(key)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                result = send(job)
            except Exception as exc:  # the worker must outlive any one job
                result = Answer(job.attempt, False, f"not sent ({type(exc).__name__})")
            with self._lock:
                self._in_flight.discard(job.key)
                self._answers[job.key] = result
                self._answers.move_to_end(job.key)
                while len(self._answers) > self._answers_kept:
                    self._answers.popitem(last=False)


DELIVERER = Deliverer()
"""The operator's one worker."""


def _status(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    current = (body.get("status") or {}).get("notifications")
    if not isinstance(current, Mapping):
        return []
    return [dict(entry) for entry in current.get("deliveries") or [] if isinstance(entry, Mapping)]


def record(spec: ModelDeploymentSpec, body: Mapping[str, Any], events: tuple[Event, ...],
           state: RolloutState, analysis: AnalysisRecord | None, now_text: str, now: float,
           deliverer: Deliverer = DELIVERER
           ) -> tuple[dict[str, Any] | None, tuple[Event, ...]]:
    """status.notifications for this tick: the worker's answers applied to pending deliveries,
    and a new pending delivery for each transition in `events` and webhook wanting it; and
    Events for deliveries that finally failed. None when there is nothing to record."""
    entries = _status(body)
    out: list[Event] = []
    webhooks = {webhook.name: webhook for webhook in spec.notifications.webhooks}
    for entry in entries:
        if entry.get("state") != "Pending":
            continue
        attempts = int(entry.get("attempts") or 0)
        answer = deliverer.answer(str(entry.get("key")))
        if answer is None or answer.attempt != attempts + 1:
            if entry.get("webhook") not in webhooks:
                entry.update(state="Failed", error="the webhook is no longer in the spec")
                entry.pop("payload", None)
            continue
        entry["attempts"] = answer.attempt
        if answer.ok:
            entry.update(state="Delivered", deliveredAt=now_text)
            entry.pop("payload", None)
            entry.pop("error", None)
            entry.pop("nextAttemptAt", None)
        elif answer.attempt >= MAX_ATTEMPTS:
            entry.update(state="Failed", error=answer.error)
            entry.pop("payload", None)
            entry.pop("nextAttemptAt", None)
            out.append(Event("NotificationFailed", f"webhook {entry.get('webhook')} was not "
                             f"told of {entry.get('transition')} after {answer.attempt} "
                             f"attempts: {answer.error} (the rollout is not affected)",
                             warning=True))
        else:
            entry.update(error=answer.error, nextAttemptAt=now + backoff(answer.attempt))
    uid = str((body.get("metadata") or {}).get("uid"))
    for event in events:
        if event.reason not in TRANSITIONS:
            continue
        for webhook in spec.notifications.webhooks:
            if webhook.transitions and event.reason not in webhook.transitions:
                continue
            key = delivery_key(uid, webhook.name, event.reason, now_text, event.message)
            if any(entry.get("key") == key for entry in entries):
                continue
            entry = {"key": key, "webhook": webhook.name, "transition": event.reason,
                     "at": now_text, "state": "Pending", "attempts": 0}
            try:
                if webhook.body is not None:
                    check_template(webhook.body)
            except TemplateError as exc:
                entry.update(state="Failed", error=f"its body template {exc}")
                out.append(Event("NotificationFailed", f"webhook {webhook.name} was not told "
                                 f"of {event.reason}: its body template {exc} (fix "
                                 "spec.notifications; the rollout is not affected)",
                                 warning=True))
            else:
                data = payload(spec, body, event, state, analysis, now_text)
                data["deliveryKey"] = key
                entry["payload"] = data
            entries.append(entry)
    if not entries:
        return None, tuple(out)
    pending = [entry for entry in entries if entry.get("state") == "Pending"]
    done = [entry for entry in entries if entry.get("state") != "Pending"]
    kept = [entry for entry in entries
            if entry in pending or entry in done[max(len(done) - KEPT, 0):]]
    return {"deliveries": kept}, tuple(out)


def dispatch(spec: ModelDeploymentSpec, notifications: Mapping[str, Any] | None, now: float,
             deliverer: Deliverer = DELIVERER) -> int:
    """Hand the due pending deliveries of written status to the worker; how many were."""
    if not notifications:
        return 0
    webhooks = {webhook.name: webhook for webhook in spec.notifications.webhooks}
    handed = 0
    for entry in notifications.get("deliveries") or []:
        webhook = webhooks.get(str(entry.get("webhook")))
        if entry.get("state") != "Pending" or webhook is None or "payload" not in entry:
            continue
        if float(entry.get("nextAttemptAt") or 0.0) > now:
            continue
        job = Job(key=str(entry["key"]), attempt=int(entry.get("attempts") or 0) + 1,
                  url=webhook.url, data=body(webhook, entry["payload"]))
        handed += deliverer.submit(job)
    return handed
