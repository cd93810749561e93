"""The plan's boundaries spend exactly their budget, and the checks built on them keep α and β.

Simulations are seeded and small (a few hundred canaries, a 10-minute plan of 20 looks): each
bound allows for its Monte Carlo error (2.5 standard errors) and no more, so a design that
overspent its budget by half would fail them.
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
from scipy.stats import norm

from modelgate.core.analysis import ArmObservation, Histogram, Observation, judge
from modelgate.core.analysis.sequential import (
    MAX_LOOKS,
    Plan,
    boundaries,
    spending_gamma,
    spent,
)
from modelgate.core.types import AnalysisSpec, MetricSpec, MetricType

LOOKS = 20
INTERVAL = 30.0
FINE = (*(float(f"{0.0001 * 1.1 ** k:.6g}") for k in range(122)), math.inf)


def slack(level: float, runs: int) -> float:
    return level + 2.5 * math.sqrt(level * (1 - level) / runs)


@pytest.mark.parametrize("gamma", [-6.0, -1.0, 0.0, 2.0])
def test_a_brownian_motion_crosses_the_boundaries_with_the_budget(gamma: float) -> None:
    rng = np.random.default_rng(11)
    level, paths = 0.05, 40_000
    critical = np.array(boundaries(LOOKS, level, gamma))
    fractions = np.arange(1, LOOKS + 1) / LOOKS
    walk = np.cumsum(rng.normal(scale=math.sqrt(1 / LOOKS), size=(paths, LOOKS)), axis=1)
    crossed = (walk / np.sqrt(fractions) > critical).any(axis=1).mean()
    assert abs(crossed - level) < 4 * math.sqrt(level * (1 - level) / paths)


def test_patient_spending_ends_near_a_single_look_and_eager_spending_starts_low() -> None:
    patient = boundaries(60, 0.05, -6.0)
    eager = boundaries(60, 0.05, 2.0)
    single = float(norm.isf(0.05))
    assert single < patient[-1] < single + 0.15
    assert eager[9] < patient[9] - 1.0  # at 5 of 30 minutes
    assert all(a >= b - 1e-9 for a, b in pairwise(patient))


def test_spending_reaches_the_budget_and_no_more() -> None:
    assert spent(0.0, 0.05, -1.0) == 0.0
    assert spent(1.0, 0.05, -1.0) == pytest.approx(0.05)
    assert spent(2.0, 0.05, 0.0) == pytest.approx(0.05)
    assert spent(0.5, 0.05, -6.0) < spent(0.5, 0.05, 0.0) < spent(0.5, 0.05, 2.0)


def test_spending_is_more_patient_the_less_the_plan_will_reach() -> None:
    gammas = [spending_gamma(reach) for reach in (1.0, 2.4, 3.0, 3.4, 5.0, 6.0, 20.0)]
    assert gammas == sorted(gammas)
    assert gammas[0] == -6.0
    assert gammas[-1] == 2.0
    assert spending_gamma(None) == -1.0


def test_the_plan_counts_looks_from_the_interval_and_the_maximum_duration() -> None:
    plan = Plan.at(300, 30, 1800)
    assert (plan.look, plan.looks) == (10, 60)
    assert Plan.at(310, 30, 1800).look == 10  # a look a little late is the same look
    assert Plan.at(5000, 30, 1800).look == 60  # past the end: the last look's boundary
    assert plan.later(600).look == 30
    long = Plan.at(60, 1, 86_400)
    assert long.looks == MAX_LOOKS


# --- the checks keep their budgets under repeated looks -------------------------------------

def _run(spec: AnalysisSpec, arms: list[tuple[ArmObservation, ArmObservation]]) -> str:
    """Judge one canary look by look as the operator does; its first decision."""
    passed: tuple[str, ...] = ()
    for index, (stable, canary) in enumerate(arms, start=1):
        t = index * INTERVAL
        record = judge(spec, Observation(t, stable, canary), t, explain=False, passed=passed)
        passed = record.passed
        if record.decision.value in ("promote", "rollback"):
            return record.decision.value
    return "none"


def _errors_runs(canary_rate: float, runs: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    per_look = 600  # 20 req/s to each arm
    metric = MetricSpec("error-rate", MetricType.ERROR_RATE, tolerance=0.0025, min_samples=100)
    spec = AnalysisSpec(metrics=(metric,), alpha=0.01, beta=0.05,
                        max_duration_seconds=LOOKS * INTERVAL)
    stable_errors = np.cumsum(rng.binomial(per_look, 0.005, size=(runs, LOOKS)), axis=1)
    canary_errors = np.cumsum(rng.binomial(per_look, canary_rate, size=(runs, LOOKS)), axis=1)
    outcomes = []
    for run in range(runs):
        arms = [(ArmObservation(requests=per_look * k, errors=float(stable_errors[run, k - 1])),
                 ArmObservation(requests=per_look * k, errors=float(canary_errors[run, k - 1])))
                for k in range(1, LOOKS + 1)]
        outcomes.append(_run(spec, arms))
    return outcomes


def test_error_rate_rolls_back_identical_canaries_at_most_alpha() -> None:
    outcomes = _errors_runs(0.005, runs=400, seed=1)
    assert outcomes.count("rollback") / len(outcomes) <= slack(0.01, len(outcomes))
    assert outcomes.count("promote") / len(outcomes) > 0.5  # and it does decide


def test_error_rate_promotes_canaries_worse_by_the_tolerance_at_most_beta() -> None:
    outcomes = _errors_runs(0.0075, runs=400, seed=2)
    assert outcomes.count("promote") / len(outcomes) <= slack(0.05, len(outcomes))


def _latency_runs(slowdown: float, runs: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    per_look = 600

    def probabilities(median: float) -> np.ndarray:
        cdf = [norm.cdf((math.log(b) - math.log(median)) / 0.5) if math.isfinite(b) else 1.0
               for b in FINE]
        return np.diff(np.concatenate([[0.0], cdf]))

    metric = MetricSpec("latency", MetricType.LATENCY, tolerance=0.1, quantile=0.99,
                        min_samples=100)
    spec = AnalysisSpec(metrics=(metric,), alpha=0.01, beta=0.05,
                        max_duration_seconds=LOOKS * INTERVAL)
    shape = (runs, LOOKS)
    stable = np.cumsum(rng.multinomial(per_look, probabilities(0.02), size=shape), axis=1)
    canary = np.cumsum(rng.multinomial(per_look, probabilities(0.02 * slowdown), size=shape),
                       axis=1)
    outcomes = []
    for run in range(runs):
        arms = []
        for k in range(1, LOOKS + 1):
            histograms = [Histogram(FINE, tuple(np.cumsum(arm[run, k - 1]).tolist()))
                          for arm in (stable, canary)]
            arms.append((ArmObservation(requests=per_look * k, latency=histograms[0]),
                         ArmObservation(requests=per_look * k, latency=histograms[1])))
        outcomes.append(_run(spec, arms))
    return outcomes


def test_latency_rolls_back_identical_canaries_at_most_alpha() -> None:
    outcomes = _latency_runs(1.0, runs=300, seed=3)
    assert outcomes.count("rollback") / len(outcomes) <= slack(0.01, len(outcomes))
    assert outcomes.count("promote") / len(outcomes) > 0.5


def test_latency_promotes_canaries_slower_by_the_tolerance_at_most_beta() -> None:
    # every latency 10% longer: p99 exactly at the tolerance
    outcomes = _latency_runs(1.1, runs=300, seed=4)
    assert outcomes.count("promote") / len(outcomes) <= slack(0.05, len(outcomes))


def test_prediction_distribution_promotes_a_shift_at_the_tolerance_at_most_beta() -> None:
    rng = np.random.default_rng(5)
    runs, per_look = 300, 300
    stable_shares = np.array([0.5, 0.3, 0.2])
    canary_shares = np.array([0.5 - 0.11, 0.3 + 0.055, 0.2 + 0.055])
    psi = float(((canary_shares - stable_shares) * np.log(canary_shares / stable_shares)).sum())
    assert psi == pytest.approx(0.05, abs=0.001)
    metric = MetricSpec("predictions", MetricType.PREDICTION_DISTRIBUTION, tolerance=psi,
                        min_samples=100)
    spec = AnalysisSpec(metrics=(metric,), alpha=0.01, beta=0.05,
                        max_duration_seconds=LOOKS * INTERVAL)
    stable = np.cumsum(rng.multinomial(per_look, stable_shares, size=(runs, LOOKS)), axis=1)
    canary = np.cumsum(rng.multinomial(per_look, canary_shares, size=(runs, LOOKS)), axis=1)
    outcomes = []
    for run in range(runs):
        arms = [(ArmObservation(classes={str(i): float(c) for i, c in
                                         enumerate(stable[run, k - 1])}),
                 ArmObservation(classes={str(i): float(c) for i, c in
                                         enumerate(canary[run, k - 1])}))
                for k in range(1, LOOKS + 1)]
        outcomes.append(_run(spec, arms))
    assert outcomes.count("promote") / runs <= slack(0.05, runs)
