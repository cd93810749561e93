"""From scrapes of serving pods to what each arm did over the analysis window.

A scrape is one pod's metrics at one moment (the serving metrics of DESIGN contract 4, already
parsed into samples). Counters only grow, except when a pod restarts; histograms are counters
per bucket. For each pod the increase over the window is summed over consecutive scrapes, a
drop being read as a restart (the new value is all new counts), as Prometheus' increase() does.
Pods of an arm are summed, so pods may come and go.

The window is the same for both arms: it starts when both have been scraped. A pod seen by then
contributes only what it counted afterwards, so a stable pod's history from before the canary
does not count; a pod first seen later was born inside the window and contributes everything
it counted.

Feedback is different: a client may post the true label to any pod, so feedback counters carry
the version that made the prediction, and each arm's accuracy is the feedback for its version
from every pod of both arms.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

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

    def arm(self, role: Role) -> ArmObservation:
        return self.stable if role is Role.STABLE else self.canary


def _increase(values: Sequence[float], counts_from_zero: bool) -> float:
    """Growth of a counter over consecutive readings; a drop is a restart."""
    total = values[0] if counts_from_zero else 0.0
    for before, after in itertools.pairwise(values):
        total += after - before if after >= before else after
    return total


def observe(scrapes: Iterable[PodScrape], at: float) -> Observation:
    """Both arms' activity from the start of their window up to time `at` (inclusive)."""
    by_pod: dict[tuple[Role, str], list[PodScrape]] = defaultdict(list)
    for scrape in scrapes:
        if scrape.t <= at:
            by_pod[(scrape.role, scrape.pod)].append(scrape)
    first_seen: dict[Role, float] = {}
    for (role, _), pod_scrapes in by_pod.items():
        pod_scrapes.sort(key=lambda s: s.t)
        first_seen[role] = min(first_seen.get(role, math.inf), pod_scrapes[0].t)
    # Both arms are compared over the same window: from when both were first seen.
    window_start = max(first_seen.values(), default=0.0)

    # series -> increase, per role; feedback per version across roles
    totals: dict[Role, dict[tuple[str, Labels], float]] = {role: defaultdict(float)
                                                          for role in Role}
    versions: dict[Role, set[str]] = {role: set() for role in Role}
    pods: dict[Role, int] = dict.fromkeys(Role, 0)
    for (role, _), pod_scrapes in by_pod.items():
        before = [s for s in pod_scrapes if s.t <= window_start]
        inside = [s for s in pod_scrapes if s.t > window_start]
        # A pod seen by the window's start counts from its reading there; one first seen
        # later was born inside the window and counts from zero.
        born_inside = not before
        readings = inside if born_inside else [before[-1], *inside]
        pods[role] += 1
        series: dict[tuple[str, Labels], list[float]] = defaultdict(list)
        # A series missing from the pod's first reading appeared later (a labelled counter
        # shows up at its first increment), so all of it is new.
        appeared_later: set[tuple[str, Labels]] = set()
        for index, scrape in enumerate(readings):
            for sample in scrape.samples:
                if (sample.name == MODEL_INFO and sample.value > 0) or sample.name == REQUESTS:
                    version = sample.label("version")
                    if version:
                        versions[role].add(version)
                if sample.name in COUNTED and math.isfinite(sample.value):
                    key = (sample.name, tuple(kv for kv in sample.labels if kv[0] != "model"))
                    if index > 0 and key not in series:
                        appeared_later.add(key)
                    series[key].append(sample.value)
        for key, values in series.items():
            totals[role][key] += _increase(
                values, counts_from_zero=born_inside or key in appeared_later)

    feedback: dict[tuple[str, str], float] = defaultdict(float)
    for role in Role:
        for (name, labels), value in totals[role].items():
            if name == FEEDBACK:
                label = dict(labels)
                feedback[(label.get("version", ""), label.get("outcome", ""))] += value

    def arm(role: Role) -> ArmObservation:
        series = totals[role]
        # pods of one arm serve one version; mid-change, all of them are named
        version = ",".join(sorted(versions[role])) or None
        requests = errors = 0.0
        classes: dict[str, float] = defaultdict(float)
        latency: dict[float, float] = defaultdict(float)
        values: dict[float, float] = defaultdict(float)
        for (name, labels), value in series.items():
            label = dict(labels)
            if name == REQUESTS:
                requests += value
                if label.get("code", "").startswith("5"):
                    errors += value
            elif name == PREDICTIONS:
                classes[label.get("class", "")] += value
            elif name == DURATION_BUCKET:
                latency[_bound(label.get("le"))] += value
            elif name == PREDICTION_VALUE_BUCKET:
                values[_bound(label.get("le"))] += value
        return ArmObservation(
            version=version, pods=pods[role], requests=requests, errors=errors,
            latency=_histogram(latency), classes=dict(classes),
            prediction_values=_histogram(values),
            correct=feedback.get((version or "", "correct"), 0.0),
            incorrect=feedback.get((version or "", "incorrect"), 0.0),
        )

    return Observation(t=at, stable=arm(Role.STABLE), canary=arm(Role.CANARY))


def _bound(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.inf
    except ValueError:
        return math.nan


def _histogram(cumulative: Mapping[float, float]) -> Histogram:
    bounds = sorted(b for b in cumulative if not math.isnan(b))
    if not bounds:
        return Histogram()
    counts = [cumulative[b] for b in bounds]
    # Buckets summed over pods (and over counter resets) must stay monotone; repair rounding.
    for index in range(1, len(counts)):
        counts[index] = max(counts[index], counts[index - 1])
    return Histogram(bounds=tuple(bounds), cumulative=tuple(counts))
