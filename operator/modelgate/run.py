"""`modelgate run`: the operator process (kopf with modelgate's handlers, settings from the
environment)."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from modelgate.k8s import load_config
from modelgate.settings import OperatorSettings


def run_operator(standalone: bool | None) -> int:
    import kopf

    from modelgate import settings as operator_settings
    from modelgate.handlers import register

    try:
        settings = operator_settings.from_env()
    except operator_settings.SettingsError as exc:
        print(f"modelgate run: {exc}", file=sys.stderr)
        return 2
    if standalone is not None:
        settings = dataclasses.replace(settings, standalone=standalone)
    load_config()
    registry = kopf.OperatorRegistry()
    register(settings, registry)
    if settings.dashboard_port:
        _serve_dashboard(settings, registry)
    kopf.configure(verbose=False)
    kopf.run(
        registry=registry,
        standalone=settings.standalone,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=(f"http://0.0.0.0:{settings.health_port}/healthz"
                           if settings.health_port else None),
    )
    return 0


def _serve_dashboard(settings: OperatorSettings, registry: Any) -> None:
    """The read-only dashboard in the operator's event loop, reading with its credentials
    (it lists the ModelDeployments it watches, as kopf does)."""
    import kopf

    from modelgate import dashboard
    from modelgate.k8s import Cluster

    namespaces = settings.namespaces
    running: list[Any] = []

    def read() -> list[dict[str, Any]]:
        cluster = Cluster()
        if not namespaces:
            return cluster.list_model_deployments(None)
        return [body for namespace in namespaces
                for body in cluster.list_model_deployments(namespace)]

    board = dashboard.Dashboard(read, where="namespaces " + ", ".join(namespaces)
                                if namespaces else "all namespaces")

    @kopf.on.startup(registry=registry)
    async def start_dashboard(logger: Any, **_: Any) -> None:
        runner, poller, port = await dashboard.start(board, settings.dashboard_address,
                                                     settings.dashboard_port)
        running.extend((runner, poller))
        logger.info("read-only dashboard on %s", dashboard.url(settings.dashboard_address, port))

    @kopf.on.cleanup(registry=registry)
    async def stop_dashboard(**_: Any) -> None:
        if running:
            await dashboard.stop(*running)
