"""Verdicts, decisions and the decision record the judge returns."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from modelgate.core.analysis.sequential import Interval
from modelgate.core.types import MetricType


class Verdict(str, Enum):
    """What one metric's check concluded at one look."""

    PASS = "pass"
    """Confident the canary is within tolerance of stable (at most β wrong)."""
    FAIL = "fail"
    """Confident the canary is worse than stable (at most α wrong, split between metrics)."""
    CONTINUE = "continue"
    """Enough data to look, not yet enough evidence either way."""
    NO_DATA = "no-data"
    """Too few samples to look at all; holds, never rolls back."""
    ERROR = "error"
    """The metric provider failed; holds, counted against the provider's error budget."""


class AnalysisDecision(str, Enum):
    """What the analysis as a whole concluded."""

    PROMOTE = "promote"
    """Every metric passed."""
    ROLLBACK = "rollback"
    """A metric failed."""
    CONTINUE = "continue"
    """Keep collecting."""
    INCONCLUSIVE = "inconclusive"
    """Time (or the provider error budget) ran out without a verdict; the spec's
    onInconclusive policy decides what happens."""


@dataclass(frozen=True)
class ArmValue:
    """One arm's value of a metric and the sample size behind it."""

    value: float | None
    samples: int


@dataclass(frozen=True)
class LatencyResolution:
    """Which histogram bounds a latency verdict used: the server's buckets bound what can be
    proven, since only counts at bucket bounds are known."""

    stable_bound: float
    """Seconds: the bucket bound just below stable's quantile (stable's share above it is at
    least 1 - q)."""
    canary_bound: float
    """Seconds: the largest bucket bound within the tolerance above `stable_bound`."""
    tested_tolerance: float
    """canary_bound / stable_bound - 1: the tolerance actually tested (at most the spec's)."""


@dataclass(frozen=True)
class MetricRecord:
    """Why one metric concluded what it did."""

    name: str
    type: MetricType
    verdict: Verdict
    stable: ArmValue
    canary: ArmValue
    reason: str
    statistic: float | None = None
    """Standardised estimate (estimate / standard error) of the tested quantity."""
    effect: Interval | None = None
    """The tested quantity with the bounds of this look: `fail` when the lower bound is above
    zero (confidently worse than stable), `pass` when the upper bound is below the tolerance
    (confidently within it). What the quantity is depends on the type."""
    required_samples: int | None = None
    """More canary samples needed before a verdict is likely, if known."""
    seconds_to_decision: float | None = None
    """Estimated seconds until a verdict at the canary's current traffic, if undecided and
    the canary has traffic to extrapolate from."""
    resolution: LatencyResolution | None = None
    """Latency only: the histogram bounds the verdict was reached at."""


@dataclass(frozen=True)
class AnalysisRecord:
    """The judge's decision with one record per metric."""

    decision: AnalysisDecision
    reason: str
    elapsed_seconds: float
    metrics: tuple[MetricRecord, ...]
    canary_rate: float | None = None
    """Canary requests per second over the window so far (None before it starts)."""
    look: int | None = None
    """This look's number in the plan (1..looks)."""
    looks: int | None = None
    """Looks in the whole plan: maxDuration / interval."""
    passed: tuple[str, ...] = ()
    """Metrics passed at this or an earlier look: give them back to the next look."""
    starved: bool = False
    """True when a metric still has too little data to be judged at all (for example no
    traffic reaches the canary): an inconclusive end then never rolls back."""

    def metric(self, name: str) -> MetricRecord:
        for record in self.metrics:
            if record.name == name:
                return record
        raise KeyError(name)
