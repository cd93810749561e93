"""Metric providers: where the analysis gets both arms' numbers.

One small Protocol, a factory that refuses an unknown type, one module per implementation
(`podscrape`, the default; `prometheus`, a Prometheus server's HTTP API; `static`, for tests).
A provider never decides anything: a failure is reported as a ScrapeResult with an error,
which the judge treats as "provider down" (it holds; it never rolls back).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from modelgate.core.state import ScrapeResult
from modelgate.core.types import MetricSpec, ProviderSpec, ProviderType
from modelgate.k8s import PodAddress


@dataclass(frozen=True)
class Target:
    """What one round of collection is about: the ModelDeployment, both arms' versions and
    the metrics it judges (a provider that reads pods directly needs none of it)."""

    namespace: str
    name: str
    stable_version: str
    canary_version: str
    interval_seconds: float
    metrics: tuple[MetricSpec, ...] = ()


@dataclass(frozen=True)
class PrometheusAuth:
    """How the operator authenticates to Prometheus servers (its own settings, never a
    spec's): a bearer token read from a file (a mounted Secret) and sent only to the listed
    addresses, and a CA bundle trusted besides the system's."""

    token_file: str = ""
    token_addresses: tuple[str, ...] = ()
    ca_file: str = ""


NO_AUTH = PrometheusAuth()


class MetricProvider(Protocol):
    """Reads the serving metrics of both arms at one moment."""

    def collect(self, pods: Sequence[PodAddress], port: int, t: float, *,
                target: Target) -> ScrapeResult:
        """Read both arms' metrics; `t` is seconds since the canary started."""


class ProviderFactory(Protocol):
    """Makes the provider a spec asks for (`provider_for`; tests pass their own)."""

    def __call__(self, spec: ProviderSpec, *, timeout_cap: float, concurrency: int,
                 auth: PrometheusAuth = ...) -> MetricProvider:
        """The provider for `spec`; ProviderUnavailableError if there is none."""


class ProviderUnavailableError(ValueError):
    """The spec asks for a provider this operator does not have."""


def provider_for(spec: ProviderSpec, *, timeout_cap: float, concurrency: int,
                 auth: PrometheusAuth = NO_AUTH) -> MetricProvider:
    """The provider a spec asks for; raises ProviderUnavailableError for one not built in."""
    timeout = min(spec.timeout_seconds, timeout_cap)
    if spec.type is ProviderType.POD_SCRAPE:
        from modelgate.providers.podscrape import PodScrapeProvider

        return PodScrapeProvider(timeout=timeout, concurrency=concurrency)
    if spec.type is ProviderType.PROMETHEUS and spec.address:
        from modelgate.providers.prometheus import PrometheusProvider

        return PrometheusProvider(spec.address, timeout=timeout, concurrency=concurrency,
                                  auth=auth)
    raise ProviderUnavailableError(
        f"spec.analysis.provider.type: {spec.type.value!r} is not available in this version of "
        "the operator; use podScrape (the default) or prometheus with an address")
