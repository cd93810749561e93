"""From scrapes of serving pods to what each arm did over the analysis window.

A scrape is one pod's metrics at one moment (the serving metrics of docs/architecture.md,
contract 4, already parsed into samples). Counters only grow, except when a pod restarts;
histograms are counters per bucket. For each pod the increase over the window is summed over
consecutive scrapes, a drop being read as a restart (the new value is all new counts), as
Prometheus' increase() does. Pods of an arm are summed, so pods may come and go.

The window is the same for both arms: it starts when both have been scraped. A pod seen by then
contributes only what it counted afterwards, so a stable pod's history from before the canary
does not count; a pod first seen later was born inside the window and contributes everything
it counted.

Feedback is different: a client may post the true label to any pod, so feedback counters carry
the version that made the prediction, and each arm's accuracy is the feedback for its version
from every pod of both arms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from modelgate.core.types import AnalysisSpec, MetricType

REQUESTS = "modelgate_requests_total"
DURATION_BUCKET = "modelgate_request_duration_seconds_bucket"
PREDICTIONS = "modelgate_predictions_total"
PREDICTION_VALUE_BUCKET = "modelgate_prediction_value_bucket"
FEEDBACK = "modelgate_feedback_total"
MODEL_INFO = "modelgate_model_info"

COUNTED = frozenset({REQUESTS, DURATION_BUCKET, PREDICTIONS, PREDICTION_VALUE_BUCKET, FEEDBACK})


class Role(str, Enum):
    """Which arm of the comparison a pod belongs to."""

    STABLE = "stable"
    """Serves the known-good version."""
    CANARY = "canary"
    """Serves the version under analysis."""


Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    """One value of one series in a scrape."""

    name: str
    labels: Labels
    value: float

    def label(self, key: str) -> str | None:
        for name, value in self.labels:
            if name == key:
                return value
        return None


@dataclass(frozen=True)
class PodScrape:
    """One pod's metrics at `t` seconds since the canary started."""

    t: float
    role: Role
    pod: str
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts per upper bound, ascending, the last bound being +Inf."""

    bounds: tuple[float, ...] = ()
    cumulative: tuple[float, ...] = ()

    @property
    def count(self) -> float:
        return self.cumulative[-1] if self.cumulative else 0.0


@dataclass(frozen=True)
class ArmObservation:
    """What one arm did inside the window."""

    version: str | None = None
    pods: int = 0
    requests: float = 0.0
    errors: float = 0.0
    """Requests answered with a 5xx (the server's fault; 4xx are the client's)."""
    latency: Histogram = Histogram()
    classes: Mapping[str, float] = field(default_factory=dict)
    """Predicted class -> count (classifiers)."""
    prediction_values: Histogram = Histogram()
    """Distribution of predicted values (regressors)."""
    correct: float = 0.0
    incorrect: float = 0.0
    """Feedback for this arm's version, from every pod."""

    @property
    def labelled(self) -> float:
        return self.correct + self.incorrect


@dataclass(frozen=True)
class Observation:
    """Both arms over the same window, judged at `t` seconds since the canary started."""

    t: float
    stable: ArmObservation
    canary: ArmObservation
    since: float = 0.0
    """Seconds since the canary started at which the window began (both arms scraped)."""

    @property
    def window_seconds(self) -> float:
        return max(self.t - self.since, 0.0)

    def arm(self, role: Role) -> ArmObservation:
        return self.stable if role is Role.STABLE else self.canary


def bound(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.inf
    except ValueError:
        return math.nan


def histogram(cumulative: Mapping[float, float]) -> Histogram:
    bounds = sorted(b for b in cumulative if not math.isnan(b))
    if not bounds:
        return Histogram()
    counts = [cumulative[b] for b in bounds]
    # Buckets summed over pods (and over counter resets) must stay monotone; repair rounding.
    for index in range(1, len(counts)):
        counts[index] = max(counts[index], counts[index - 1])
    return Histogram(bounds=tuple(bounds), cumulative=tuple(counts))


def custom_values(analysis: AnalysisSpec,
                  supplied: Mapping[str, float]) -> dict[str, float | None]:
    """Each prometheus (threshold) metric's canary value for the judge: what the provider
    supplied, else None, which the check reports as no data (it holds; it never passes
    unseen). The operator and `modelgate analyze` both judge through this."""
    return {metric.name: supplied.get(metric.name) for metric in analysis.metrics
            if metric.type is MetricType.PROMETHEUS}
