"""Every verdict path of every check, and how the judge combines them."""

from __future__ import annotations

import dataclasses
import math

import pytest

from modelgate.core.analysis import (
    AnalysisDecision,
    ArmObservation,
    Histogram,
    Observation,
    Verdict,
    final_decision,
    judge,
)
from modelgate.core.analysis.checks import (
    check_accuracy,
    check_error_rate,
    check_latency,
    check_prediction_distribution,
    check_threshold,
    exceedance,
    histogram_quantile,
    population_stability_index,
)
from modelgate.core.types import (
    AnalysisSpec,
    MetricSpec,
    MetricType,
    OnInconclusive,
    ThresholdRange,
)

ERRORS = MetricSpec("error-rate", MetricType.ERROR_RATE, tolerance=0.0025, min_samples=100)
LATENCY = MetricSpec("latency", MetricType.LATENCY, tolerance=0.1, quantile=0.99,
                     min_samples=100)
PREDICTIONS = MetricSpec("predictions", MetricType.PREDICTION_DISTRIBUTION, tolerance=0.05,
                         min_samples=100)
ACCURACY = MetricSpec("accuracy", MetricType.ACCURACY, tolerance=0.02, min_samples=100)
ALPHA = 0.01
BOUNDS = (0.01, 0.02, 0.03, 0.05, 0.1, math.inf)


def arm(requests: float = 0, errors: float = 0, **fields: object) -> ArmObservation:
    return ArmObservation(requests=requests, errors=errors, **fields)  # type: ignore[arg-type]


def latency(n: float, shares: tuple[float, ...]) -> Histogram:
    cumulative, total = [], 0.0
    for share in shares:
        total += n * share
        cumulative.append(total)
    return Histogram(BOUNDS, tuple(cumulative))


# --- error rate -------------------------------------------------------------------------

@pytest.mark.parametrize(("stable", "canary", "verdict"), [
    (arm(200_000, 1000), arm(100_000, 500), Verdict.PASS),       # 0.5% vs 0.5%, plenty
    (arm(20_000, 100), arm(10_000, 500), Verdict.FAIL),          # 0.5% vs 5%
    (arm(2_000, 10), arm(1_000, 12), Verdict.CONTINUE),          # 0.5% vs 1.2%, little data
    (arm(2_000, 10), arm(50, 10), Verdict.NO_DATA),              # too few canary requests
])
def test_error_rate_verdicts(stable: ArmObservation, canary: ArmObservation,
                             verdict: Verdict) -> None:
    assert check_error_rate(ERRORS, stable, canary, ALPHA).verdict is verdict


def test_no_data_says_how_many_more_samples_are_needed_at_the_tolerance() -> None:
    record = check_error_rate(ERRORS, arm(2000, 10), arm(30, 0), ALPHA)
    assert record.verdict is Verdict.NO_DATA
    assert "70 more" in record.reason  # the shortfall to minSamples...
    # ...and, extrapolating today's rates (0% vs 0.5%), what a verdict at the tolerance needs
    assert record.required_samples is not None
    assert record.required_samples > 70
    assert f"about {record.required_samples} more for a verdict" in record.reason


@pytest.mark.parametrize("check", ["latency", "predictions"])
def test_no_data_extrapolates_latency_and_predictions_too(check: str) -> None:
    if check == "latency":
        stable = arm(5000, latency=latency(5000, (0.5, 0.3, 0.15, 0.04, 0.01, 0.0)))
        canary = arm(40, latency=latency(40, (0.5, 0.3, 0.15, 0.05, 0.0, 0.0)))
        record = check_latency(LATENCY, stable, canary, ALPHA)
    else:
        stable = arm(5000, classes={"a": 2500.0, "b": 1500.0, "c": 1000.0})
        canary = arm(40, classes={"a": 14.0, "b": 14.0, "c": 12.0})
        record = check_prediction_distribution(PREDICTIONS, stable, canary, ALPHA)
    assert record.verdict is Verdict.NO_DATA
    assert "60 more" in record.reason
    assert record.required_samples is not None
    assert record.required_samples > 60
    assert f"about {record.required_samples} more for a verdict" in record.reason


def test_no_data_without_data_to_extrapolate_says_the_shortfall() -> None:
    record = check_error_rate(ERRORS, arm(2000, 10), arm(0, 0), ALPHA)
    assert record.verdict is Verdict.NO_DATA
    assert record.required_samples == 100


def test_continue_estimates_the_samples_still_needed() -> None:
    record = check_error_rate(ERRORS, arm(20_000, 100), arm(2_000, 10), ALPHA)
    assert record.verdict is Verdict.CONTINUE
    assert record.required_samples is not None
    assert record.required_samples > 0
    scaled = check_error_rate(ERRORS, arm(20_000 * 20, 100 * 20),
                              arm(2_000 + 20 * record.required_samples,
                                  10 * (1 + 10 * record.required_samples / 1000)), ALPHA)
    assert scaled.verdict is not Verdict.CONTINUE


def test_zero_errors_in_a_small_sample_is_not_certainty() -> None:
    record = check_error_rate(ERRORS, arm(200, 0), arm(200, 0), ALPHA)
    assert record.verdict is Verdict.CONTINUE


def test_error_rate_record_carries_values_samples_effect_and_reason() -> None:
    record = check_error_rate(ERRORS, arm(20_000, 100), arm(10_000, 500), ALPHA)
    assert record.stable.value == pytest.approx(0.005)
    assert record.canary.value == pytest.approx(0.05)
    assert (record.stable.samples, record.canary.samples) == (20_000, 10_000)
    assert record.effect is not None
    assert record.effect.lower > 0.0025
    assert record.statistic is not None
    assert record.statistic > 0
    assert "above the tolerated 0.25%" in record.reason


# --- accuracy ---------------------------------------------------------------------------

@pytest.mark.parametrize(("stable", "canary", "verdict"), [
    (arm(correct=18_400, incorrect=1_600), arm(correct=18_300, incorrect=1_700), Verdict.PASS),
    (arm(correct=9_200, incorrect=800), arm(correct=4_000, incorrect=1_000), Verdict.FAIL),
    (arm(correct=920, incorrect=80), arm(correct=250, incorrect=40), Verdict.CONTINUE),
    (arm(correct=920, incorrect=80), arm(correct=40, incorrect=5), Verdict.NO_DATA),
])
def test_accuracy_verdicts(stable: ArmObservation, canary: ArmObservation,
                           verdict: Verdict) -> None:
    assert check_accuracy(ACCURACY, stable, canary, ALPHA).verdict is verdict


# --- latency ----------------------------------------------------------------------------

def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    histogram = Histogram((0.01, 0.02, math.inf), (50, 100, 100))
    assert histogram_quantile(histogram, 0.5) == pytest.approx(0.01)
    assert histogram_quantile(histogram, 0.75) == pytest.approx(0.015)
    assert histogram_quantile(Histogram(), 0.5) is None
    assert histogram_quantile(Histogram((0.01, math.inf), (10, 100)), 0.99) is None


def test_exceedance_is_the_share_above_a_threshold() -> None:
    histogram = Histogram((0.01, 0.02, math.inf), (50, 100, 100))
    assert exceedance(histogram, 0.015) == pytest.approx(0.25)
    assert exceedance(histogram, 0.5) == 0.0
    assert exceedance(Histogram(), 0.1) == 0.0


SAME = (0.2, 0.4, 0.3, 0.08, 0.019, 0.001)
SLOWER = (0.05, 0.15, 0.3, 0.3, 0.195, 0.005)


@pytest.mark.parametrize(("stable", "canary", "verdict"), [
    (latency(400_000, SAME), latency(200_000, SAME), Verdict.PASS),
    (latency(40_000, SAME), latency(20_000, SLOWER), Verdict.FAIL),
    (latency(4_000, SAME), latency(300, SAME), Verdict.CONTINUE),
    (latency(4_000, SAME), latency(20, SAME), Verdict.NO_DATA),
])
def test_latency_verdicts(stable: Histogram, canary: Histogram, verdict: Verdict) -> None:
    record = check_latency(LATENCY, arm(latency=stable), arm(latency=canary), ALPHA)
    assert record.verdict is verdict, record.reason


def test_latency_beyond_the_largest_bucket_continues_and_says_why() -> None:
    beyond = latency(10_000, (0.1, 0.1, 0.1, 0.1, 0.1, 0.5))
    record = check_latency(LATENCY, arm(latency=beyond), arm(latency=beyond), ALPHA)
    assert record.verdict is Verdict.CONTINUE
    assert "largest finite" in record.reason


def test_latency_record_reports_both_quantiles() -> None:
    record = check_latency(LATENCY, arm(latency=latency(40_000, SAME)),
                           arm(latency=latency(20_000, SLOWER)), ALPHA)
    assert record.stable.value is not None
    assert record.canary.value is not None
    assert record.canary.value > record.stable.value
    assert "p99" in record.reason


# --- prediction distribution ------------------------------------------------------------

def test_psi_of_identical_distributions_is_zero_and_grows_with_shift() -> None:
    assert population_stability_index([50, 30, 20], [500, 300, 200]) == pytest.approx(0.0)
    small = population_stability_index([50, 30, 20], [45, 33, 22])
    large = population_stability_index([50, 30, 20], [30, 40, 30])
    assert 0 < small < large


@pytest.mark.parametrize(("stable", "canary", "verdict"), [
    ({"a": 50_000, "b": 30_000, "c": 20_000}, {"a": 25_000, "b": 15_000, "c": 10_000},
     Verdict.PASS),
    ({"a": 5_000, "b": 3_000, "c": 2_000}, {"a": 1_000, "b": 2_000, "c": 2_000},
     Verdict.FAIL),
    ({"a": 500, "b": 300, "c": 200}, {"a": 110, "b": 60, "c": 30}, Verdict.CONTINUE),
    ({"a": 500, "b": 300, "c": 200}, {"a": 10, "b": 6, "c": 3}, Verdict.NO_DATA),
])
def test_prediction_distribution_verdicts(stable: dict[str, float], canary: dict[str, float],
                                          verdict: Verdict) -> None:
    record = check_prediction_distribution(PREDICTIONS, arm(classes=stable),
                                           arm(classes=canary), ALPHA)
    assert record.verdict is verdict, record.reason


def test_regressor_predictions_are_compared_by_value_buckets() -> None:
    bounds = (1.0, 2.0, 3.0, math.inf)
    stable = Histogram(bounds, (2_000, 6_000, 9_000, 10_000))
    shifted = Histogram(bounds, (200, 1_000, 4_000, 5_000))
    record = check_prediction_distribution(
        PREDICTIONS, arm(prediction_values=stable), arm(prediction_values=shifted), ALPHA)
    assert record.verdict is Verdict.FAIL
    assert "≤" in record.reason


def test_a_class_the_stable_never_predicts_is_noticed() -> None:
    record = check_prediction_distribution(
        PREDICTIONS, arm(classes={"a": 6_000, "b": 4_000}),
        arm(classes={"a": 2_000, "b": 1_500, "new": 1_500}), ALPHA)
    assert record.verdict is Verdict.FAIL
    assert "'new'" in record.reason


# --- custom thresholds ------------------------------------------------------------------

def test_threshold_check_passes_inside_fails_outside_and_holds_without_value() -> None:
    metric = MetricSpec("ctr", MetricType.PROMETHEUS, query="q",
                        threshold=ThresholdRange(minimum=0.02, maximum=None))
    assert check_threshold(metric, 0.05).verdict is Verdict.PASS
    assert check_threshold(metric, 0.01).verdict is Verdict.FAIL
    assert check_threshold(metric, None).verdict is Verdict.NO_DATA
    assert check_threshold(metric, math.nan).verdict is Verdict.NO_DATA


# --- the judge --------------------------------------------------------------------------

SPEC = AnalysisSpec(metrics=(ERRORS, ACCURACY), alpha=0.01, max_duration_seconds=600,
                    provider_error_limit=3)
GOOD = arm(200_000, 1000, correct=18_400, incorrect=1_600)
GOOD_CANARY = arm(100_000, 500, correct=18_300, incorrect=1_700)


def test_all_pass_promotes() -> None:
    record = judge(SPEC, Observation(300, GOOD, GOOD_CANARY), 300)
    assert record.decision is AnalysisDecision.PROMOTE
    assert [m.verdict for m in record.metrics] == [Verdict.PASS, Verdict.PASS]


def test_any_fail_rolls_back_and_names_the_metric() -> None:
    bad = dataclasses.replace(GOOD_CANARY, errors=5_000)
    record = judge(SPEC, Observation(300, GOOD, bad), 300)
    assert record.decision is AnalysisDecision.ROLLBACK
    assert record.reason.startswith("error-rate failed")


def test_undecided_continues_until_max_duration_then_is_inconclusive() -> None:
    little = arm(2_000, 10, correct=900, incorrect=100)
    assert judge(SPEC, Observation(300, little, little), 300).decision is AnalysisDecision.CONTINUE
    late = judge(SPEC, Observation(600, little, little), 600)
    assert late.decision is AnalysisDecision.INCONCLUSIVE
    assert "within 10m" in late.reason


def test_too_little_data_never_rolls_back_even_at_max_duration() -> None:
    trickle = arm(20, 1, correct=2, incorrect=3)
    for elapsed in (30, 300, 600):
        record = judge(SPEC, Observation(elapsed, GOOD, trickle), elapsed)
        assert record.decision is not AnalysisDecision.ROLLBACK
        assert {m.verdict for m in record.metrics} == {Verdict.NO_DATA}


def test_provider_failure_holds_then_exhausts_its_budget() -> None:
    held = judge(SPEC, None, 300, provider_error="connection refused",
                 consecutive_provider_errors=2)
    assert held.decision is AnalysisDecision.CONTINUE
    assert {m.verdict for m in held.metrics} == {Verdict.ERROR}
    assert "connection refused" in held.metrics[0].reason
    spent = judge(SPEC, None, 300, provider_error="connection refused",
                  consecutive_provider_errors=4)
    assert spent.decision is AnalysisDecision.INCONCLUSIVE
    assert "4 times in a row" in spent.reason


def test_alpha_is_split_between_statistical_metrics() -> None:
    # Borderline evidence that fails at alpha 1% for one metric passes the stricter split.
    stable, canary = arm(50_000, 250), arm(12_000, 130)
    alone = AnalysisSpec(metrics=(ERRORS,), alpha=0.01)
    together = AnalysisSpec(metrics=(ERRORS, LATENCY, PREDICTIONS, ACCURACY), alpha=0.01)
    one = judge(alone, Observation(60, stable, canary), 60).metric("error-rate")
    four = judge(together, Observation(60, stable, canary), 60).metric("error-rate")
    assert one.effect is not None
    assert four.effect is not None
    assert four.effect.lower < one.effect.lower


@pytest.mark.parametrize(("policy", "decision"), [
    (OnInconclusive.PAUSE, AnalysisDecision.INCONCLUSIVE),
    (OnInconclusive.PROMOTE, AnalysisDecision.PROMOTE),
    (OnInconclusive.ROLLBACK, AnalysisDecision.ROLLBACK),
])
def test_inconclusive_policy(policy: OnInconclusive, decision: AnalysisDecision) -> None:
    little = arm(2_000, 10, correct=900, incorrect=100)
    record = judge(SPEC, Observation(600, little, little), 600)
    assert final_decision(record, policy) is decision
    assert final_decision(judge(SPEC, Observation(300, GOOD, GOOD_CANARY), 300),
                          policy) is AnalysisDecision.PROMOTE


@pytest.mark.parametrize("shares", [(0.5, 0.3, 0.2), (0.6, 0.2, 0.1, 0.05, 0.05)])
def test_identical_prediction_distributions_rarely_fail_under_repeated_looks(
        shares: tuple[float, ...]) -> None:
    """The PSI lower bound (bias-corrected delta method) keeps its α from a small minSamples
    on, where PSI's small-sample bias alone exceeds the tolerance, however often it looks."""
    import numpy as np

    rng = np.random.default_rng(7)
    runs, looks, per_look = 200, 15, 30
    metric = dataclasses.replace(PREDICTIONS, min_samples=per_look)
    failed = 0
    labels = [f"c{i}" for i in range(len(shares))]
    for _ in range(runs):
        stable_counts = np.zeros(len(shares))
        canary_counts = np.zeros(len(shares))
        for _ in range(looks):
            stable_counts += rng.multinomial(2 * per_look, shares)
            canary_counts += rng.multinomial(per_look, shares)
            record = check_prediction_distribution(
                metric,
                arm(stable_counts.sum(), classes=dict(zip(labels, stable_counts.tolist(),
                                                          strict=True))),
                arm(canary_counts.sum(), classes=dict(zip(labels, canary_counts.tolist(),
                                                          strict=True))),
                ALPHA, explain=False)
            if record.verdict is Verdict.FAIL:
                failed += 1
                break
    assert failed <= runs * ALPHA
