"""The analysis window as a running fold over scrapes, small enough to keep in status.

`observe()` reads a whole tape at once; the operator cannot keep every scrape of a rollout
(and must survive a restart), so it folds each round of scrapes into a `Window`: per pod the
last reading of every counted series, per arm the increase of every series since the window
began. `observe()` is the same fold run over a tape, so the replay and the operator judge
exactly the same numbers.

The rules are those of observations.py: the window starts when both arms have been scraped;
pods seen by then count from their reading at the start; a pod first seen later, and a series
that appears later, count from zero; a counter that drops was reset and all of its new value
is new.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelgate.core.analysis.observations import (
    COUNTED,
    DURATION_BUCKET,
    FEEDBACK,
    MODEL_INFO,
    PREDICTION_VALUE_BUCKET,
    PREDICTIONS,
    REQUESTS,
    ArmObservation,
    Labels,
    Observation,
    PodScrape,
    Role,
    bound,
    histogram,
)

SeriesKey = tuple[str, Labels]


@dataclass(frozen=True)
class Window:
    """What both arms counted since the window began, and each pod's last reading."""

    start: float | None = None
    """Seconds since canary start at which both arms had been scraped; None before that."""
    last: Mapping[tuple[Role, str], Mapping[SeriesKey, float]] = field(default_factory=dict)
    """(role, pod) -> series -> value at the pod's latest scrape."""
    totals: Mapping[Role, Mapping[SeriesKey, float]] = field(default_factory=dict)
    """role -> series -> increase inside the window, summed over the arm's pods."""
    versions: Mapping[Role, frozenset[str]] = field(default_factory=dict)
    """Model versions each arm's pods reported inside the window."""
    pods: Mapping[Role, frozenset[str]] = field(default_factory=dict)
    """Pods of each arm that contributed to the window."""
    scraped_at: float | None = None
    """Time of the latest scrape folded in."""
    roles: frozenset[Role] = frozenset(Role)
    """Arms that must have been scraped for the window to start: both, except when a tape
    holds only one arm."""

    def add(self, t: float, scrapes: Iterable[PodScrape]) -> Window:
        """The window after one round of scrapes taken at (about) time t."""
        batch = list(scrapes)
        last = {key: dict(values) for key, values in self.last.items()}
        totals = {role: defaultdict(float, self.totals.get(role, {})) for role in Role}
        versions = {role: set(self.versions.get(role, ())) for role in Role}
        pods = {role: set(self.pods.get(role, ())) for role in Role}
        start = self.start
        if start is None:
            # Before both arms are seen nothing counts; readings only become baselines.
            for scrape in batch:
                last[(scrape.role, scrape.pod)] = dict(_counted(scrape))
            seen_roles = {role for role, _ in last}
            if seen_roles >= self.roles:
                start = t
                for role, pod in last:
                    pods[role].add(pod)
                for scrape in batch:
                    versions[scrape.role].update(_versions(scrape))
        else:
            for scrape in batch:
                key = (scrape.role, scrape.pod)
                previous = last.get(key, {})  # empty for a pod born inside the window
                current = dict(_counted(scrape))
                for series, value in current.items():
                    before = previous.get(series)
                    if before is None or value < before:
                        totals[scrape.role][series] += value  # new series, or a reset
                    else:
                        totals[scrape.role][series] += value - before
                last[key] = {**previous, **current}
                pods[scrape.role].add(scrape.pod)
                versions[scrape.role].update(_versions(scrape))
        return Window(
            start=start, last=last,
            totals={role: dict(values) for role, values in totals.items() if values},
            versions={role: frozenset(names) for role, names in versions.items() if names},
            pods={role: frozenset(names) for role, names in pods.items() if names},
            scraped_at=t, roles=self.roles,
        )

    def observation(self, at: float) -> Observation:
        """Both arms' activity inside the window, judged at time `at`."""
        feedback: dict[tuple[str, str], float] = defaultdict(float)
        for values in self.totals.values():
            for (name, labels), value in values.items():
                if name == FEEDBACK:
                    label = dict(labels)
                    feedback[(label.get("version", ""), label.get("outcome", ""))] += value

        def arm(role: Role) -> ArmObservation:
            # pods of one arm serve one version; mid-change, all of them are named
            version = ",".join(sorted(self.versions.get(role, ()))) or None
            requests = errors = 0.0
            classes: dict[str, float] = defaultdict(float)
            latency: dict[float, float] = defaultdict(float)
            values: dict[float, float] = defaultdict(float)
            for (name, labels), value in self.totals.get(role, {}).items():
                label = dict(labels)
                if name == REQUESTS:
                    requests += value
                    if label.get("code", "").startswith("5"):
                        errors += value
                elif name == PREDICTIONS:
                    classes[label.get("class", "")] += value
                elif name == DURATION_BUCKET:
                    latency[bound(label.get("le"))] += value
                elif name == PREDICTION_VALUE_BUCKET:
                    values[bound(label.get("le"))] += value
            return ArmObservation(
                version=version, pods=len(self.pods.get(role, ())), requests=requests,
                errors=errors, latency=histogram(latency), classes=dict(classes),
                prediction_values=histogram(values),
                correct=feedback.get((version or "", "correct"), 0.0),
                incorrect=feedback.get((version or "", "incorrect"), 0.0),
            )

        return Observation(t=at, stable=arm(Role.STABLE), canary=arm(Role.CANARY),
                           since=self.start if self.start is not None else at)

    # --- JSON form, for status.analysis.window ---------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe form; series are written once and referred to by index."""
        index: dict[SeriesKey, int] = {}

        def ref(series: SeriesKey) -> int:
            return index.setdefault(series, len(index))

        pods = [{"role": role.value, "pod": pod,
                 "last": [[ref(series), value] for series, value in sorted(values.items())]}
                for (role, pod), values in sorted(self.last.items())]
        totals = [{"role": role.value, "values": [[ref(series), value] for series, value in
                                                  sorted(values.items())]}
                  for role, values in sorted(self.totals.items())]
        # Only lists below the top level: status is written as a JSON merge patch, which
        # replaces lists but merges objects, and a merged window would mix two windows.
        return {
            "start": self.start,
            "scrapedAt": self.scraped_at,
            "series": [[name, [list(label) for label in labels]]
                       for (name, labels), _ in sorted(index.items(), key=lambda kv: kv[1])],
            "pods": pods,
            "totals": totals,
            "versions": [{"role": role.value, "names": sorted(names)}
                         for role, names in sorted(self.versions.items())],
            "members": [{"role": role.value, "names": sorted(names)}
                        for role, names in sorted(self.pods.items())],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Window:
        """Inverse of to_json; raises ValueError (never anything else) on a damaged form."""
        try:
            series: list[SeriesKey] = [
                (str(name), tuple((str(k), str(v)) for k, v in labels))
                for name, labels in data.get("series", [])
            ]
            last = {
                (Role(entry["role"]), str(entry["pod"])):
                    {series[int(i)]: float(value) for i, value in entry["last"]}
                for entry in data.get("pods", [])
            }
            totals = {Role(entry["role"]): {series[int(i)]: float(value)
                                            for i, value in entry["values"]}
                      for entry in data.get("totals", [])}
            versions = {Role(entry["role"]): frozenset(map(str, entry["names"]))
                        for entry in data.get("versions", [])}
            pods = {Role(entry["role"]): frozenset(map(str, entry["names"]))
                    for entry in data.get("members", [])}
            start = data.get("start")
            scraped_at = data.get("scrapedAt")
            return cls(start=None if start is None else float(start), last=last, totals=totals,
                       versions=versions, pods=pods,
                       scraped_at=None if scraped_at is None else float(scraped_at))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"the stored analysis window is damaged: {exc!r}") from exc


def _counted(scrape: PodScrape) -> Iterable[tuple[SeriesKey, float]]:
    for sample in scrape.samples:
        if sample.name in COUNTED and math.isfinite(sample.value):
            yield (sample.name, tuple(kv for kv in sample.labels if kv[0] != "model")), sample.value


def _versions(scrape: PodScrape) -> set[str]:
    found = set()
    for sample in scrape.samples:
        if (sample.name == MODEL_INFO and sample.value > 0) or sample.name == REQUESTS:
            version = sample.label("version")
            if version:
                found.add(version)
    return found


def fold(scrapes: Iterable[PodScrape], at: float) -> Window:
    """Fold every scrape up to time `at`, in time order, one round per distinct time."""
    rounds: dict[float, list[PodScrape]] = defaultdict(list)
    for scrape in scrapes:
        if scrape.t <= at:
            rounds[scrape.t].append(scrape)
    roles = frozenset(scrape.role for batch in rounds.values() for scrape in batch)
    window = Window(roles=roles or frozenset(Role))
    for t in sorted(rounds):
        window = window.add(t, rounds[t])
    return window


def observe(scrapes: Iterable[PodScrape], at: float) -> Observation:
    """Both arms' activity from the start of their window up to time `at` (inclusive)."""
    return fold(scrapes, at).observation(at)
