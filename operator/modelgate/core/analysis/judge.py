"""The judge: every metric's check, combined into one decision with its record.

Any fail rolls back; all pass promotes; anything else continues, until the maximum duration
(or the provider's error budget) runs out, which is inconclusive and left to the spec's
onInconclusive policy. Too little data and provider failures hold: they never roll back.
"""

from __future__ import annotations

from collections.abc import Mapping

from modelgate.core.analysis.checks import CHECKS, check_threshold
from modelgate.core.analysis.observations import Observation
from modelgate.core.analysis.records import (
    AnalysisDecision,
    AnalysisRecord,
    ArmValue,
    MetricRecord,
    Verdict,
)
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
    explain: bool = True,
) -> AnalysisRecord:
    """Judge the canary against stable.

    observation: both arms over the window, or None when the provider failed this time
    (provider_error says why; consecutive_provider_errors counts this failure too).
    custom_values: each prometheus metric's value for the canary (None: no value).
    explain: estimate the samples still needed for undecided metrics (costs a little time).
    """
    max_duration = (max_duration_seconds if max_duration_seconds is not None
                    else analysis.max_duration_seconds)
    # alpha bounds the chance of rolling back a good canary over the whole analysis, so it is
    # split between the statistical checks (Bonferroni): each gets alpha / their number.
    compared = sum(1 for metric in analysis.metrics if metric.type is not MetricType.PROMETHEUS)
    alpha = analysis.alpha / max(compared, 1)
    records = tuple(
        _check(metric, observation, alpha, provider_error, custom_values or {}, explain)
        for metric in analysis.metrics
    )
    failed = [r for r in records if r.verdict is Verdict.FAIL]
    if failed:
        names = ", ".join(r.name for r in failed)
        return AnalysisRecord(AnalysisDecision.ROLLBACK, f"{names} failed: {failed[0].reason}",
                              elapsed_seconds, records)
    if records and all(r.verdict is Verdict.PASS for r in records):
        return AnalysisRecord(AnalysisDecision.PROMOTE,
                              "every metric is confidently within tolerance",
                              elapsed_seconds, records)
    if consecutive_provider_errors > analysis.provider_error_limit:
        return AnalysisRecord(
            AnalysisDecision.INCONCLUSIVE,
            f"the metric provider failed {consecutive_provider_errors} times in a row, more "
            f"than the {analysis.provider_error_limit} allowed: {provider_error}",
            elapsed_seconds, records)
    pending = [r for r in records if r.verdict is not Verdict.PASS]
    waiting = "; ".join(f"{r.name}: {r.reason}" for r in pending[:3])
    if elapsed_seconds >= max_duration:
        return AnalysisRecord(
            AnalysisDecision.INCONCLUSIVE,
            f"no confident verdict within {format_seconds(max_duration)}; {waiting}",
            elapsed_seconds, records)
    return AnalysisRecord(AnalysisDecision.CONTINUE, f"waiting for evidence; {waiting}",
                          elapsed_seconds, records)


def _check(metric: MetricSpec, observation: Observation | None, alpha: float,
           provider_error: str | None, custom_values: Mapping[str, float | None],
           explain: bool) -> MetricRecord:
    if metric.type is MetricType.PROMETHEUS:
        if metric.name not in custom_values and provider_error is not None:
            return _error(metric.name, metric.type, provider_error)
        return check_threshold(metric, custom_values.get(metric.name))
    if observation is None:
        return _error(metric.name, metric.type, provider_error or "no observation")
    return CHECKS[metric.type](metric, observation.stable, observation.canary, alpha,
                               explain=explain)


def _error(name: str, metric_type: MetricType, why: str) -> MetricRecord:
    return MetricRecord(name=name, type=metric_type, verdict=Verdict.ERROR,
                        stable=ArmValue(None, 0), canary=ArmValue(None, 0),
                        reason=f"the metric provider failed: {why}")


def final_decision(record: AnalysisRecord, policy: OnInconclusive) -> AnalysisDecision:
    """What the rollout does with a record: inconclusive turns into the spec's policy
    (pause stays inconclusive, for a person to decide)."""
    if record.decision is not AnalysisDecision.INCONCLUSIVE:
        return record.decision
    return {OnInconclusive.PROMOTE: AnalysisDecision.PROMOTE,
            OnInconclusive.ROLLBACK: AnalysisDecision.ROLLBACK,
            OnInconclusive.PAUSE: AnalysisDecision.INCONCLUSIVE}[policy]

