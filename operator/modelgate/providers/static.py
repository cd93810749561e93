"""A provider that answers every round with the same result: for tests of the operator's
analysis (values the test chooses, no serving pods, no network), and to show the recipe's
smallest implementation. It is not selectable from a spec; tests hand it to `reconcile` as the
provider factory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from modelgate.core.state import ScrapeResult
from modelgate.core.types import ProviderSpec
from modelgate.k8s import PodAddress
from modelgate.providers import NO_AUTH, MetricProvider, PrometheusAuth, Target


class StaticProvider:
    """Returns `result` at every collect, its scrapes stamped with that round's time."""

    def __init__(self, result: ScrapeResult) -> None:
        self.result = result
        self.rounds = 0
        """How many times the operator collected (a test can see that the analysis ran)."""

    def collect(self, pods: Sequence[PodAddress], port: int, t: float, *,
                target: Target | None = None) -> ScrapeResult:
        self.rounds += 1
        return replace(self.result,
                       scrapes=tuple(replace(scrape, t=t) for scrape in self.result.scrapes))

    def factory(self, spec: ProviderSpec, *, timeout_cap: float, concurrency: int,
                auth: PrometheusAuth = NO_AUTH) -> MetricProvider:
        """This provider whatever the spec asks for (a `ProviderFactory`)."""
        return self
