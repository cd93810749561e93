"""How well does the judge decide? A simulation from known truths (`make bench-analysis`).

Each run simulates one canary for the default maxDuration (30 min, 60 intervals of 30 s):
per-interval counts drawn from known distributions (Poisson arrivals, binomial errors and
feedback, multinomial latency buckets and classes). Two step programs:

- steady: the canary takes a steady R req/s and stable the same (an even split, as
  `setWeight: 50` then an analysis gate);
- steps: the default program, 20% of requests to the canary for one interval, 40% for the
  next, then 60% with the analysis gate; the total rate is R / 0.6, so the canary takes R req/s
  once at 60%. A promotion counts only once the gate is reached (third interval), as in the
  operator; a rollback counts at any step.

R, "canary traffic", is 0, 1, 2, 5, 10, 50 or 100 req/s. Canaries are identical to stable
(A/A) or worse in one metric by 1×, 2× or 4× its default tolerance (plus p99 +25%, a goal of
issue 12). At every interval the same data is judged by three rules:

- modelgate: `modelgate.core.analysis.judge` itself, on cumulative observations, exactly as
  the operator and `modelgate analyze` call it: the default metrics (error rate, p99 latency,
  prediction distribution; accuracy added for accuracy regressions), default tolerances,
  α = 1%, β = 5%, maxDuration 30 min;
- Flagger-style: each interval's canary value against a fixed threshold (stable's true value
  plus the same tolerance), an interval with no canary data counting as failed ("no values
  found"), rollback after 5 failed checks, promotion after 20 intervals (10 min);
- Kayenta-style: from the third interval on, a one-sided Mann-Whitney U test of the canary's
  per-interval values against stable's at 98% confidence, rollback on the first significant
  result, promotion after 20 intervals.

Beside them, "oracle" is a fixed-sample one-sided test that knew the horizon and the truth:
for an identical canary, the test of "worse by the tolerance" at β for the slowest default
metric; for a regression, the test of "no worse" at the regressed metric's share of α. It
reports the chance it decides rightly with all 30 minutes of data, and the time at which that
chance reaches one half (the median of a test run as soon as it could decide). It is a
reference for what any design could reach, not a rule anyone could run.

Observations are built directly as counts (not through exposition text) so the whole table
takes minutes; the text path is covered by the replay tests. Latency is log-normal (median
20 ms, σ 0.5) on modelgate-serve's own buckets; predictions are three classes (50/30/20%).

    python bench/analysis_bench.py [--runs 400] [--regression-runs 100] [--write FILE.md]
"""

from __future__ import annotations

import argparse
import math
import pickle
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu, norm

from modelgate.api import default_metrics
from modelgate.core.analysis import (
    AnalysisDecision,
    ArmObservation,
    Histogram,
    Observation,
    final_decision,
    judge,
)
from modelgate.core.types import (
    DEFAULT_TOLERANCES,
    AnalysisSpec,
    MetricSpec,
    MetricType,
    OnInconclusive,
)
from modelgate_serving.metrics import LATENCY_BUCKETS

INTERVAL = 30.0
TICKS = 60  # 30 minutes, the default maxDuration
FIXED_RULE_HORIZON = 20
FLAGGER_FAILED_CHECKS = 5
ALPHA = 0.01
BETA = 0.05
RATES = (0.0, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0)
BOUNDS = (*LATENCY_BUCKETS, math.inf)  # modelgate-serve's latency buckets
CLASSES = (0.5, 0.3, 0.2)
MULTIPLES = (1, 2, 4)


@dataclass(frozen=True)
class Program:
    """How traffic reaches the two arms, per interval."""

    name: str
    shares: tuple[float, ...]
    """Canary's share of requests in intervals 1, 2, ... (the last repeats)."""
    gate: int
    """First interval at which a promotion counts (the analysis gate)."""

    def share(self, tick: int) -> float:
        return self.shares[min(tick, len(self.shares)) - 1]

    def rates(self, canary_rate: float) -> tuple[np.ndarray, np.ndarray]:
        """Expected (stable, canary) requests per interval, for a canary rate at full
        weight."""
        total = canary_rate / self.shares[-1]
        shares = np.array([self.share(t) for t in range(1, TICKS + 1)])
        return total * INTERVAL * (1 - shares), total * INTERVAL * shares


STEADY = Program("steady", (0.5,), gate=1)
STEPS = Program("steps", (0.2, 0.4, 0.6), gate=3)
PROGRAMS = (STEADY, STEPS)


@dataclass(frozen=True)
class Truth:
    """One arm's true behaviour."""

    error_rate: float = 0.005
    latency_median: float = 0.02
    latency_sigma: float = 0.5
    classes: tuple[float, ...] = CLASSES
    accuracy: float = 0.92
    label_coverage: float = 0.2

    def bucket_probabilities(self) -> np.ndarray:
        cdf = [norm.cdf((math.log(b) - math.log(self.latency_median)) / self.latency_sigma)
               if math.isfinite(b) else 1.0 for b in BOUNDS]
        return np.diff(np.concatenate([[0.0], cdf]))

    def p99(self) -> float:
        return self.latency_median * math.exp(self.latency_sigma * norm.ppf(0.99))

    def share_above(self, seconds: float) -> float:
        return float(norm.sf((math.log(seconds) - math.log(self.latency_median))
                             / self.latency_sigma))


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: MetricType | None
    """The regressed metric; None for an identical canary."""
    multiple: float
    """How many tolerances worse (0 for identical)."""
    canary: Truth
    metrics: tuple[MetricSpec, ...]
    stable: Truth = Truth()

    @property
    def identical(self) -> bool:
        return self.kind is None


# --- simulation -----------------------------------------------------------------------------

@dataclass
class ArmCounts:
    """Counts of one arm for every run and interval, per interval and cumulative."""

    requests: np.ndarray  # (runs, ticks)
    errors: np.ndarray
    latency: np.ndarray  # (runs, ticks, buckets)
    classes: np.ndarray  # (runs, ticks, classes)
    correct: np.ndarray
    incorrect: np.ndarray
    cumulative: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("requests", "errors", "latency", "classes", "correct", "incorrect"):
            self.cumulative[name] = np.cumsum(getattr(self, name), axis=1)
        self.cumulative["latency"] = np.cumsum(self.cumulative["latency"], axis=2)


def simulate(truth: Truth, expected: np.ndarray, runs: int,
             rng: np.random.Generator) -> ArmCounts:
    requests = rng.poisson(np.broadcast_to(expected, (runs, len(expected))))
    errors = rng.binomial(requests, truth.error_rate)
    latency = rng.multinomial(requests, truth.bucket_probabilities())
    classes = rng.multinomial(requests, truth.classes)
    labelled = rng.binomial(requests, truth.label_coverage)
    correct = rng.binomial(labelled, truth.accuracy)
    return ArmCounts(requests, errors, latency, classes, correct, labelled - correct)


def cumulative_arm(counts: ArmCounts, run: int, tick: int) -> ArmObservation:
    """What the arm did from the start up to the end of interval `tick` (1-based)."""
    index = tick - 1
    cumulative = counts.cumulative
    classes = cumulative["classes"][run, index]
    return ArmObservation(
        requests=float(cumulative["requests"][run, index]),
        errors=float(cumulative["errors"][run, index]),
        latency=Histogram(BOUNDS, tuple(cumulative["latency"][run, index].tolist())),
        classes={str(i): float(c) for i, c in enumerate(classes)},
        correct=float(cumulative["correct"][run, index]),
        incorrect=float(cumulative["incorrect"][run, index]),
    )


# --- per-interval values for the fixed-threshold and Mann-Whitney rules ---------------------

def interval_values(metric: MetricType, counts: ArmCounts) -> np.ndarray:
    """The metric over each interval alone, (runs, ticks); NaN when it has no data."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n = counts.requests.astype(float)
        if metric is MetricType.ERROR_RATE:
            return np.where(n > 0, counts.errors / n, np.nan)
        if metric is MetricType.LATENCY:
            return _quantiles(counts.latency, 0.99)
        if metric is MetricType.PREDICTION_DISTRIBUTION:
            return np.where(n > 0, counts.classes[..., 0] / n, np.nan)
        labelled = (counts.correct + counts.incorrect).astype(float)
        return np.where(labelled > 0, counts.correct / labelled, np.nan)


def _quantiles(buckets: np.ndarray, quantile: float) -> np.ndarray:
    """histogram_quantile of every (run, tick), vectorised; NaN when empty or in +Inf."""
    cumulative = np.cumsum(buckets, axis=-1).astype(float)
    total = cumulative[..., -1]
    rank = quantile * total
    index = np.argmax(cumulative >= rank[..., None], axis=-1)
    edges = np.array(BOUNDS)
    upper = edges[index]
    lower = np.where(index > 0, edges[np.maximum(index - 1, 0)], 0.0)
    below = np.where(index > 0, np.take_along_axis(
        cumulative, np.maximum(index - 1, 0)[..., None], axis=-1)[..., 0], 0.0)
    at = np.take_along_axis(cumulative, index[..., None], axis=-1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        value = lower + (upper - lower) * (rank - below) / (at - below)
    return np.where((total > 0) & np.isfinite(upper), value, np.nan)


def psi(canary: Sequence[float], stable: Sequence[float]) -> float:
    return float(sum((c - s) * math.log(max(c, 1e-4) / max(s, 1e-4))
                     for c, s in zip(canary, stable, strict=True)))


def flagger_failures(scenario: Scenario, canary: ArmCounts) -> np.ndarray:
    """(runs, ticks) True where the interval's check fails."""
    failed = canary.requests == 0  # Flagger: "no values found" counts as a failed check
    thresholds = flagger_thresholds(scenario.metrics, scenario.stable)
    for spec in scenario.metrics:
        threshold = thresholds[spec.name]
        if spec.type is MetricType.PREDICTION_DISTRIBUTION:
            n = np.maximum(canary.requests, 1)[..., None]
            shares = np.maximum(canary.classes / n, 1e-4)
            stable = np.array(scenario.stable.classes)
            observed = ((shares - stable) * np.log(shares / stable)).sum(axis=-1)
            failed |= observed > threshold
            continue
        values = interval_values(spec.type, canary)
        with np.errstate(invalid="ignore"):
            worse = values < threshold if spec.type is MetricType.ACCURACY \
                else values > threshold
        failed |= np.isnan(values) | worse
    return failed[:, :FIXED_RULE_HORIZON]


def kayenta_failures(scenario: Scenario, stable: ArmCounts, canary: ArmCounts) -> np.ndarray:
    """(runs, ticks) True where the Mann-Whitney test at that interval is significant.
    Runs with an interval without data are not significant at that look (NaN p-value)."""
    runs = canary.requests.shape[0]
    failed = np.zeros((runs, FIXED_RULE_HORIZON), dtype=bool)
    for spec in scenario.metrics:
        canary_values = interval_values(spec.type, canary)
        stable_values = interval_values(spec.type, stable)
        alternative = {MetricType.PREDICTION_DISTRIBUTION: "two-sided",
                       MetricType.ACCURACY: "less"}.get(spec.type, "greater")
        for tick in range(3, FIXED_RULE_HORIZON + 1):
            x, y = canary_values[:, :tick], stable_values[:, :tick]
            constant = np.all(np.concatenate([x, y], axis=1) == x[:, :1], axis=1)
            p_value = mannwhitneyu(x, y, alternative=alternative, axis=1,
                                   nan_policy="propagate").pvalue
            failed[:, tick - 1] |= (np.nan_to_num(p_value, nan=1.0) < 0.02) & ~constant
    return failed


def fixed_rule(failed: np.ndarray, failures_allowed: int) -> list[Outcome]:
    """Rollback at the interval where failures first exceed the allowance, else promote at
    the horizon."""
    count = np.cumsum(failed, axis=1)
    over = count > failures_allowed
    outcomes = []
    for row in over:
        hits = np.flatnonzero(row)
        outcomes.append(Outcome("rollback", int(hits[0]) + 1) if hits.size
                        else Outcome("promote", FIXED_RULE_HORIZON))
    return outcomes


def flagger_thresholds(metrics: Sequence[MetricSpec], stable: Truth) -> dict[str, float]:
    """Fixed thresholds a user would set from the stable's known behaviour and our
    tolerances."""
    thresholds = {}
    for spec in metrics:
        tolerance = spec.tolerance or 0.0
        if spec.type is MetricType.ERROR_RATE:
            thresholds[spec.name] = stable.error_rate + tolerance
        elif spec.type is MetricType.LATENCY:
            thresholds[spec.name] = stable.p99() * (1 + tolerance)
        elif spec.type is MetricType.ACCURACY:
            thresholds[spec.name] = stable.accuracy - tolerance
        else:
            thresholds[spec.name] = tolerance
    return thresholds


# --- the oracle: a fixed-sample test that knew the horizon and the truth --------------------

@dataclass(frozen=True)
class Oracle:
    power: float
    """Chance of the right decision with all the data."""
    median_tick: int | None
    """First interval at which that chance reaches one half; None if never within 30 min."""


def oracle(scenario: Scenario, stable_n: np.ndarray, canary_n: np.ndarray) -> Oracle | None:
    """stable_n, canary_n: expected cumulative requests per interval."""
    if canary_n[-1] <= 0:
        return None
    compared = len(scenario.metrics)
    if scenario.identical:
        # to promote: "worse by the tolerance" rejected at β; the slowest default metric
        gaps = [_gap(scenario, spec, promote=True) for spec in scenario.metrics
                if spec.type in (MetricType.ERROR_RATE, MetricType.LATENCY)]
        critical = float(norm.isf(BETA))
    else:
        spec = next(s for s in scenario.metrics if s.type is scenario.kind)
        gaps = [_gap(scenario, spec, promote=False)]
        critical = float(norm.isf(ALPHA / compared))
    if not gaps:
        return None
    z = np.min([gap / np.sqrt(variance(stable_n, canary_n)) for gap, variance in gaps], axis=0)
    power = float(norm.cdf(z[-1] - critical))
    reached = np.flatnonzero(z >= critical)
    return Oracle(power, int(reached[0]) + 1 if reached.size else None)


Variance = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _gap(scenario: Scenario, spec: MetricSpec, *, promote: bool) -> tuple[float, Variance]:
    """The distance from the tested hypothesis, and the estimate's variance per (n_s, n_c)."""
    stable, canary = scenario.stable, scenario.canary
    tolerance = spec.tolerance or 0.0
    if spec.type is MetricType.ERROR_RATE:
        p_s, p_c = stable.error_rate, canary.error_rate
        gap = tolerance - (p_c - p_s) if promote else p_c - p_s
        return gap, lambda ns, nc: p_s * (1 - p_s) / ns + p_c * (1 - p_c) / nc
    if spec.type is MetricType.ACCURACY:
        a_s, a_c = stable.accuracy, canary.accuracy
        k_s, k_c = stable.label_coverage, canary.label_coverage
        return (a_s - a_c, lambda ns, nc: a_s * (1 - a_s) / (ns * k_s)
                + a_c * (1 - a_c) / (nc * k_c))
    if spec.type is MetricType.LATENCY:
        threshold = stable.p99() * (1 + tolerance if promote else 1.0)
        share = canary.share_above(threshold)
        gap = 0.01 - share if promote else share - 0.01
        return gap, lambda ns, nc: share * (1 - share) / nc + 0.01 * 0.99 / ns
    # prediction distribution: delta-method variance of the PSI estimate
    c, s = np.array(canary.classes), np.array(stable.classes)
    grad_c = np.log(c / s) + 1 - s / c
    grad_s = -np.log(c / s) + 1 - c / s
    cov_c, cov_s = np.diag(c) - np.outer(c, c), np.diag(s) - np.outer(s, s)
    var_c, var_s = float(grad_c @ cov_c @ grad_c), float(grad_s @ cov_s @ grad_s)
    return psi(list(c), list(s)), lambda ns, nc: var_c / nc + var_s / ns


# --- running a scenario ---------------------------------------------------------------------

@dataclass
class Outcome:
    decision: str  # "rollback", "promote" or "none"
    tick: int | None


@dataclass
class Result:
    scenario: Scenario
    program: Program
    rate: float
    outcomes: dict[str, list[Outcome]]
    oracle: Oracle | None
    seconds: float
    reasons: list[str] = field(default_factory=list)
    """modelgate's final reasons, for the no-traffic rows."""


def run_scenario(scenario: Scenario, program: Program, rate: float, runs: int,
                 seed: int, *, policy: OnInconclusive = OnInconclusive.PAUSE) -> Result:
    rng = np.random.default_rng(seed)
    stable_rate, canary_rate = program.rates(rate)
    if rate == 0:
        stable_rate = STEADY.rates(10.0)[0]  # stable keeps its users
    stable = simulate(scenario.stable, stable_rate, runs, rng)
    canary = simulate(scenario.canary, canary_rate, runs, rng)
    spec = AnalysisSpec(metrics=scenario.metrics, alpha=ALPHA, beta=BETA,
                        max_duration_seconds=TICKS * INTERVAL, on_inconclusive=policy)
    started = time.perf_counter()
    outcomes: dict[str, list[Outcome]] = {"modelgate": []}
    reasons = []
    for run in range(runs):
        outcome, reason = _modelgate(spec, program, stable, canary, run)
        outcomes["modelgate"].append(outcome)
        reasons.append(reason)
    outcomes["flagger"] = fixed_rule(flagger_failures(scenario, canary),
                                     FLAGGER_FAILED_CHECKS - 1)
    outcomes["kayenta"] = fixed_rule(kayenta_failures(scenario, stable, canary), 0)
    expected = oracle(scenario, np.cumsum(stable_rate), np.cumsum(canary_rate))
    return Result(scenario, program, rate, outcomes, expected, time.perf_counter() - started,
                  reasons)


def _modelgate(spec: AnalysisSpec, program: Program, stable: ArmCounts, canary: ArmCounts,
               run: int) -> tuple[Outcome, str]:
    record = None
    passed: tuple[str, ...] = ()
    for tick in range(1, TICKS + 1):
        observation = Observation(tick * INTERVAL, cumulative_arm(stable, run, tick),
                                  cumulative_arm(canary, run, tick))
        last = tick == TICKS
        record = judge(spec, observation, tick * INTERVAL, explain=last, passed=passed)
        passed = record.passed
        decision = final_decision(record, spec.on_inconclusive)
        if decision is AnalysisDecision.ROLLBACK:
            return Outcome("rollback", tick), record.reason
        if decision is AnalysisDecision.PROMOTE and (tick >= program.gate
                                             or record.decision is not AnalysisDecision.PROMOTE):
            return Outcome("promote", tick), record.reason
        if record.decision is AnalysisDecision.INCONCLUSIVE:
            return Outcome("none", tick), record.reason
    assert record is not None
    return Outcome("none", None), record.reason


# --- scenarios ------------------------------------------------------------------------------

def shifted_classes(target_psi: float) -> tuple[float, ...]:
    """Move mass from the first class to the others until PSI reaches target_psi."""
    low, high = 0.0, 0.49
    for _ in range(60):
        middle = (low + high) / 2
        shifted = (CLASSES[0] - middle, CLASSES[1] + middle / 2, CLASSES[2] + middle / 2)
        if psi(shifted, CLASSES) < target_psi:
            low = middle
        else:
            high = middle
    return (CLASSES[0] - low, CLASSES[1] + low / 2, CLASSES[2] + low / 2)


def scenarios() -> list[Scenario]:
    defaults = default_metrics(100)
    accuracy = MetricSpec(name="accuracy", type=MetricType.ACCURACY,
                          tolerance=DEFAULT_TOLERANCES[MetricType.ACCURACY], min_samples=100)
    base = Truth()
    result = [Scenario("identical", None, 0, base, defaults)]
    for kind in (MetricType.ERROR_RATE, MetricType.LATENCY, MetricType.PREDICTION_DISTRIBUTION,
                 MetricType.ACCURACY):
        tolerance = DEFAULT_TOLERANCES[kind]
        multiples: list[float] = list(MULTIPLES)
        if kind is MetricType.LATENCY:
            multiples.insert(2, 2.5)  # p99 +25%, a goal of its own
        for multiple in multiples:
            effect = tolerance * multiple
            if kind is MetricType.ERROR_RATE:
                canary = Truth(error_rate=base.error_rate + effect)
                name = f"errors {base.error_rate:.2%} → {canary.error_rate:.2%}"
            elif kind is MetricType.LATENCY:
                canary = Truth(latency_median=base.latency_median * (1 + effect))
                name = f"p99 +{effect:.0%}"
            elif kind is MetricType.PREDICTION_DISTRIBUTION:
                canary = Truth(classes=shifted_classes(effect))
                name = f"predictions, PSI {effect:g}"
            else:
                canary = Truth(accuracy=base.accuracy - effect)
                name = f"accuracy {base.accuracy:.0%} → {canary.accuracy:.0%}"
            metrics = (*defaults, accuracy) if kind is MetricType.ACCURACY else defaults
            result.append(Scenario(f"{name} ({multiple:g}× tolerance)", kind, multiple,
                                   canary, metrics))
    return result


# --- reporting ------------------------------------------------------------------------------

def _share(outcomes: list[Outcome], decision: str) -> float:
    return sum(o.decision == decision for o in outcomes) / len(outcomes)


def _times(outcomes: list[Outcome], decision: str) -> tuple[float, float] | None:
    ticks = [o.tick for o in outcomes if o.decision == decision and o.tick is not None]
    if not ticks:
        return None
    median, p90 = np.percentile(np.array(ticks) * INTERVAL, [50, 90])
    return float(median), float(p90)


def _minutes(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 60:.1f}m"


def _rate_label(rate: float) -> str:
    return f"{rate:g}"


def _row(result: Result) -> str:
    ours = result.outcomes["modelgate"]
    promoted = _times(ours, "promote")
    rolled = _times(ours, "rollback")
    identical = result.scenario.identical
    bad = result.scenario.multiple >= 1
    false_promotions = f"{_share(ours, 'promote'):.1%}" if bad else "—"
    false_rollbacks = f"{_share(ours, 'rollback'):.1%}" if identical else "—"
    oracle_text = "—"
    if result.oracle is not None:
        median = result.oracle.median_tick
        oracle_text = (f"{result.oracle.power:.0%}, "
                       f"{_minutes(median * INTERVAL) if median else '>30m'}")
    others = []
    for rule in ("flagger", "kayenta"):
        share = _share(result.outcomes[rule], "rollback")
        others.append(f"{share:.0%}")
    return (f"| {result.scenario.name} | {_rate_label(result.rate)} | {len(ours)} | "
            f"{_share(ours, 'promote'):.0%} | {_minutes(promoted[0] if promoted else None)} / "
            f"{_minutes(promoted[1] if promoted else None)} | {_share(ours, 'rollback'):.0%} | "
            f"{_minutes(rolled[0] if rolled else None)} | {_share(ours, 'none'):.0%} | "
            f"{false_promotions} | {false_rollbacks} | {oracle_text} | {others[0]} | "
            f"{others[1]} |")


HEADER = [
    "| canary | req/s | runs | promoted | promote time (median / p90) | rolled back | "
    "rollback time (median) | inconclusive | false promotions | false rollbacks | "
    "oracle (right by 30m, median time) | Flagger-style rolled back | "
    "Kayenta-style rolled back |",
    "| --- | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: |",
]


def table(results: list[Result]) -> str:
    lines: list[str] = []
    for program in PROGRAMS:
        title = ("steady: the canary takes R req/s, stable as much" if program == STEADY else
                 "steps: 20% / 40% / 60% of R / 0.6 req/s, the gate at 60%")
        lines += ["", f"### Program {title}", "", *HEADER]
        rows = [r for r in results if r.program == program]
        rows.sort(key=lambda r: (scenarios_order(r.scenario), r.rate))
        lines += [_row(r) for r in rows]
    return "\n".join(lines).strip("\n")


def scenarios_order(scenario: Scenario) -> int:
    return [s.name for s in scenarios()].index(scenario.name)


@dataclass(frozen=True)
class Goal:
    text: str
    measured: str
    met: bool


def goals(results: list[Result]) -> list[Goal]:
    def find(name_start: str, rate: float, program: Program = STEADY) -> Result:
        return next(r for r in results if r.scenario.name.startswith(name_start)
                    and r.rate == rate and r.program == program)

    found: list[Goal] = []
    for rate, share, median in ((10.0, 0.9, 15.0), (5.0, 0.7, None), (50.0, None, 5.0)):
        result = find("identical", rate)
        ours = result.outcomes["modelgate"]
        promoted = _share(ours, "promote")
        times = _times(ours, "promote")
        if share is not None:
            found.append(Goal(f"identical, steady {rate:g} req/s: promoted in ≥ {share:.0%}",
                              f"{promoted:.1%}", promoted >= share))
        if median is not None:
            value = times[0] / 60 if times else math.inf
            found.append(Goal(f"identical, steady {rate:g} req/s: median time to promote ≤ "
                              f"{median:g} min", f"{value:.1f} min", value <= median))
    worst = max(((_share(r.outcomes["modelgate"], "rollback"), r) for r in results
                 if r.scenario.identical and r.rate > 0), key=lambda pair: pair[0])
    found.append(Goal(f"identical: false rollbacks ≤ α = {ALPHA:.0%} at every rate, both "
                      "programs", f"at most {worst[0]:.1%} ({worst[1].program.name}, "
                      f"{worst[1].rate:g} req/s)", worst[0] <= ALPHA))
    doubled = [r for r in results if r.scenario.multiple == 2 and r.rate > 0]
    top = max(((_share(r.outcomes["modelgate"], "promote"), r.scenario.name, r)
               for r in doubled), key=lambda triple: triple[0])
    measured = (f"at most {top[0]:.1%} ({top[1]}, {top[2].program.name}, {top[2].rate:g} "
                "req/s)" if top[0] > 0 else f"none in {len(doubled)} rows")
    found.append(Goal(f"2× tolerance: false promotions ≤ β = {BETA:.0%}, every metric, rate "
                      "and program", measured, top[0] <= BETA))
    for name, share in (("errors 0.50% → 1.00%", 0.6), ("p99 +25%", 0.8)):
        result = find(name, 10.0)
        ours = result.outcomes["modelgate"]
        rolled, promoted = _share(ours, "rollback"), _share(ours, "promote")
        found.append(Goal(f"{name}, steady 10 req/s: rolled back in ≥ {share:.0%}, never "
                          "promoted", f"{rolled:.1%} rolled back, {promoted:.1%} promoted",
                          rolled >= share and promoted == 0))
    starved = [r for r in results if r.rate == 0]
    rolled = max(_share(r.outcomes["modelgate"], "rollback") for r in starved)
    says = all("no requests" in reason for r in starved for reason in r.reasons)
    found.append(Goal("no traffic to the canary (onInconclusive: rollback): never rolled back, "
                      "and the record says why", f"{rolled:.0%} rolled back; reason names it: "
                      f"{'yes' if says else 'no'}", rolled == 0 and says))
    return found


def goals_table(found: list[Goal]) -> str:
    lines = ["| goal (issue 12) | measured | met |", "| --- | --- | :---: |"]
    lines += [f"| {g.text} | {g.measured} | {'yes' if g.met else 'NO'} |" for g in found]
    return "\n".join(lines)


def _task(args: tuple[Scenario, Program, float, int, int, OnInconclusive]) -> Result:
    scenario, program, rate, count, seed, policy = args
    return run_scenario(scenario, program, rate, count, seed, policy=policy)


def run_all(runs: int, regression_runs: int, seed: int, jobs: int = 1,
            rates: Sequence[float] = RATES) -> list[Result]:
    """Every row; `jobs` processes share them (the judge is single-threaded Python)."""
    tasks = []
    index = 0
    for program in PROGRAMS:
        for scenario in scenarios():
            for rate in rates:
                index += 1
                if rate == 0 and not scenario.identical:
                    continue
                count = runs if scenario.identical else regression_runs
                policy = OnInconclusive.ROLLBACK if rate == 0 else OnInconclusive.PAUSE
                tasks.append((scenario, program, rate, count, seed + index, policy))
    # the slowest rows (low traffic runs all 60 intervals) first, so the pool ends together
    tasks.sort(key=lambda task: (task[2] == 0, task[2], not task[0].identical))
    results = []
    with ProcessPoolExecutor(max_workers=max(jobs, 1)) as pool:
        for result in pool.map(_task, tasks):
            results.append(result)
            print(f"  {result.program.name} {result.scenario.name} {result.rate:g} req/s: "
                  f"{len(result.outcomes['modelgate'])} runs in {result.seconds:.1f}s",
                  file=sys.stderr, flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400, help="runs per identical-canary row")
    parser.add_argument("--regression-runs", type=int, default=100,
                        help="runs per regression row")
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--save", type=Path, help="keep the raw results in this pickle file")
    parser.add_argument("--load", type=Path,
                        help="report results kept by --save instead of simulating")
    parser.add_argument("--write", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.load:
        results, elapsed = pickle.loads(args.load.read_bytes())
        started -= elapsed
    else:
        results = run_all(args.runs, args.regression_runs, args.seed, args.jobs)
    if args.save:
        args.save.write_bytes(pickle.dumps((results, time.perf_counter() - started)))
    found = goals(results)
    text = goals_table(found) + "\n\n" + table(results)
    print(text)
    elapsed = time.perf_counter() - started
    print(f"{len(results)} rows in {elapsed / 60:.1f} min", file=sys.stderr)
    if args.write:
        machine = (f"{platform.machine()}, {platform.python_implementation()} "
                   f"{platform.python_version()}, seed {args.seed}, {elapsed / 60:.1f} min")
        args.write.write_text(_document(text, machine), encoding="utf-8")
    return 0 if all(goal.met for goal in found) else 1


def _document(text: str, machine: str) -> str:
    template = (Path(__file__).with_name("analysis_bench.md")).read_text(encoding="utf-8")
    return template.replace("{{table}}", text).replace("{{machine}}", machine)


if __name__ == "__main__":
    sys.exit(main())
