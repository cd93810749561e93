"""Metric providers: where the analysis gets both arms' numbers.

One small Protocol, a factory that refuses an unknown type, one module per implementation
(`podscrape`, the default; `static`, for tests).
A provider never decides anything: a failure is reported as a ScrapeResult with an error,
which the judge treats as "provider down" (it holds; it never rolls back).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from modelgate.core.state import ScrapeResult
from modelgate.core.types import ProviderSpec, ProviderType
from modelgate.k8s import PodAddress


class MetricProvider(Protocol):
    """Reads the serving metrics of both arms at one moment."""

    def collect(self, pods: Sequence[PodAddress], port: int, t: float) -> ScrapeResult:
        """Scrape every given pod; `t` is seconds since the canary started."""


class ProviderFactory(Protocol):
    """Makes the provider a spec asks for (`provider_for`; tests pass their own)."""

    def __call__(self, spec: ProviderSpec, *, timeout_cap: float,
                 concurrency: int) -> MetricProvider:
        """The provider for `spec`; ProviderUnavailableError if there is none."""


class ProviderUnavailableError(ValueError):
    """The spec asks for a provider this operator does not have."""


def provider_for(spec: ProviderSpec, *, timeout_cap: float, concurrency: int) -> MetricProvider:
    """The provider a spec asks for; raises ProviderUnavailableError for one not built in."""
    if spec.type is ProviderType.POD_SCRAPE:
        from modelgate.providers.podscrape import PodScrapeProvider

        return PodScrapeProvider(timeout=min(spec.timeout_seconds, timeout_cap),
                                 concurrency=concurrency)
    raise ProviderUnavailableError(
        f"spec.analysis.provider.type: {spec.type.value!r} is not available in this version of "
        "the operator; use podScrape (the default)")
