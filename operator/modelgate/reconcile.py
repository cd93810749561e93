"""One tick for one ModelDeployment: observe -> core.decide -> ensure children -> status.

Kept apart from kopf so the sandbox tests and the kopf timer run the very same function. The
order matters for restart safety: children are ensured before status is written, so a crash
in between leaves status one tick behind the cluster, and the next tick (which reads both)
simply decides the same again.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from modelgate import (
    api,
    control_annotations,
    deployments,
    notifications,
    registry,
    registry_sync,
    status,
)
from modelgate import operator_metrics as metrics
from modelgate.core import machine, manifests
from modelgate.core.analysis import AnalysisRecord
from modelgate.core.state import Decision, Event, Observed, RolloutState, ScrapeResult
from modelgate.core.types import ModelDeploymentSpec, Phase
from modelgate.k8s import ApiException, ServingPods
from modelgate.providers import (
    MetricProvider,
    PrometheusAuth,
    ProviderFactory,
    ProviderUnavailableError,
    Target,
    provider_for,
)
from modelgate.settings import OperatorSettings


class StatusConflict(Exception):  # noqa: N818 (not an error: a tick to decide again)
    """The ModelDeployment changed between this tick's read and its status write."""

    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(f"{namespace}/{name} changed while this tick decided (409 Conflict on "
                         "its status); the next tick decides again from the newer object")


@dataclass(frozen=True)
class TickResult:
    status: dict[str, Any] | None
    """What was written; None when nothing was (status could not be read)."""
    events: tuple[Event, ...]


class ClusterCalls(Protocol):
    """The Kubernetes API calls one tick makes: `modelgate.k8s.Cluster`, or a test's fake."""

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def ensure_deployment(self, body: Mapping[str, Any], existing: Mapping[str, Any] | None,
                          *, force: bool = False) -> None: ...

    def delete_deployment(self, existing: Mapping[str, Any], owner_uid: str) -> None: ...

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def ensure_service(self, body: Mapping[str, Any], existing: Mapping[str, Any] | None,
                       *, force: bool = False) -> None: ...

    def serving_pods(self, namespace: str, name: str) -> ServingPods: ...

    def find_model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any], *,
                     resource_version: str | None = None) -> None: ...

    def post_event(self, body: Mapping[str, Any], reason: str, message: str, *,
                   warning: bool = False) -> None: ...


CONFLICT_ATTEMPTS = 3
"""Decisions one tick makes when its status write meets 409 Conflicts: each re-reads the
object and decides again from it; after the last, StatusConflict (the next tick goes on)."""

REFUSED = frozenset({400, 403, 422})
"""Answers to a child's write that repeating it will not change: admission (a webhook, a
ValidatingAdmissionPolicy, OwnerReferencesPermissionEnforcement), RBAC, validation. They are
reported in status and Events, and the tick's other writes go on; any other error (the server
unreachable, 5xx) ends the tick, which the next one repeats."""


def reconcile(cluster: ClusterCalls, settings: OperatorSettings, body: Mapping[str, Any],
              now: float, provider_factory: ProviderFactory = provider_for) -> TickResult:
    """Decide one tick for `body` (a ModelDeployment), act on it and write its status.

    A status write that meets a 409 (the object changed since it was read: a person's
    annotation, another writer's status) re-reads the object and decides again from it, so
    the newer change is never overwritten; Events are posted only with the status that
    records them, so a decision that was not written posts none."""
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            return _reconcile_once(cluster, settings, body, now, provider_factory)
        except StatusConflict:
            if attempt == CONFLICT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _reconcile_once(cluster: ClusterCalls, settings: OperatorSettings, body: Mapping[str, Any],
                    now: float, provider_factory: ProviderFactory) -> TickResult:
    metadata = body.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "default")
    name = str(metadata.get("name"))
    # Decide from the object as the API server holds it, not from the watch's copy: a watch
    # can lag (a busy API server, a slow operator), and a decision taken from an older status
    # repeats transitions or, written back, rolls status back. Seen in the sandbox under load:
    # a status without its stable arm made the next model version deploy directly, unjudged.
    # The status write below carries this read's resourceVersion, so a change in between is
    # a 409 and the next tick decides again from the newer object.
    fresh = cluster.find_model_deployment(namespace, name)
    if fresh is None:
        return TickResult(status=None, events=())
    body = fresh
    metadata = body.get("metadata") or {}
    try:
        state = status.state_from_status(body.get("status"))
    except ValueError as exc:
        return _hold_unreadable_status(cluster, body, exc)
    owner_uid = str(metadata.get("uid"))
    existing, existing_service, conflicts = _children(cluster, namespace, name, owner_uid)
    observed = _observe(body, existing)
    try:
        spec = api.parse(body)
        _check_image(settings, spec)
        provider = provider_factory(spec.analysis.provider,
                                    timeout_cap=settings.scrape_timeout_seconds,
                                    concurrency=settings.scrape_concurrency,
                                    auth=PrometheusAuth(
                                        token_file=settings.prometheus_token_file,
                                        token_addresses=settings.prometheus_token_addresses,
                                        ca_file=settings.prometheus_ca_file))
    except (api.SpecError, ProviderUnavailableError) as exc:
        return _hold_invalid_spec(cluster, body, state, observed, exc, now)
    if conflicts:
        held = machine.decide_conflict(state, observed, conflicts, now)
        return _write(cluster, body, held.state, None, now, held.events)
    try:
        spec, registry_status, resolved_events = registry_sync.resolve_models(
            settings, spec, body, now)
    except registry.RegistryError as exc:
        held = machine.decide_unresolved(state, observed, exc.reason, exc.message, now)
        return _write(cluster, body, held.state, None, now, held.events)
    scrape_due = machine.wants_scrape(spec, state, now)
    pods = cluster.serving_pods(namespace, name) \
        if scrape_due or _waits_for_pods(state, observed) else None
    if pods is not None:
        observed = replace(observed, pod_problems=pods.problems)
    if scrape_due:
        assert pods is not None
        observed = replace(observed, scrape=_scrape(provider, spec, state, body, pods, now))
    decision = machine.decide(spec, state, observed, now)
    refusals, corrected = _ensure_children(cluster, spec, body, decision, existing,
                                           existing_service)
    decision = machine.note_refused_writes(decision, refusals, now, observed.generation)
    # After the children: the registry learns of a decision already acted on, and a registry
    # that is down only leaves the write-back pending (status says so) for the next tick.
    registry_status, written_events = registry_sync.write_back(
        settings, spec, body, decision.state, decision.record, registry_status, now)
    events = (*resolved_events, *decision.events, *corrected, *written_events)
    # Webhooks: this tick's transitions become pending deliveries in status; only once that
    # status is written are the due ones handed to the background worker, so a refused write
    # delivers nothing and a slow webhook never holds the tick.
    notifications_status, notified_events = notifications.record(
        spec, body, events, decision.state, decision.record, status.to_time(now), now)
    events = (*events, *notified_events)
    _count(events, namespace, name)
    result = _write(cluster, body, decision.state, decision.record, now, events,
                    registry_status=registry_status, notifications_status=notifications_status)
    notifications.dispatch(spec, notifications_status, now)
    return result


def _waits_for_pods(state: RolloutState, observed: Observed) -> bool:
    """A canary is in flight and an arm's pods are not all ready: the tick reads why (one
    list of pods), for the progress deadline's reason."""
    if state.canary is None:
        return False
    return any(arm is not None and not arm.settled for arm in (observed.stable, observed.canary))


Children = dict[str, dict[str, Any] | None]
"""Each arm's Deployment as the API returned it (None: it does not exist), by role."""


def _hold_unreadable_status(cluster: ClusterCalls, body: Mapping[str, Any],
                            error: ValueError) -> TickResult:
    # Acting on a status that cannot be read could redeploy the declared model as if
    # nothing served: hold everything, say so, and write nothing.
    event = Event("StatusUnreadable", f"{error}; nothing is changed until status is "
                  "repaired or cleared", warning=True)
    _post(cluster, body, (event,))
    return TickResult(status=None, events=(event,))


def _children(cluster: ClusterCalls, namespace: str, name: str, owner_uid: str
              ) -> tuple[Children, dict[str, Any] | None, list[str]]:
    """Each arm's Deployment and the Service, and the names held by objects this
    ModelDeployment does not control (a stranger is never read as an arm of the rollout)."""
    deployments_by_role = {
        role: cluster.get_deployment(namespace, manifests.deployment_name(name, role))
        for role in (manifests.STABLE, manifests.CANARY)}
    service = cluster.get_service(namespace, manifests.service_name(name))
    conflicts = [problem for problem in (
        manifests.conflict("Service", service, owner_uid),
        *(manifests.conflict("Deployment", child, owner_uid)
          for child in deployments_by_role.values()),
    ) if problem]
    owned = {role: child if manifests.is_owned(child, owner_uid) else None
             for role, child in deployments_by_role.items()}
    return owned, service, conflicts


def _check_image(settings: OperatorSettings, spec: ModelDeploymentSpec) -> None:
    if not settings.image_allowed(spec.serving.image):
        raise api.SpecError([
            f"spec.serving.image: {spec.serving.image!r} is not in this operator's image "
            f"allowlist ({', '.join(settings.image_allowlist)}); use an allowed image or "
            "ask the cluster's administrator"])


def _observe(body: Mapping[str, Any], existing: Children) -> Observed:
    """What the object and its children show this tick (the scrape comes later, if due)."""
    metadata = body.get("metadata") or {}
    return Observed(
        generation=int(metadata.get("generation") or 0),
        spec_hash=manifests.spec_hash(body.get("spec") or {}),
        controls=control_annotations.controls(metadata.get("annotations")),
        stable=deployments.arm_observed(existing[manifests.STABLE]),
        canary=deployments.arm_observed(existing[manifests.CANARY]),
    )


def _hold_invalid_spec(cluster: ClusterCalls, body: Mapping[str, Any], state: RolloutState,
                       observed: Observed, error: api.SpecError | ProviderUnavailableError,
                       now: float) -> TickResult:
    problems = error.problems if isinstance(error, api.SpecError) else [str(error)]
    invalid = machine.decide_invalid(state, observed, problems, now)
    assert invalid.keep_children
    return _write(cluster, body, invalid.state, None, now, invalid.events)


def _scrape(provider: MetricProvider, spec: ModelDeploymentSpec, state: RolloutState,
            body: Mapping[str, Any], pods: ServingPods, now: float) -> ScrapeResult:
    """Both arms' metrics now, timed for the operator's own metrics."""
    assert state.canary is not None
    metadata = body.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "default")
    name = str(metadata.get("name"))
    started = time.monotonic()
    target = Target(namespace=namespace, name=name,
                    stable_version=state.stable.model.version if state.stable else "",
                    canary_version=state.canary.model.version,
                    interval_seconds=spec.analysis.interval_seconds,
                    metrics=spec.analysis.metrics)
    scrape = provider.collect(pods.ready, spec.serving.port, now - state.canary.started_at,
                              target=target)
    metrics.ANALYSIS_SECONDS.observe(time.monotonic() - started)
    return scrape


def _ensure_children(cluster: ClusterCalls, spec: ModelDeploymentSpec, body: Mapping[str, Any],
                     decision: Decision, existing: Children,
                     existing_service: Mapping[str, Any] | None
                     ) -> tuple[list[str], tuple[Event, ...]]:
    """The Service, and each arm's Deployment as the decision plans it (or none). Each write
    stands alone: one the server refuses (REFUSED) is returned, in words naming the object,
    the verb and the server's message, and the others still go ahead (a refused stable patch
    does not keep a rollback from removing the canary). A child someone else changed in
    fields the operator owns is written back; the Events returned say what was changed, by
    whom, and that it was restored."""
    metadata = body.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "default")
    name = str(metadata.get("name"))
    owner = manifests.Owner(name=name, namespace=namespace, uid=str(metadata.get("uid")))
    refusals: list[str] = []
    events: list[Event] = []

    def attempt(kind: str, child_name: str, verb: str, write: Any, *args: Any,
                **kwargs: Any) -> bool:
        try:
            write(*args, **kwargs)
        except ApiException as exc:
            if exc.status not in REFUSED:
                raise
            refusals.append(f"{verb} {kind} {namespace}/{child_name} was refused by the API "
                            f"server ({exc.status} {exc.reason}): {_server_message(exc)}")
            return False
        return True

    wanted_service = manifests.service(spec, owner)
    event = _drift_event("Service", wanted_service, existing_service)
    if attempt("Service", wanted_service["metadata"]["name"],
               "create" if existing_service is None else "patch", cluster.ensure_service,
               wanted_service, existing_service, force=event is not None) and event:
        events.append(event)
    for role, plan in ((manifests.STABLE, decision.stable), (manifests.CANARY, decision.canary)):
        child_name = manifests.deployment_name(name, role)
        if plan is None:
            child = existing[role]
            if child is not None:
                attempt("Deployment", child_name, "delete", cluster.delete_deployment, child,
                        owner.uid)
        else:
            wanted = manifests.deployment(spec, owner, role, plan.model, plan.replicas,
                                          plan.serving)
            event = _drift_event("Deployment", wanted, existing[role])
            if attempt("Deployment", child_name,
                       "create" if existing[role] is None else "patch",
                       cluster.ensure_deployment, wanted, existing[role],
                       force=event is not None) and event:
                events.append(event)
    return refusals, tuple(events)


def _server_message(exc: ApiException) -> str:
    """The message of the Status the server answered with (else its raw body, shortened)."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    text = str(message or exc.body or exc.reason or "")
    return " ".join(text.split())[:400]


def _drift_event(kind: str, wanted: Mapping[str, Any],
                 live: Mapping[str, Any] | None) -> Event | None:
    """A DriftCorrected Event when `live`, last written as `wanted`, was changed since in
    fields the operator owns; None when it was not (or a planned update is due anyway)."""
    if live is None or manifests.applied_hash(live) != manifests.applied_hash(wanted):
        return None
    changes = deployments.drift(wanted, live)
    if not changes:
        return None
    by_manager: dict[str, list[str]] = {}
    for change in changes:
        who = deployments.changed_by(live, change) or "an unknown writer"
        by_manager.setdefault(who, []).append(change.describe())
    said = "; ".join(f"by {who}: {', '.join(what)}" for who, what in by_manager.items())
    child = (live.get("metadata") or {}).get("name")
    return Event("DriftCorrected", f"{kind} {child} was changed outside modelgate ({said}); "
                 "modelgate owns these fields and restored them: change the ModelDeployment's "
                 "spec instead", warning=True)


def _count(events: tuple[Event, ...], namespace: str, name: str) -> None:
    for event in events:
        counter = metrics.EVENT_COUNTERS.get(event.reason)
        if counter is not None:
            counter.labels(namespace, name).inc()


def _write(cluster: ClusterCalls, body: Mapping[str, Any], state: RolloutState,
           record: AnalysisRecord | None, now: float, events: tuple[Event, ...], *,
           registry_status: Mapping[str, Any] | None = None,
           notifications_status: Mapping[str, Any] | None = None) -> TickResult:
    """Write the whole status once, then post the tick's Events.

    The status write carries the resourceVersion the tick decided from: if the object changed
    since it was read, it is refused (409, StatusConflict), nothing is posted, and the caller
    decides again from the newer object. Events come after the status that records them, so a
    decision that was dropped posts none and none is posted twice; an operator that dies
    between the two loses that tick's Events (status, the truth, has what they said)."""
    new_status = status.status_from_state(state, record, judged_at=now)
    if registry_status:
        new_status["registry"] = dict(registry_status)
    if notifications_status:
        new_status["notifications"] = dict(notifications_status)
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
    try:
        cluster.patch_status(namespace, name, new_status,
                             resource_version=metadata.get("resourceVersion"))
    except ApiException as exc:
        if exc.status == 409:
            raise StatusConflict(namespace, name) from exc
        raise
    _post(cluster, body, events)
    for phase in Phase:
        metrics.PHASE.labels(namespace, name, phase.value).set(int(phase is state.phase))
    if record is not None:
        metrics.LAST_ANALYSIS.labels(namespace, name).set(now)
    return TickResult(status=new_status, events=events)


def _post(cluster: ClusterCalls, body: Mapping[str, Any], events: tuple[Event, ...]) -> None:
    for event in events:
        # an Event is a courtesy: losing one must not stop the rollout (it is counted)
        with contextlib.suppress(ApiException):
            cluster.post_event(body, event.reason, event.message, warning=event.warning)
