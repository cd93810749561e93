"""The judge: every metric's check, combined into one decision with its record.

Any fail rolls back; all pass promotes; anything else continues, until the maximum duration
(or the provider's error budget) runs out, which is inconclusive and left to the spec's
onInconclusive policy. Too little data and provider failures hold: they never roll back, and
an analysis that ends with a metric still short of data is never rolled back by the policy
either (the record says why and what is needed).

Budgets: α bounds the chance of rolling back a canary as good as stable over the whole
analysis, so it is split evenly between the statistical checks (any one failing rolls back);
β bounds the chance of promoting a canary worse than stable by a metric's tolerance, and is
not split (promoting needs the worse metric itself to pass). Both are spent over the plan of
looks, maxDuration / interval (see `sequential`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace

from modelgate.core.analysis.checks import CHECKS, Design, check_threshold, duration_words
from modelgate.core.analysis.observations import Observation
from modelgate.core.analysis.records import (
    AnalysisDecision,
    AnalysisRecord,
    ArmValue,
    MetricRecord,
    Verdict,
)
from modelgate.core.analysis.sequential import Plan
from modelgate.core.durations import format_seconds
from modelgate.core.types import AnalysisSpec, MetricSpec, MetricType, OnInconclusive


def judge(
    analysis: AnalysisSpec,
    observation: Observation | None,
    elapsed_seconds: float,
    *,
    max_duration_seconds: float | None = None,
    provider_error: str | None = None,
    consecutive_provider_errors: int = 0,
    custom_values: Mapping[str, float | None] | None = None,
    custom_errors: Mapping[str, str] | None = None,
    stable_values: Mapping[str, float | None] | None = None,
    explain: bool = True,
    passed: Collection[str] = (),
) -> AnalysisRecord:
    """Judge the canary against stable.

    observation: both arms over the window, or None when the provider failed this time
    (provider_error says why; consecutive_provider_errors counts this failure too).
    custom_values: each prometheus metric's value for the canary (None: no value).
    stable_values: the same query's value for stable, for prometheus metrics compared with
    stable (a tolerance instead of a thresholdRange).
    custom_errors: why a prometheus metric's query gave no usable value (its verdict is
    error; it holds, and a policy never rolls back for it).
    explain: estimate the time still needed for undecided metrics (costs a little time).
    passed: metrics that passed at an earlier look of this analysis. A pass stands: a metric
    that crossed its "within tolerance" boundary once has spent its β, so it need not cross
    again at the look the last metric passes (the record's `passed` carries them on). It
    still rolls back if it later proves worse than stable.
    """
    max_duration = (max_duration_seconds if max_duration_seconds is not None
                    else analysis.max_duration_seconds)
    compared = sum(1 for metric in analysis.metrics if metric.type is not MetricType.PROMETHEUS)
    plan = Plan.at(elapsed_seconds, analysis.interval_seconds, max_duration)
    window = observation.window_seconds if observation is not None else 0.0
    design = Design(plan=plan, alpha=analysis.alpha / max(compared, 1), beta=analysis.beta,
                    window_seconds=window)
    records = tuple(
        _stood(_check(metric, observation, design, provider_error, custom_values or {},
                      custom_errors or {}, stable_values or {}, explain), passed)
        for metric in analysis.metrics
    )
    passed_now = tuple(r.name for r in records if r.verdict is Verdict.PASS)
    rate = (observation.canary.requests / window
            if observation is not None and window > 0 else None)
    # a metric whose query cannot be used is no evidence against the canary either
    starved = any(r.verdict is Verdict.NO_DATA for r in records) or any(
        r.name in (custom_errors or {}) for r in records)

    def record(decision: AnalysisDecision, reason: str) -> AnalysisRecord:
        return AnalysisRecord(decision, reason, elapsed_seconds, records, canary_rate=rate,
                              look=plan.look, looks=plan.looks, starved=starved,
                              passed=passed_now)

    failed = [r for r in records if r.verdict is Verdict.FAIL]
    if failed:
        names = ", ".join(r.name for r in failed)
        return record(AnalysisDecision.ROLLBACK, f"{names} failed: {failed[0].reason}")
    if records and all(r.verdict is Verdict.PASS for r in records):
        return record(AnalysisDecision.PROMOTE, "every metric is confidently within tolerance")
    if consecutive_provider_errors > analysis.provider_error_limit:
        return record(
            AnalysisDecision.INCONCLUSIVE,
            f"the metric provider failed {consecutive_provider_errors} times in a row, more "
            f"than the {analysis.provider_error_limit} allowed: {provider_error}")
    pending = [r for r in records if r.verdict is not Verdict.PASS]
    waiting = "; ".join(f"{r.name}: {r.reason}" for r in pending[:3])
    no_traffic = (observation is not None and observation.canary.requests <= 0)
    if no_traffic:
        assert observation is not None
        waiting = (f"the canary has received no requests in {duration_words(window)} of "
                   f"analysis, so it cannot be judged and is never rolled back for it; it "
                   f"needs at least {analysis.min_samples} requests (minSamples): check that "
                   f"clients send traffic and the Service reaches the canary pods; {waiting}")
    if elapsed_seconds >= max_duration:
        if starved:
            return record(
                AnalysisDecision.INCONCLUSIVE,
                f"no confident verdict within {format_seconds(max_duration)}, with too little "
                f"data to judge, so onInconclusive: rollback does not apply; {waiting}")
        return record(AnalysisDecision.INCONCLUSIVE,
                      f"no confident verdict within {format_seconds(max_duration)}; {waiting}")
    return record(AnalysisDecision.CONTINUE, f"waiting for evidence; {waiting}")


def _check(metric: MetricSpec, observation: Observation | None, design: Design,
           provider_error: str | None, custom_values: Mapping[str, float | None],
           custom_errors: Mapping[str, str], stable_values: Mapping[str, float | None],
           explain: bool) -> MetricRecord:
    if metric.type is MetricType.PROMETHEUS:
        if metric.name in custom_errors:
            return MetricRecord(name=metric.name, type=metric.type, verdict=Verdict.ERROR,
                                stable=ArmValue(None, 0), canary=ArmValue(None, 0),
                                reason=custom_errors[metric.name])
        if metric.name not in custom_values and provider_error is not None:
            return _error(metric.name, metric.type, provider_error)
        return check_threshold(metric, custom_values.get(metric.name),
                               stable_values.get(metric.name))
    if observation is None:
        return _error(metric.name, metric.type, provider_error or "no observation")
    return CHECKS[metric.type](metric, observation.stable, observation.canary, design,
                               explain=explain)


def _stood(record: MetricRecord, passed: Collection[str]) -> MetricRecord:
    """A metric that passed at an earlier look stays passed unless it fails now (or its
    check cannot run: then the pass stands too, as nothing new is known)."""
    if record.name not in passed or record.verdict in (Verdict.PASS, Verdict.FAIL):
        return record
    if record.type is MetricType.PROMETHEUS:
        return record  # an absolute threshold has no error budget to have spent
    return replace(record, verdict=Verdict.PASS, required_samples=None,
                   seconds_to_decision=None,
                   reason=f"passed at an earlier look of this analysis; now: {record.reason}")


def _error(name: str, metric_type: MetricType, why: str) -> MetricRecord:
    return MetricRecord(name=name, type=metric_type, verdict=Verdict.ERROR,
                        stable=ArmValue(None, 0), canary=ArmValue(None, 0),
                        reason=f"the metric provider failed: {why}")


def final_decision(record: AnalysisRecord, policy: OnInconclusive) -> AnalysisDecision:
    """What the rollout does with a record: inconclusive turns into the spec's policy
    (pause stays inconclusive, for a person to decide), except that too little data never
    rolls back: it stays inconclusive, for a person."""
    if record.decision is not AnalysisDecision.INCONCLUSIVE:
        return record.decision
    if record.starved and policy is OnInconclusive.ROLLBACK:
        return AnalysisDecision.INCONCLUSIVE
    return {OnInconclusive.PROMOTE: AnalysisDecision.PROMOTE,
            OnInconclusive.ROLLBACK: AnalysisDecision.ROLLBACK,
            OnInconclusive.PAUSE: AnalysisDecision.INCONCLUSIVE}[policy]

