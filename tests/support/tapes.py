"""Serving-pod metrics as Prometheus text, written by prometheus_client, for tapes and scrapes.

Names and labels follow docs/architecture.md, contract 4, so these stand in for a real
modelgate-serve pod.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from modelgate.core.analysis import PodScrape, Role
from modelgate.exposition import parse_exposition
from modelgate_serving.metrics import LATENCY_BUCKETS

# the server's own buckets, so tapes look like real pods
LATENCY_BOUNDS = LATENCY_BUCKETS


@dataclass
class PodCounters:
    """Everything one serving pod has counted since it started."""

    model: str = "iris"
    version: str = "1"
    codes: dict[str, float] = field(default_factory=dict)
    latency_buckets: list[float] = field(default_factory=list)
    """Cumulative counts per LATENCY_BOUNDS bound, then +Inf."""
    classes: dict[str, float] = field(default_factory=dict)
    feedback: dict[tuple[str, str], float] = field(default_factory=dict)
    """(version, outcome) -> count."""

    def text(self) -> str:
        registry = CollectorRegistry()
        registry.register(_Snapshot(self))
        return generate_latest(registry).decode()


class _Snapshot(Collector):
    def __init__(self, pod: PodCounters) -> None:
        self.pod = pod

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily |
                                  GaugeMetricFamily]:
        pod = self.pod
        base = [pod.model, pod.version]
        requests = CounterMetricFamily("modelgate_requests", "Requests by status code.",
                                       labels=["model", "version", "code"])
        for code, count in pod.codes.items():
            requests.add_metric([*base, code], count)
        yield requests
        if pod.latency_buckets:
            bounds = [*(str(b) for b in LATENCY_BOUNDS), "+Inf"]
            yield _histogram(base, bounds, pod.latency_buckets)
        predictions = CounterMetricFamily("modelgate_predictions", "Predicted classes.",
                                          labels=["model", "version", "class"])
        for label, count in pod.classes.items():
            predictions.add_metric([*base, label], count)
        yield predictions
        feedback = CounterMetricFamily("modelgate_feedback", "Feedback outcomes.",
                                       labels=["model", "version", "outcome"])
        for (version, outcome), count in pod.feedback.items():
            feedback.add_metric([pod.model, version, outcome], count)
        yield feedback
        info = GaugeMetricFamily("modelgate_model_info", "The model served.",
                                 labels=["model", "version", "sha256"])
        info.add_metric([*base, "0" * 64], 1.0)
        yield info


def _histogram(base: list[str], bounds: list[str],
               cumulative: list[float]) -> HistogramMetricFamily:
    family = HistogramMetricFamily("modelgate_request_duration_seconds", "Request duration.",
                                   labels=["model", "version"])
    family.add_metric(base, buckets=list(zip(bounds, cumulative, strict=True)), sum_value=0.0)
    return family


def latency_buckets(counts_per_bound: Mapping[float, float]) -> list[float]:
    """Cumulative bucket counts from counts of requests that took each number of seconds
    (each falls in the first bucket whose upper bound is at least it)."""
    bounds = (*LATENCY_BOUNDS, float("inf"))
    per_bucket = [0.0] * len(bounds)
    for seconds, count in counts_per_bound.items():
        per_bucket[next(i for i, bound in enumerate(bounds) if seconds <= bound)] += count
    cumulative, total = [], 0.0
    for count in per_bucket:
        total += count
        cumulative.append(total)
    return cumulative


def scrape(t: float, role: Role, pod: str, counters: PodCounters) -> PodScrape:
    return PodScrape(t=t, role=role, pod=pod, samples=parse_exposition(counters.text()))


def tape_lines(entries: Iterable[tuple[float, str, str, PodCounters]]) -> list[str]:
    return [json.dumps({"t": t, "role": role, "pod": pod, "text": counters.text()})
            for t, role, pod, counters in entries]


def uniform_latency(total: float, bounds: Sequence[float]) -> dict[float, float]:
    """`total` requests spread evenly over the buckets ending at `bounds`."""
    return {bound: total / len(bounds) for bound in bounds}


TYPICAL_LATENCY = {0.0025: 0.1, 0.005: 0.25, 0.0075: 0.2, 0.01: 0.15, 0.015: 0.12, 0.02: 0.08,
                   0.03: 0.05, 0.04: 0.025, 0.05: 0.012, 0.075: 0.008, 0.1: 0.004, 0.15: 0.001}
"""A latency distribution with a tail spread over several buckets, as real ones have."""


@dataclass(frozen=True)
class Arm:
    """What one arm's pods do per second, for building tapes."""

    version: str
    pods: int
    rate: float
    """Requests per second over all the arm's pods."""
    error_rate: float = 0.0
    latency: Mapping[float, float] = field(default_factory=lambda: dict(TYPICAL_LATENCY))
    """Share of requests per latency bucket upper bound."""
    classes: Mapping[str, float] = field(default_factory=lambda: {"setosa": 0.5,
                                                                   "versicolor": 0.3,
                                                                   "virginica": 0.2})


def make_tape(stable: Arm | None, canary: Arm | None, *, seconds: float,
              every: float = 10.0) -> list[str]:
    """A tape of both arms' pods scraped every `every` seconds, counts growing at the arms'
    rates (deterministically, so a test knows the truth exactly)."""
    entries = []
    ticks = int(seconds // every)
    for role, spec in (("stable", stable), ("canary", canary)):
        if spec is None:
            continue
        for index in range(spec.pods):
            for tick in range(ticks + 1):
                t = tick * every
                n = round(spec.rate / spec.pods * t)
                errors = round(n * spec.error_rate)
                counters = PodCounters(
                    version=spec.version, codes={"200": n - errors, "500": errors},
                    latency_buckets=latency_buckets(
                        {bound: round(n * share) for bound, share in spec.latency.items()}),
                    classes={label: round(n * share) for label, share in spec.classes.items()},
                )
                entries.append((t, role, f"{role}-{index}", counters))
    entries.sort(key=lambda entry: entry[0])
    return tape_lines(entries)
