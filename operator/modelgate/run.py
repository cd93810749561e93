"""`modelgate run`: the operator process (kopf with modelgate's handlers, settings from the
environment)."""

from __future__ import annotations

import dataclasses
import sys

from modelgate.k8s import load_config


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
