"""Operator settings, read from the environment (MODELGATE_OPERATOR_<NAME>) with defaults.

Each field's docstring gives its unit and default; `modelgate run --help` and the README list
them. A value that cannot be read stops the operator at start with a message naming it.
"""

from __future__ import annotations

import ast
import fnmatch
import inspect
import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

ENV_PREFIX = "MODELGATE_OPERATOR_"


@dataclass(frozen=True)
class OperatorSettings:
    """How the operator runs."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch, comma-separated; empty (the default) watches the whole cluster."""
    tick_seconds: float = 5.0
    """Seconds between reconciliations of one ModelDeployment (default 5). Each tick reads the
    cluster, decides, and writes status once."""
    scrape_timeout_seconds: float = 5.0
    """Upper bound in seconds on one scrape of a pod's /metrics (default 5); a spec's
    analysis.provider.timeout may only shorten it."""
    scrape_concurrency: int = 16
    """Pods scraped at once (default 16)."""
    metrics_port: int = 8000
    """Port of the operator's own Prometheus metrics (default 8000; 0 turns them off)."""
    health_port: int = 8081
    """Port of the liveness endpoint /healthz (default 8081; 0 turns it off)."""
    dashboard_port: int = 0
    """Port of the read-only dashboard (`modelgate dashboard`'s page, served by the
    operator); 0, the default, turns it off. It has no authentication: keep it on
    127.0.0.1 and reach it with kubectl port-forward."""
    dashboard_address: str = "127.0.0.1"
    """Address the dashboard listens on (default 127.0.0.1, the pod itself: kubectl
    port-forward reaches it, nothing else does)."""
    standalone: bool = False
    """Run without kopf peering (default false). Set true for a single replica without the
    peering CRD, as the sandbox does."""
    image_allowlist: tuple[str, ...] = ()
    """Serving images a ModelDeployment may use, comma-separated shell-style patterns (for
    example registry.example.com/modelgate/serving@sha256:*); empty (the default) allows any.
    A spec naming another image is reported invalid and nothing is deployed for it."""

    prometheus_token_file: str = ""
    """File holding the bearer token sent to Prometheus (mount a Secret there); read at every
    query, so a rotated Secret applies without a restart, and never logged. Empty (the
    default): no token."""
    prometheus_token_addresses: tuple[str, ...] = ()
    """Prometheus base URLs the bearer token is sent to, comma-separated, exactly as specs
    write provider.address; the token goes to no other address, so a spec cannot send it
    elsewhere. Empty (the default): to none."""
    prometheus_ca_file: str = ""
    """PEM file of CA certificates trusted for https Prometheus addresses, besides the
    system's (mount a Secret or ConfigMap there). Empty (the default): the system's only."""
    mlflow_tracking_uri: str = ""
    """Base URL of the MLflow tracking server that models:/ URIs are resolved against when a
    spec names none (spec.registry.trackingUri). Empty (the default): specs must name one."""
    mlflow_token_file: str = ""
    """File holding the bearer token sent to MLflow (mount a Secret there); read at every
    call and never logged. Empty (the default): no token."""
    mlflow_token_addresses: tuple[str, ...] = ()
    """MLflow base URLs the token is sent to, comma-separated, exactly as the setting above or
    specs write them; to no other. Empty (the default): to MODELGATE_OPERATOR_MLFLOW_TRACKING_URI
    only."""
    mlflow_timeout_seconds: float = 10.0
    """Seconds one call to MLflow may take (default 10), the model file's download when it is
    resolved included; a write-back that times out is retried at the next tick."""

    def image_allowed(self, image: str) -> bool:
        """True when the allowlist is empty or `image` matches one of its patterns."""
        return not self.image_allowlist or any(
            fnmatch.fnmatchcase(image, pattern) for pattern in self.image_allowlist)


class SettingsError(ValueError):
    """An environment variable that cannot be read."""


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper().removesuffix("_SECONDS")


def from_env(environ: Mapping[str, str] | None = None) -> OperatorSettings:
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for item in fields(OperatorSettings):
        name = env_name(item.name)
        text = environ.get(name)
        if text is None or text == "":
            continue
        default = getattr(OperatorSettings(), item.name)
        try:
            if isinstance(default, bool):
                if text.lower() not in ("true", "false"):
                    raise ValueError("use true or false")
                values[item.name] = text.lower() == "true"
            elif isinstance(default, str):
                values[item.name] = text
            elif isinstance(default, tuple):
                values[item.name] = tuple(part.strip() for part in text.split(",") if part.strip())
            elif isinstance(default, int):
                number = int(text)
                if number < 0:
                    raise ValueError("must not be negative")
                values[item.name] = number
            else:
                seconds = float(text)
                if not seconds > 0 or seconds == float("inf"):
                    raise ValueError("must be a positive number of seconds")
                values[item.name] = seconds
        except ValueError as exc:
            raise SettingsError(f"{name}={text!r}: {exc}") from exc
    return OperatorSettings(**values)  # type: ignore[arg-type]


def field_docs() -> dict[str, str]:
    """Environment variable -> its documentation, for the README."""
    return {env_name(name): doc for name, doc in attribute_docs(OperatorSettings).items()}


def attribute_docs(cls: type) -> dict[str, str]:
    """Each annotated class attribute's docstring (the string right below it), by name.

    The serving image keeps a copy (modelgate_serving.settings.attribute_docs), as it does not
    depend on the operator; tests/unit/test_one_of_each.py keeps the two equal.
    """
    body = ast.parse(inspect.getsource(cls)).body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body.body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)):
            docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs
