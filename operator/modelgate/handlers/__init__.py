"""Thin kopf handlers: one timer per ModelDeployment owns reconciliation.

The timer runs `reconcile` (observe, decide, ensure, write status once) every tick. There are
no create/update handlers: the first tick comes at once for a new object, and a spec change
is noticed by its hash in status, so nothing depends on which watch event was seen.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf
from prometheus_client import start_http_server

from modelgate import operator_metrics as metrics
from modelgate.core import resource
from modelgate.k8s import ApiException, Cluster
from modelgate.reconcile import StatusConflict, reconcile
from modelgate.settings import OperatorSettings

Logger = logging.Logger | logging.LoggerAdapter[Any]


def _quiet_timer_success(record: logging.LogRecord) -> bool:
    """Drop kopf's "Timer 'reconcile' succeeded." line, logged every tick for every object."""
    return not record.getMessage().endswith("succeeded.")


def register(operator: OperatorSettings, registry: kopf.OperatorRegistry) -> None:
    """Register the operator's handlers for these settings in `registry`."""
    cluster = Cluster(on_error=lambda verb: metrics.API_ERRORS.labels(verb).inc())

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # a custom registry has none of kopf's default login handlers: in a pod, the service
        # account; elsewhere, $KUBECONFIG
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
        return info or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, logger: Logger, **_: Any) -> None:
        # kopf would post every log line of a handler as an Event; reconcile posts ours
        settings.posting.enabled = False
        # A deleted ModelDeployment keeps kopf's finalizer until its timer has stopped; a tick
        # in progress (a thread) cannot be interrupted, and kopf would look again only after
        # a minute (tests/e2e saw deletions take that long). Look again every tick instead.
        settings.background.cancellation_polling = operator.tick_seconds
        if operator.namespaces:
            # Watching named namespaces needs no cluster-wide reads: without scanning, kopf
            # neither lists namespaces nor watches CRDs (the namespaced RBAC grants neither).
            settings.scanning.disabled = True
        logging.getLogger("kopf.objects").addFilter(_quiet_timer_success)
        # A watch that stops delivering (a half-open connection, a proxy that keeps it open
        # silently) is noticed: the server ends each watch after server_timeout, and the
        # client gives up on one that outlives it by a minute; kopf then lists and watches
        # again. Decisions never rest on the watch alone: each tick re-reads its object.
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 360
        settings.watching.connect_timeout = 30
        settings.execution.max_workers = 8
        if operator.metrics_port:
            start_http_server(operator.metrics_port)
            logger.info("operator metrics on :%d/metrics", operator.metrics_port)

    @kopf.timer(resource.GROUP, resource.VERSION, resource.PLURAL, interval=operator.tick_seconds,
                sharp=False, backoff=operator.tick_seconds, registry=registry,
                id="reconcile")
    def tick(body: kopf.Body, logger: Logger, **_: Any) -> None:
        started = time.monotonic()
        try:
            result = reconcile(cluster, operator, body, now=time.time())
        except StatusConflict as conflict:
            # routine when a person or the CLI writes while a tick decides: nothing was
            # written or posted, and the timer comes back within one interval
            logger.info("%s", conflict)
            return
        except ApiException as exc:
            raise kopf.TemporaryError(f"Kubernetes API: {exc.status} {exc.reason}",
                                      delay=operator.tick_seconds) from exc
        finally:
            metrics.TICK_SECONDS.observe(time.monotonic() - started)
        for event in result.events:
            logger.log(logging.WARNING if event.warning else logging.INFO, "%s: %s",
                       event.reason, event.message)
        if result.status is None:
            raise kopf.TemporaryError("status cannot be read; holding",
                                      delay=operator.tick_seconds * 10)
