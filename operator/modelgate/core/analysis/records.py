"""Verdicts, decisions and the decision record the judge returns."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from modelgate.core.analysis.sequential import Interval
from modelgate.core.types import MetricType


class Verdict(str, Enum):
    """What one metric's check concluded at one look."""

    PASS = "pass"
    """Confident the canary is within tolerance of stable."""
    FAIL = "fail"
    """Confident the canary is worse than stable by more than the tolerance."""
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
    """The tested quantity with its always-valid interval; what it is depends on the type."""
    required_samples: int | None = None
    """More canary samples needed before a verdict is likely, if known."""


@dataclass(frozen=True)
class AnalysisRecord:
    """The judge's decision with one record per metric."""

    decision: AnalysisDecision
    reason: str
    elapsed_seconds: float
    metrics: tuple[MetricRecord, ...]

    def metric(self, name: str) -> MetricRecord:
        for record in self.metrics:
            if record.name == name:
                return record
        raise KeyError(name)
