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
from modelgate.core.analysis.checks import Design as _Design
from modelgate.core.analysis.checks import (
    check_accuracy,
    check_error_rate,
    check_latency,
    check_prediction_distribution,
    check_threshold,
    count_above,
    histogram_quantile,
    population_stability_index,
)
from modelgate.core.analysis.sequential import Plan
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
# looked at 10 minutes into a 30-minute plan of 30 s looks, with 5 minutes of window
DESIGN = _Design(plan=Plan.at(600, 30, 1800), alpha=ALPHA, beta=0.05, window_seconds=300)
BOUNDS = (0.01, 0.02, 0.03, 0.05, 0.1, math.inf)
FINE = (*(float(f"{0.0001 * 1.1 ** k:.6g}") for k in range(122)), math.inf)
"""The serving image's latency buckets: 10% apart from 0.1 ms to about 10 s."""


def lognormal(n: float, median: float = 0.02, sigma: float = 0.5,
              bounds: tuple[float, ...] = FINE) -> Histogram:
    """Expected cumulative counts of n log-normal latencies at the bucket bounds."""
    from scipy.stats import norm

    return Histogram(bounds, tuple(
        n * float(norm.cdf((math.log(b) - math.log(median)) / sigma)) if math.isfinite(b)
        else n for b in bounds))


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
    assert check_error_rate(ERRORS, stable, canary, DESIGN).verdict is verdict


def test_no_data_says_how_many_more_samples_and_how_long_at_the_current_traffic() -> None:
    # 30 canary requests in the 5-minute window: 0.1 req/s
    record = check_error_rate(ERRORS, arm(2000, 10), arm(30, 0), DESIGN)
    assert record.verdict is Verdict.NO_DATA
    assert "70 more" in record.reason  # the shortfall to minSamples...
    # ...and, extrapolating today's rates (0% vs 0.5%), what a verdict needs
    assert record.required_samples is not None
    assert record.required_samples > 70
    assert record.seconds_to_decision is not None
    assert record.seconds_to_decision == pytest.approx(record.required_samples / 0.1, rel=0.01)
    assert "at 0.1 req/s to the canary" in record.reason
    assert "past the analysis' maxDuration" in record.reason


@pytest.mark.parametrize("check", ["latency", "predictions"])
def test_no_data_extrapolates_latency_and_predictions_too(check: str) -> None:
    if check == "latency":
        stable = arm(5000, latency=lognormal(5000))
        canary = arm(40, latency=lognormal(40))
        record = check_latency(LATENCY, stable, canary, DESIGN)
    else:
        stable = arm(5000, classes={"a": 2500.0, "b": 1500.0, "c": 1000.0})
        canary = arm(40, classes={"a": 14.0, "b": 14.0, "c": 12.0})
        record = check_prediction_distribution(PREDICTIONS, stable, canary, DESIGN)
    assert record.verdict is Verdict.NO_DATA
    assert "60 more" in record.reason
    assert record.required_samples is not None
    assert record.required_samples >= 60
    assert "more at 0.13 req/s to the canary" in record.reason


def test_no_traffic_to_the_canary_says_so_and_estimates_nothing() -> None:
    record = check_error_rate(ERRORS, arm(2000, 10), arm(0, 0), DESIGN)
    assert record.verdict is Verdict.NO_DATA
    assert record.seconds_to_decision is None
    assert "the canary has had no requests yet" in record.reason


def test_continue_estimates_the_time_to_a_verdict_and_the_estimate_holds() -> None:
    # 0.5% vs 0.5% at 20 req/s to the canary for 5 minutes: not yet, but within the plan
    stable, canary = arm(6_000, 30), arm(6_000, 30)
    record = check_error_rate(ERRORS, stable, canary, DESIGN)
    assert record.verdict is Verdict.CONTINUE
    seconds = record.seconds_to_decision
    assert seconds is not None
    assert 0 < seconds < 1200
    assert record.required_samples == pytest.approx(20 * seconds, rel=0.01)
    assert f"about {round(seconds / 60)} minutes more at 20 req/s to the canary" \
        in record.reason
    # the same rates that much later (more data, a later look) decide
    scale = (300 + seconds) / 300
    later = _Design(plan=DESIGN.plan.later(seconds), alpha=ALPHA, beta=0.05,
                    window_seconds=300 + seconds)
    decided = check_error_rate(ERRORS, arm(6_000 * scale, 30 * scale),
                               arm(6_000 * scale, 30 * scale), later)
    assert decided.verdict is Verdict.PASS
    earlier = _Design(plan=DESIGN.plan.later(seconds - 60), alpha=ALPHA, beta=0.05,
                      window_seconds=240 + seconds)
    scale = (240 + seconds) / 300
    assert check_error_rate(ERRORS, arm(6_000 * scale, 30 * scale),
                            arm(6_000 * scale, 30 * scale), earlier).verdict \
        is Verdict.CONTINUE


def test_zero_errors_in_a_small_sample_is_not_certainty() -> None:
    record = check_error_rate(ERRORS, arm(200, 0), arm(200, 0), DESIGN)
    assert record.verdict is Verdict.CONTINUE


def test_error_rate_record_carries_values_samples_effect_and_reason() -> None:
    record = check_error_rate(ERRORS, arm(20_000, 100), arm(10_000, 500), DESIGN)
    assert record.stable.value == pytest.approx(0.005)
    assert record.canary.value == pytest.approx(0.05)
    assert (record.stable.samples, record.canary.samples) == (20_000, 10_000)
    assert record.effect is not None
    assert record.effect.lower > 0
    assert record.statistic is not None
    assert record.statistic > 0
    assert "confidently worse than stable" in record.reason


def test_a_canary_worse_but_confidently_within_tolerance_passes() -> None:
    # +0.1 points with plenty of data: worse than stable for sure, but within +0.25 points
    record = check_error_rate(ERRORS, arm(2_000_000, 10_000), arm(2_000_000, 12_000), DESIGN)
    assert record.effect is not None
    assert record.effect.lower > 0
    assert record.verdict is Verdict.PASS


# --- accuracy ---------------------------------------------------------------------------

@pytest.mark.parametrize(("stable", "canary", "verdict"), [
    (arm(correct=18_400, incorrect=1_600), arm(correct=18_300, incorrect=1_700), Verdict.PASS),
    (arm(correct=9_200, incorrect=800), arm(correct=4_000, incorrect=1_000), Verdict.FAIL),
    (arm(correct=920, incorrect=80), arm(correct=250, incorrect=40), Verdict.CONTINUE),
    (arm(correct=920, incorrect=80), arm(correct=40, incorrect=5), Verdict.NO_DATA),
])
def test_accuracy_verdicts(stable: ArmObservation, canary: ArmObservation,
                           verdict: Verdict) -> None:
    assert check_accuracy(ACCURACY, stable, canary, DESIGN).verdict is verdict


# --- latency ----------------------------------------------------------------------------

def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    histogram = Histogram((0.01, 0.02, math.inf), (50, 100, 100))
    assert histogram_quantile(histogram, 0.5) == pytest.approx(0.01)
    assert histogram_quantile(histogram, 0.75) == pytest.approx(0.015)
    assert histogram_quantile(Histogram(), 0.5) is None
    assert histogram_quantile(Histogram((0.01, math.inf), (10, 100)), 0.99) is None


def test_count_above_reads_bucket_bounds_conservatively() -> None:
    histogram = Histogram((0.01, 0.02, 0.04, math.inf), (50, 80, 95, 100))
    assert count_above(histogram, 0.02, at_least=True) == 20
    assert count_above(histogram, 0.02, at_least=False) == 20
    # a bound the histogram lacks: the next bound down counts more above, up fewer
    assert count_above(histogram, 0.03, at_least=True) == 20
    assert count_above(histogram, 0.03, at_least=False) == 5
    assert count_above(histogram, 0.5, at_least=True) == 5
    assert count_above(histogram, 0.5, at_least=False) == 0


@pytest.mark.parametrize(("stable", "canary", "verdict"), [
    (lognormal(100_000), lognormal(100_000), Verdict.PASS),
    (lognormal(20_000), lognormal(20_000, median=0.025), Verdict.FAIL),    # p99 +25%
    (lognormal(2_000), lognormal(2_000), Verdict.CONTINUE),
    (lognormal(2_000), lognormal(20), Verdict.NO_DATA),
])
def test_latency_verdicts(stable: Histogram, canary: Histogram, verdict: Verdict) -> None:
    record = check_latency(LATENCY, arm(latency=stable), arm(latency=canary), DESIGN)
    assert record.verdict is verdict, record.reason


def test_latency_record_names_the_resolution_that_bounded_it() -> None:
    record = check_latency(LATENCY, arm(latency=lognormal(100_000)),
                           arm(latency=lognormal(100_000)), DESIGN)
    resolution = record.resolution
    assert resolution is not None
    # stable's p99 is 63.9 ms: the bound below it, and the one 10% above that
    assert resolution.stable_bound < 0.0639 < resolution.stable_bound * 1.1
    assert resolution.canary_bound == pytest.approx(resolution.stable_bound * 1.1, rel=1e-4)
    assert resolution.tested_tolerance == pytest.approx(0.1, abs=1e-3)
    assert "tested tolerance +10.0%" in record.reason


def test_coarse_buckets_test_a_smaller_tolerance_and_say_so() -> None:
    # bounds 50 ms, 75 ms, 100 ms: nothing within +10% of 50 ms but itself
    coarse = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1, math.inf)
    record = check_latency(LATENCY, arm(latency=lognormal(100_000, bounds=coarse)),
                           arm(latency=lognormal(100_000, bounds=coarse)), DESIGN)
    assert record.verdict is not Verdict.PASS
    assert record.resolution is None
    assert "too coarse" in record.reason


def test_latency_beyond_the_largest_bucket_continues_and_says_why() -> None:
    beyond = latency(10_000, (0.1, 0.1, 0.1, 0.1, 0.1, 0.5))
    record = check_latency(LATENCY, arm(latency=beyond), arm(latency=beyond), DESIGN)
    assert record.verdict is Verdict.CONTINUE
    assert "largest finite" in record.reason


def test_latency_record_reports_both_quantiles() -> None:
    record = check_latency(LATENCY, arm(latency=lognormal(40_000)),
                           arm(latency=lognormal(20_000, median=0.025)), DESIGN)
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
                                           arm(classes=canary), DESIGN)
    assert record.verdict is verdict, record.reason


def test_regressor_predictions_are_compared_by_value_buckets() -> None:
    bounds = (1.0, 2.0, 3.0, math.inf)
    stable = Histogram(bounds, (2_000, 6_000, 9_000, 10_000))
    shifted = Histogram(bounds, (200, 1_000, 4_000, 5_000))
    record = check_prediction_distribution(
        PREDICTIONS, arm(prediction_values=stable), arm(prediction_values=shifted), DESIGN)
    assert record.verdict is Verdict.FAIL
    assert "≤" in record.reason


def test_a_class_the_stable_never_predicts_is_noticed() -> None:
    record = check_prediction_distribution(
        PREDICTIONS, arm(classes={"a": 6_000, "b": 4_000}),
        arm(classes={"a": 2_000, "b": 1_500, "new": 1_500}), DESIGN)
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


def test_a_query_compared_with_stable_fails_only_above_the_tolerance() -> None:
    metric = MetricSpec("p95", MetricType.PROMETHEUS, query="q", tolerance=0.05)
    within = check_threshold(metric, 0.29, 0.25)
    assert within.verdict is Verdict.PASS
    assert (within.canary.value, within.stable.value) == (0.29, 0.25)
    assert "increase +0.04 is within the tolerated 0.05" in within.reason
    assert check_threshold(metric, 0.31, 0.25).verdict is Verdict.FAIL
    assert check_threshold(metric, 0.31, None).reason == \
        "the query returned no value yet for stable"
    assert check_threshold(metric, None, None).verdict is Verdict.NO_DATA


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
    stable, canary = arm(50_000, 250), arm(12_000, 130)
    alone = AnalysisSpec(metrics=(ERRORS,), alpha=0.01)
    together = AnalysisSpec(metrics=(ERRORS, LATENCY, PREDICTIONS, ACCURACY), alpha=0.01)
    one = judge(alone, Observation(60, stable, canary), 60).metric("error-rate")
    four = judge(together, Observation(60, stable, canary), 60).metric("error-rate")
    assert one.effect is not None
    assert four.effect is not None
    assert four.effect.lower < one.effect.lower


def test_beta_sets_how_confident_a_pass_must_be() -> None:
    stable, canary = arm(50_000, 250), arm(50_000, 250)
    strict = AnalysisSpec(metrics=(ERRORS,), beta=0.01)
    loose = AnalysisSpec(metrics=(ERRORS,), beta=0.2)
    tight = judge(strict, Observation(600, stable, canary), 600).metric("error-rate")
    wide = judge(loose, Observation(600, stable, canary), 600).metric("error-rate")
    assert tight.effect is not None
    assert wide.effect is not None
    assert wide.effect.upper < tight.effect.upper


def test_the_record_states_the_plan_and_the_canary_traffic() -> None:
    record = judge(SPEC, Observation(300, GOOD, GOOD_CANARY), 300)
    assert (record.look, record.looks) == (10, 20)
    assert record.canary_rate == pytest.approx(100_000 / 300)


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


def test_no_traffic_to_the_canary_never_rolls_back_and_says_what_is_needed() -> None:
    rollback = dataclasses.replace(SPEC, on_inconclusive=OnInconclusive.ROLLBACK)
    record = judge(rollback, Observation(600, GOOD, arm()), 600)
    assert record.decision is AnalysisDecision.INCONCLUSIVE
    assert record.starved
    assert final_decision(record, OnInconclusive.ROLLBACK) is AnalysisDecision.INCONCLUSIVE
    assert "the canary has received no requests in 10 minutes" in record.reason
    assert "never rolled back for it" in record.reason
    assert "needs at least 100 requests" in record.reason
    assert "onInconclusive: rollback does not apply" in record.reason


def test_every_undecided_metric_of_an_inconclusive_record_says_how_long_it_needs() -> None:
    little = arm(2_000, 10, correct=900, incorrect=100)
    record = judge(SPEC, Observation(600, little, little), 600)
    assert record.decision is AnalysisDecision.INCONCLUSIVE
    for metric in record.metrics:
        assert metric.seconds_to_decision is not None
        assert "req/s to the canary" in metric.reason
    assert "more at 3.3 req/s to the canary, past the analysis' maxDuration" in record.reason


def test_a_pass_stands_at_later_looks() -> None:
    # error rate passed earlier; now it is undecided, the accuracy passes: promote
    undecided = arm(2_000, 10, correct=18_300, incorrect=1_700)
    fresh = judge(SPEC, Observation(300, GOOD, undecided), 300)
    assert fresh.metric("error-rate").verdict is Verdict.CONTINUE
    assert fresh.decision is AnalysisDecision.CONTINUE
    record = judge(SPEC, Observation(300, GOOD, undecided), 300, passed=("error-rate",))
    assert record.metric("error-rate").verdict is Verdict.PASS
    assert "passed at an earlier look" in record.metric("error-rate").reason
    assert record.decision is AnalysisDecision.PROMOTE
    assert record.passed == ("error-rate", "accuracy")
    # ...but a metric that passed still rolls back when it proves worse than stable
    worse = arm(100_000, 5_000, correct=18_300, incorrect=1_700)
    assert judge(SPEC, Observation(300, GOOD, worse), 300,
                 passed=("error-rate",)).decision is AnalysisDecision.ROLLBACK
