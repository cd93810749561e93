"""How well does the judge decide? A simulation from known truths (`make bench-analysis`).

Each run simulates one canary: traffic split by the default step program (20% of requests to
the canary for one 30 s interval, 40% for the next, then 60%), per-interval counts drawn from
known distributions (Poisson arrivals, binomial errors and feedback, multinomial latency
buckets and classes). At every interval the same data is judged by three rules:

- modelgate: `modelgate.core.analysis.judge` itself, on cumulative observations, exactly as the
  operator and `modelgate analyze` call it (maxDuration 30 min, default tolerances, α = 1%);
- Flagger-style: each interval's canary value against a fixed threshold (stable's true value
  plus the same tolerance), an interval with no canary data counting as failed ("no values
  found"), rollback after 5 failed checks, promotion after 20 intervals (10 min);
- Kayenta-style: from the third interval on, a one-sided Mann-Whitney U test of the canary's
  per-interval values against stable's at 98% confidence (intervals without data removed),
  rollback on the first significant result, promotion after 20 intervals.

Beside them, "oracle" is a fixed-sample test that knew the true effect in advance: the first
interval at which a one-sided test at the same α has 80% power, from expected counts.

Observations are built directly as counts (not through exposition text) so a thousand runs
take seconds; the text path is covered by the replay tests.

    python bench/analysis_bench.py [--runs 1000] [--regression-runs 200] [--write FILE.md]
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu, norm

from modelgate.api import default_metrics
from modelgate.core.analysis import AnalysisDecision, ArmObservation, Histogram, Observation, judge
from modelgate.core.analysis.checks import exceedance, histogram_quantile
from modelgate.core.types import (
    DEFAULT_TOLERANCES,
    AnalysisSpec,
    MetricSpec,
    MetricType,
)
from modelgate_serving.metrics import LATENCY_BUCKETS

INTERVAL = 30.0
TICKS = 60  # 30 minutes, the default maxDuration
FIXED_RULE_HORIZON = 20
FLAGGER_FAILED_CHECKS = 5
ALPHA = 0.01
BOUNDS = (*LATENCY_BUCKETS, math.inf)  # modelgate-serve's latency buckets
CLASSES = (0.5, 0.3, 0.2)


def canary_share(tick: int) -> float:
    """Canary's share of traffic during interval `tick` (1-based) of the default program."""
    return {1: 0.2, 2: 0.4}.get(tick, 0.6)


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


@dataclass(frozen=True)
class Scenario:
    name: str
    stable: Truth
    canary: Truth
    rate: float
    """Requests per second, both arms together."""
    metrics: tuple[MetricSpec, ...]
    regression: bool
    runs: int = 0
    notes: str = ""
    flagger_thresholds: dict[str, float] = field(default_factory=dict)


# --- simulation -----------------------------------------------------------------------------

@dataclass
class ArmCounts:
    """Per-interval counts of one arm for every run: arrays shaped (runs, ticks[, k])."""

    requests: np.ndarray
    errors: np.ndarray
    latency: np.ndarray
    classes: np.ndarray
    correct: np.ndarray
    incorrect: np.ndarray


def simulate(truth: Truth, rate_per_tick: np.ndarray, runs: int,
             rng: np.random.Generator) -> ArmCounts:
    requests = rng.poisson(np.broadcast_to(rate_per_tick, (runs, len(rate_per_tick))))
    errors = rng.binomial(requests, truth.error_rate)
    latency = rng.multinomial(requests, truth.bucket_probabilities())
    classes = rng.multinomial(requests, truth.classes)
    labelled = rng.binomial(requests, truth.label_coverage)
    correct = rng.binomial(labelled, truth.accuracy)
    return ArmCounts(requests, errors, latency, classes, correct, labelled - correct)


def cumulative_arm(counts: ArmCounts, run: int, tick: int) -> ArmObservation:
    """What the arm did from the start up to the end of interval `tick` (1-based)."""
    upto = slice(0, tick)
    buckets = counts.latency[run, upto].sum(axis=0)
    classes = counts.classes[run, upto].sum(axis=0)
    return ArmObservation(
        requests=float(counts.requests[run, upto].sum()),
        errors=float(counts.errors[run, upto].sum()),
        latency=Histogram(BOUNDS, tuple(float(c) for c in np.cumsum(buckets))),
        classes={str(i): float(c) for i, c in enumerate(classes)},
        correct=float(counts.correct[run, upto].sum()),
        incorrect=float(counts.incorrect[run, upto].sum()),
    )


# --- per-interval values for the fixed-threshold and Mann-Whitney rules ---------------------

def interval_value(metric: MetricType, counts: ArmCounts, run: int, tick: int) -> float:
    """The metric over one interval alone (NaN when the interval has no data)."""
    index = tick - 1
    n = counts.requests[run, index]
    if metric is MetricType.ERROR_RATE:
        return counts.errors[run, index] / n if n else math.nan
    if metric is MetricType.LATENCY:
        histogram = Histogram(BOUNDS, tuple(float(c) for c in np.cumsum(
            counts.latency[run, index])))
        value = histogram_quantile(histogram, 0.99)
        return math.nan if value is None else value
    if metric is MetricType.PREDICTION_DISTRIBUTION:
        return counts.classes[run, index, 0] / n if n else math.nan
    labelled = counts.correct[run, index] + counts.incorrect[run, index]
    return counts.correct[run, index] / labelled if labelled else math.nan


def psi(canary: Sequence[float], stable: Sequence[float]) -> float:
    return float(sum((c - s) * math.log(max(c, 1e-4) / max(s, 1e-4))
                     for c, s in zip(canary, stable, strict=True)))


def flagger_check_fails(scenario: Scenario, canary: ArmCounts, run: int, tick: int) -> bool:
    index = tick - 1
    if canary.requests[run, index] == 0:
        return True  # Flagger: "no values found" counts as a failed check
    for metric in scenario.metrics:
        threshold = scenario.flagger_thresholds[metric.name]
        if metric.type is MetricType.PREDICTION_DISTRIBUTION:
            n = canary.requests[run, index]
            observed = psi(list(canary.classes[run, index] / n), list(scenario.stable.classes))
            if observed > threshold:
                return True
            continue
        value = interval_value(metric.type, canary, run, tick)
        if math.isnan(value):
            return True
        worse = value < threshold if metric.type is MetricType.ACCURACY else value > threshold
        if worse:
            return True
    return False


def kayenta_check_fails(scenario: Scenario, stable: ArmCounts, canary: ArmCounts, run: int,
                        tick: int) -> bool:
    if tick < 3:
        return False
    for metric in scenario.metrics:
        values = [[interval_value(metric.type, arm, run, t) for t in range(1, tick + 1)]
                  for arm in (canary, stable)]
        canary_values, stable_values = ([v for v in vs if not math.isnan(v)] for vs in values)
        if len(canary_values) < 3 or len(stable_values) < 3:
            continue
        if metric.type is MetricType.PREDICTION_DISTRIBUTION:
            alternative = "two-sided"
        elif metric.type is MetricType.ACCURACY:
            alternative = "less"
        else:
            alternative = "greater"
        if len(set(canary_values) | set(stable_values)) == 1:
            continue
        p_value = mannwhitneyu(canary_values, stable_values, alternative=alternative).pvalue
        if p_value < 0.02:
            return True
    return False


# --- the oracle: a fixed-sample test that knew the effect -----------------------------------

def oracle_tick(scenario: Scenario, stable_rate: np.ndarray, canary_rate: np.ndarray,
                alpha: float) -> int | None:
    """First interval at which a one-sided fixed-sample test at `alpha` with 80% power, knowing
    the true effect, could decide; None if not within the analysis."""
    z = norm.ppf(1 - alpha) + norm.ppf(0.8)
    metric = scenario.metrics[0]
    gap, variance = _oracle_gap_and_variance(scenario, metric)
    if gap is None or gap <= 0:
        return None
    n_stable, n_canary = np.cumsum(stable_rate), np.cumsum(canary_rate)
    for tick in range(1, TICKS + 1):
        if z * math.sqrt(variance(n_stable[tick - 1], n_canary[tick - 1])) <= gap:
            return tick
    return None


def _oracle_gap_and_variance(scenario: Scenario, metric: MetricSpec) -> tuple[
        float | None, Callable[[float, float], float]]:
    stable, canary = scenario.stable, scenario.canary
    tolerance = metric.tolerance or 0.0
    if metric.type is MetricType.ERROR_RATE:
        p_s, p_c = stable.error_rate, canary.error_rate
        return (p_c - p_s - tolerance,
                lambda ns, nc: p_s * (1 - p_s) / ns + p_c * (1 - p_c) / nc)
    if metric.type is MetricType.ACCURACY:
        a_s, a_c = stable.accuracy, canary.accuracy
        k_s, k_c = stable.label_coverage, canary.label_coverage
        return (a_s - a_c - tolerance,
                lambda ns, nc: a_s * (1 - a_s) / (ns * k_s) + a_c * (1 - a_c) / (nc * k_c))
    if metric.type is MetricType.LATENCY:
        big = 1e9
        stable_hist = Histogram(BOUNDS, tuple(np.cumsum(stable.bucket_probabilities() * big)))
        canary_hist = Histogram(BOUNDS, tuple(np.cumsum(canary.bucket_probabilities() * big)))
        stable_q = histogram_quantile(stable_hist, 0.99)
        assert stable_q is not None
        share = exceedance(canary_hist, stable_q * (1 + tolerance))
        return (share - 0.01,
                lambda ns, nc: share * (1 - share) / nc + 0.99 * 0.01 / ns)
    # prediction distribution: delta-method variance of the PSI estimate
    c, s = np.array(canary.classes), np.array(stable.classes)
    grad_c = np.log(c / s) + 1 - s / c
    grad_s = -np.log(c / s) + 1 - c / s
    cov_c, cov_s = np.diag(c) - np.outer(c, c), np.diag(s) - np.outer(s, s)
    var_c, var_s = float(grad_c @ cov_c @ grad_c), float(grad_s @ cov_s @ grad_s)
    return psi(list(c), list(s)) - tolerance, lambda ns, nc: var_c / nc + var_s / ns


# --- running a scenario ---------------------------------------------------------------------

@dataclass
class Outcome:
    decision: str  # "rollback", "promote" or "none"
    tick: int | None


@dataclass
class Result:
    scenario: Scenario
    outcomes: dict[str, list[Outcome]]
    oracle: int | None
    seconds: float


def run_scenario(scenario: Scenario, runs: int, seed: int) -> Result:
    rng = np.random.default_rng(seed)
    ticks = np.arange(1, TICKS + 1)
    shares = np.array([canary_share(t) for t in ticks])
    canary_rate = scenario.rate * INTERVAL * shares
    stable_rate = scenario.rate * INTERVAL * (1 - shares)
    stable = simulate(scenario.stable, stable_rate, runs, rng)
    canary = simulate(scenario.canary, canary_rate, runs, rng)
    spec = AnalysisSpec(metrics=scenario.metrics, alpha=ALPHA,
                        max_duration_seconds=TICKS * INTERVAL)
    started = time.perf_counter()
    outcomes: dict[str, list[Outcome]] = {"modelgate": [], "flagger": [], "kayenta": []}
    for run in range(runs):
        outcomes["modelgate"].append(_modelgate(spec, stable, canary, run))
        outcomes["flagger"].append(_fixed_rule(
            lambda tick, run=run: flagger_check_fails(scenario, canary, run, tick),
            failures_allowed=FLAGGER_FAILED_CHECKS - 1))
        outcomes["kayenta"].append(_fixed_rule(
            lambda tick, run=run: kayenta_check_fails(scenario, stable, canary, run, tick),
            failures_allowed=0))
    oracle = oracle_tick(scenario, stable_rate, canary_rate,
                         ALPHA / sum(1 for m in scenario.metrics))
    return Result(scenario, outcomes, oracle, time.perf_counter() - started)


def _modelgate(spec: AnalysisSpec, stable: ArmCounts, canary: ArmCounts, run: int) -> Outcome:
    for tick in range(1, TICKS + 1):
        observation = Observation(tick * INTERVAL, cumulative_arm(stable, run, tick),
                                  cumulative_arm(canary, run, tick))
        record = judge(spec, observation, tick * INTERVAL, explain=False)
        if record.decision is AnalysisDecision.ROLLBACK:
            return Outcome("rollback", tick)
        if record.decision is AnalysisDecision.PROMOTE:
            return Outcome("promote", tick)
        if record.decision is AnalysisDecision.INCONCLUSIVE:
            return Outcome("none", tick)
    return Outcome("none", None)


def _fixed_rule(fails: Callable[[int], bool], failures_allowed: int) -> Outcome:
    failures = 0
    for tick in range(1, FIXED_RULE_HORIZON + 1):
        if fails(tick):
            failures += 1
            if failures > failures_allowed:
                return Outcome("rollback", tick)
    return Outcome("promote", FIXED_RULE_HORIZON)


# --- scenarios ------------------------------------------------------------------------------

def metric(kind: MetricType) -> MetricSpec:
    quantile = 0.99 if kind is MetricType.LATENCY else None
    return MetricSpec(name=kind.value, type=kind, tolerance=DEFAULT_TOLERANCES[kind],
                      min_samples=100, quantile=quantile)


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


def flagger_thresholds(metrics: Sequence[MetricSpec], stable: Truth) -> dict[str, float]:
    """Fixed thresholds a user would set from the stable's known behaviour and our
    tolerances."""
    thresholds = {}
    big = 1e9
    for spec in metrics:
        tolerance = spec.tolerance or 0.0
        if spec.type is MetricType.ERROR_RATE:
            thresholds[spec.name] = stable.error_rate + tolerance
        elif spec.type is MetricType.LATENCY:
            histogram = Histogram(BOUNDS, tuple(np.cumsum(stable.bucket_probabilities() * big)))
            p99 = histogram_quantile(histogram, 0.99)
            assert p99 is not None
            thresholds[spec.name] = p99 * (1 + tolerance)
        elif spec.type is MetricType.ACCURACY:
            thresholds[spec.name] = stable.accuracy - tolerance
        else:
            thresholds[spec.name] = tolerance
    return thresholds


def scenarios(aa_runs: int, regression_runs: int) -> list[Scenario]:
    defaults = default_metrics(100)
    result = []
    for rate in (1.0, 10.0, 100.0):
        result.append(Scenario(f"A/A, default metrics, {rate:g} req/s", Truth(), Truth(), rate,
                               defaults, regression=False, runs=aa_runs))

    def regression(name: str, kind: MetricType, canary: Truth, rate: float = 100.0,
                   stable: Truth = Truth()) -> Scenario:
        return Scenario(name, stable, canary, rate, (metric(kind),), regression=True,
                        runs=regression_runs)

    result += [
        regression("error rate 0.5% → 1%", MetricType.ERROR_RATE, Truth(error_rate=0.01)),
        regression("error rate 1% → 3%", MetricType.ERROR_RATE, Truth(error_rate=0.03),
                   stable=Truth(error_rate=0.01)),
        regression("error rate 1% → 3%, 10 req/s", MetricType.ERROR_RATE,
                   Truth(error_rate=0.03), rate=10.0, stable=Truth(error_rate=0.01)),
        regression("p99 latency +30%", MetricType.LATENCY, Truth(latency_median=0.026)),
        regression("predictions shift, PSI 0.1", MetricType.PREDICTION_DISTRIBUTION,
                   Truth(classes=shifted_classes(0.1))),
        regression("predictions shift, PSI 0.25", MetricType.PREDICTION_DISTRIBUTION,
                   Truth(classes=shifted_classes(0.25))),
        regression("accuracy 92% → 88%, 20% labelled", MetricType.ACCURACY,
                   Truth(accuracy=0.88)),
    ]
    return [Scenario(s.name, s.stable, s.canary, s.rate, s.metrics, s.regression, s.runs,
                     s.notes, flagger_thresholds(s.metrics, s.stable)) for s in result]


# --- reporting ------------------------------------------------------------------------------

def _rate(outcomes: list[Outcome], decision: str) -> float:
    return sum(o.decision == decision for o in outcomes) / len(outcomes)


def _times(outcomes: list[Outcome], decision: str) -> str:
    ticks = [o.tick for o in outcomes if o.decision == decision and o.tick is not None]
    if len(ticks) < max(1, len(outcomes) // 2) and decision == "rollback":
        return "—"
    if not ticks:
        return "—"
    median, p90 = np.percentile(np.array(ticks) * INTERVAL, [50, 90])
    return f"{_minutes(median)} / {_minutes(p90)}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}m"


def table(results: list[Result]) -> str:
    lines = [
        "A/A canaries (identical models): how often each rule rolls back a good canary, and "
        "how long it takes to promote (median / p90).",
        "",
        "| scenario | runs | modelgate false rollbacks | modelgate promoted (time) | "
        "Flagger-style false rollbacks | Kayenta-style false rollbacks |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for result in results:
        if result.scenario.regression:
            continue
        ours = result.outcomes["modelgate"]
        lines.append(
            f"| {result.scenario.name} | {len(ours)} | {_rate(ours, 'rollback'):.1%} | "
            f"{_rate(ours, 'promote'):.0%} ({_times(ours, 'promote')}) | "
            f"{_rate(result.outcomes['flagger'], 'rollback'):.1%} | "
            f"{_rate(result.outcomes['kayenta'], 'rollback'):.1%} |")
    lines += [
        "",
        "Regressions (100 req/s unless noted): share rolled back and time to roll back "
        "(median / p90); oracle is a fixed-sample test that knew the effect (80% power).",
        "",
        "| scenario | runs | modelgate rolled back | modelgate time | oracle time | "
        "median ÷ oracle | Flagger-style rolled back (time) | Kayenta-style rolled back (time) |",
        "| --- | ---: | ---: | --- | --- | ---: | --- | --- |",
    ]
    for result in results:
        if not result.scenario.regression:
            continue
        ours = result.outcomes["modelgate"]
        ticks = [o.tick for o in ours if o.decision == "rollback" and o.tick is not None]
        oracle = f"{_minutes(result.oracle * INTERVAL)}" if result.oracle else "beyond 30m"
        ratio = (f"{np.median(ticks) / result.oracle:.2f}" if ticks and result.oracle
                 and len(ticks) >= len(ours) / 2 else "—")
        others = [f"{_rate(result.outcomes[rule], 'rollback'):.0%} "
                  f"({_times(result.outcomes[rule], 'rollback')})"
                  for rule in ("flagger", "kayenta")]
        lines.append(
            f"| {result.scenario.name} | {len(ours)} | {_rate(ours, 'rollback'):.0%} | "
            f"{_times(ours, 'rollback')} | {oracle} | {ratio} | {others[0]} | {others[1]} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs per A/A scenario")
    parser.add_argument("--regression-runs", type=int, default=200,
                        help="runs per regression scenario")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--write", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    results = []
    for index, scenario in enumerate(scenarios(args.runs, args.regression_runs)):
        result = run_scenario(scenario, scenario.runs, args.seed + index)
        results.append(result)
        print(f"  {scenario.name}: {scenario.runs} runs in {result.seconds:.1f}s",
              file=sys.stderr, flush=True)
    text = table(results)
    print(text)
    if args.write:
        machine = (f"{platform.machine()}, {platform.python_implementation()} "
                   f"{platform.python_version()}, seed {args.seed}")
        args.write.write_text(_document(text, machine), encoding="utf-8")
    return 0


def _document(text: str, machine: str) -> str:
    template = (Path(__file__).with_name("analysis_bench.md")).read_text(encoding="utf-8")
    return template.replace("{{table}}", text).replace("{{machine}}", machine)


if __name__ == "__main__":
    sys.exit(main())
