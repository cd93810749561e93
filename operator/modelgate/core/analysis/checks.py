"""One check per metric type: is the canary worse than stable by more than the tolerance?

Every check turns its metric into an estimate of a quantity θ with a variance, builds an
always-valid interval for θ (see `sequential`), and compares it with a boundary: `fail` when
the whole interval is beyond the boundary, `pass` when it is wholly inside, `continue`
otherwise. Too few samples is `no-data`, which holds the rollout and never rolls back.

Proportions use the Agresti-Caffo adjustment (one success and one failure added per arm) in
their variance, so zero errors in a small sample does not look like certainty.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from modelgate.core.analysis.observations import ArmObservation, Histogram
from modelgate.core.analysis.records import ArmValue, MetricRecord, Verdict
from modelgate.core.analysis.sequential import (
    Interval,
    confidence_sequence,
    half_width,
    scale_grid,
)
from modelgate.core.types import MetricSpec, MetricType

PSI_FLOOR = 1e-4
"""Smallest share used in PSI's logarithm, so an empty bin does not make PSI infinite."""
MIN_BIN_SHARE = 0.02
"""Classes or value bins with less of stable's mass than this are pooled into one bin."""
MAX_SCALE_UP = 10_000.0
"""Give up estimating required samples beyond this many times the current sample."""


def _adjusted(successes: float, trials: float) -> float:
    return (successes + 1.0) / (trials + 2.0)


def _needs_more(samples: float, minimum: int) -> bool:
    return samples < minimum


def _required_samples(canary_samples: float,
                      decided_at: Callable[[float], bool]) -> int | None:
    """Extra canary samples until `decided_at(m)` (the check with every count multiplied by m,
    the shares staying as observed) would reach a verdict; None when out of sight."""
    if decided_at(1.0):
        return 0
    high = 2.0
    while not decided_at(high):
        high *= 2
        if high > MAX_SCALE_UP:
            return None
    low = high / 2
    for _ in range(12):
        middle = (low + high) / 2
        if decided_at(middle):
            high = middle
        else:
            low = middle
    return max(1, math.ceil(canary_samples * (high - 1.0)))


def _no_data(metric: MetricSpec, stable: ArmValue, canary: ArmValue, what: str,
             interval_at: Callable[[float], Interval] | None = None,
             boundary: float = 0.0) -> MetricRecord:
    """Too few samples to judge. Says how many more canary samples are needed: at least the
    shortfall to minSamples and, when both arms have data to extrapolate from, the samples
    a verdict at the configured tolerance would likely take (`interval_at`, as in _decide)."""
    short = max(metric.min_samples - canary.samples, metric.min_samples - stable.samples, 0)
    needed = short
    if interval_at is not None and canary.samples > 0 and stable.samples > 0:
        estimate = _required_samples(
            canary.samples, lambda m: _verdict(interval_at(m), boundary) is not Verdict.CONTINUE)
        if estimate is not None:
            needed = max(short, estimate)
    at_tolerance = f", about {needed} more for a verdict" if needed > short else ""
    return MetricRecord(
        name=metric.name, type=metric.type, verdict=Verdict.NO_DATA, stable=stable,
        canary=canary, required_samples=needed,
        reason=f"{canary.samples} canary and {stable.samples} stable {what} so far; "
               f"{metric.min_samples} per arm are needed before judging ({short} more"
               f"{at_tolerance})",
    )


def _verdict(interval: Interval, boundary: float) -> Verdict:
    if interval.lower > boundary:
        return Verdict.FAIL
    if interval.upper < boundary:
        return Verdict.PASS
    return Verdict.CONTINUE


def _decide(interval_at: Callable[[float], Interval], boundary: float, canary_samples: float,
            explain: bool) -> tuple[Interval, Verdict, int | None]:
    """The interval on today's data, its verdict against `boundary`, and, when undecided and
    asked to explain, how many more canary samples would likely decide it. `interval_at(m)`
    is the interval with every count multiplied by m."""
    interval = interval_at(1.0)
    verdict = _verdict(interval, boundary)
    required = None
    if verdict is Verdict.CONTINUE and explain:
        required = _required_samples(
            canary_samples,
            lambda m: _verdict(interval_at(m), boundary) is not Verdict.CONTINUE)
    return interval, verdict, required


# --- two proportions: error rate, accuracy --------------------------------------------------

def check_error_rate(metric: MetricSpec, stable: ArmObservation, canary: ArmObservation,
                     alpha: float, *, explain: bool = True) -> MetricRecord:
    """θ = canary error rate - stable error rate; fail when θ > tolerance."""
    return _two_proportions(metric, alpha, explain, what="requests",
                            stable_hits=stable.errors, stable_n=stable.requests,
                            canary_hits=canary.errors, canary_n=canary.requests,
                            worse_when_higher=True, noun="error rate")


def check_accuracy(metric: MetricSpec, stable: ArmObservation, canary: ArmObservation,
                   alpha: float, *, explain: bool = True) -> MetricRecord:
    """θ = stable accuracy - canary accuracy (the drop); fail when θ > tolerance."""
    return _two_proportions(metric, alpha, explain, what="labelled predictions",
                            stable_hits=stable.correct, stable_n=stable.labelled,
                            canary_hits=canary.correct, canary_n=canary.labelled,
                            worse_when_higher=False, noun="accuracy")


def _two_proportions(metric: MetricSpec, alpha: float, explain: bool, *, what: str,
                     stable_hits: float, stable_n: float, canary_hits: float, canary_n: float,
                     worse_when_higher: bool, noun: str) -> MetricRecord:
    tolerance = metric.tolerance or 0.0
    stable_rate = stable_hits / stable_n if stable_n else None
    canary_rate = canary_hits / canary_n if canary_n else None
    stable_value = ArmValue(stable_rate, int(stable_n))
    canary_value = ArmValue(canary_rate, int(canary_n))
    sign = 1.0 if worse_when_higher else -1.0
    scales = scale_grid(max(tolerance, 0.001))

    def interval_at(m: float) -> Interval:
        assert stable_rate is not None
        assert canary_rate is not None
        p_s = _adjusted(stable_hits * m, stable_n * m)
        p_c = _adjusted(canary_hits * m, canary_n * m)
        variance = p_s * (1 - p_s) / (stable_n * m) + p_c * (1 - p_c) / (canary_n * m)
        return confidence_sequence(sign * (canary_rate - stable_rate), variance, alpha, scales)

    if _needs_more(stable_n, metric.min_samples) or _needs_more(canary_n, metric.min_samples):
        return _no_data(metric, stable_value, canary_value, what,
                        interval_at if explain else None, tolerance)
    assert stable_rate is not None
    assert canary_rate is not None

    interval, verdict, required = _decide(interval_at, tolerance, canary_n, explain)
    p_s, p_c = _adjusted(stable_hits, stable_n), _adjusted(canary_hits, canary_n)
    standard_error = math.sqrt(p_s * (1 - p_s) / stable_n + p_c * (1 - p_c) / canary_n)
    change = "increase" if worse_when_higher else "drop"
    rates = f"canary {noun} {canary_rate:.2%} vs stable {stable_rate:.2%}"
    bounds = f"{change} {interval.estimate:+.2%} (interval {interval.lower:+.2%} to " \
             f"{interval.upper:+.2%})"
    if verdict is Verdict.FAIL:
        reason = f"{rates}: {bounds} is above the tolerated {tolerance:.2%}"
    elif verdict is Verdict.PASS:
        reason = f"{rates}: {bounds} is within the tolerated {tolerance:.2%}"
    else:
        more = f"; about {required} more canary {what} needed" if required else ""
        reason = f"{rates}: {bounds} still straddles the tolerated {tolerance:.2%}{more}"
    return MetricRecord(
        name=metric.name, type=metric.type, verdict=verdict, stable=stable_value,
        canary=canary_value, statistic=interval.estimate / standard_error if standard_error
        else None, effect=interval, required_samples=required, reason=reason)


# --- latency quantile -----------------------------------------------------------------------

def histogram_quantile(histogram: Histogram, quantile: float) -> float | None:
    """The quantile by linear interpolation within its bucket (as PromQL's
    histogram_quantile), or None when empty or when it falls in the +Inf bucket."""
    count = histogram.count
    if count <= 0:
        return None
    rank = quantile * count
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in zip(histogram.bounds, histogram.cumulative, strict=True):
        if cumulative >= rank and cumulative > lower_count:
            if math.isinf(bound):
                return None
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                cumulative - lower_count)
        lower_bound, lower_count = bound, cumulative
    return None


def exceedance(histogram: Histogram, threshold: float) -> float:
    """Share of observations above `threshold`, interpolating linearly within its bucket."""
    count = histogram.count
    if count <= 0:
        return 0.0
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in zip(histogram.bounds, histogram.cumulative, strict=True):
        if threshold < bound:
            if math.isinf(bound):
                below = lower_count
            else:
                share = (threshold - lower_bound) / (bound - lower_bound)
                below = lower_count + (cumulative - lower_count) * max(share, 0.0)
            return max(0.0, 1.0 - below / count)
        lower_bound, lower_count = bound, cumulative
    return 0.0


def check_latency(metric: MetricSpec, stable: ArmObservation, canary: ArmObservation,
                  alpha: float, *, explain: bool = True) -> MetricRecord:
    """Is the canary's q-quantile above stable's by more than the relative tolerance?

    Equivalently: do more than a share 1 - q of canary requests take longer than
    T = (1 + tolerance) × stable's quantile? θ = canary's share above T - (1 - q), with the
    sampling error of stable's quantile (a share 1 - q of its requests) in the variance;
    fail when θ > 0, pass when θ < 0.
    """
    quantile = metric.quantile if metric.quantile is not None else 0.99
    tolerance = metric.tolerance or 0.0
    stable_n, canary_n = stable.latency.count, canary.latency.count
    stable_q = histogram_quantile(stable.latency, quantile)
    canary_q = histogram_quantile(canary.latency, quantile)
    stable_value, canary_value = ArmValue(stable_q, int(stable_n)), ArmValue(canary_q,
                                                                            int(canary_n))
    label = f"p{quantile * 100:g}"
    allowed = 1.0 - quantile
    scales = scale_grid(allowed / 4)
    threshold = (1.0 + tolerance) * stable_q if stable_q is not None else math.inf
    share_above = exceedance(canary.latency, threshold)

    def interval_at(m: float) -> Interval:
        adjusted = _adjusted(share_above * canary_n * m, canary_n * m)
        variance = (adjusted * (1 - adjusted) / (canary_n * m)
                    + quantile * allowed / (stable_n * m))
        return confidence_sequence(share_above - allowed, variance, alpha, scales)

    if _needs_more(stable_n, metric.min_samples) or _needs_more(canary_n, metric.min_samples):
        return _no_data(metric, stable_value, canary_value, "requests",
                        interval_at if explain and stable_q is not None else None)
    if stable_q is None:
        return MetricRecord(
            name=metric.name, type=metric.type, verdict=Verdict.CONTINUE, stable=stable_value,
            canary=canary_value, reason=f"stable's {label} lies beyond the largest finite "
            "latency bucket, so it cannot be compared; the server's buckets are too small")

    interval, verdict, required = _decide(interval_at, 0.0, canary_n, explain)
    relative = (canary_q / stable_q - 1.0) if canary_q is not None and stable_q > 0 else None
    values = (f"canary {label} {_ms(canary_q)} vs stable {_ms(stable_q)}"
              + (f" ({relative:+.0%})" if relative is not None else ""))
    share = (f"{share_above:.2%} of canary requests exceed {_ms(threshold)} (stable's {label} "
             f"+{tolerance:.0%}), where {allowed:.2%} may")
    if verdict is Verdict.FAIL:
        reason = f"{values}: {share}, confidently more"
    elif verdict is Verdict.PASS:
        reason = f"{values}: {share}, confidently fewer"
    else:
        more = f"; about {required} more canary requests needed" if required else ""
        reason = f"{values}: {share}, not yet telling{more}"
    variance = _adjusted(share_above * canary_n, canary_n)
    standard_error = math.sqrt(variance * (1 - variance) / canary_n
                               + quantile * allowed / stable_n)
    return MetricRecord(
        name=metric.name, type=metric.type, verdict=verdict, stable=stable_value,
        canary=canary_value, statistic=interval.estimate / standard_error, effect=interval,
        required_samples=required, reason=reason)


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.3g} ms"


# --- prediction distribution ----------------------------------------------------------------

def _bins(stable: ArmObservation, canary: ArmObservation) -> tuple[
        list[str], list[float], list[float]] | None:
    """Bin labels and counts of both arms: predicted classes, or value-histogram buckets."""
    if stable.classes or canary.classes:
        labels = sorted(set(stable.classes) | set(canary.classes))
        return (labels, [stable.classes.get(c, 0.0) for c in labels],
                [canary.classes.get(c, 0.0) for c in labels])
    if stable.prediction_values.count > 0 or canary.prediction_values.count > 0:
        bounds = sorted(set(stable.prediction_values.bounds)
                        | set(canary.prediction_values.bounds))
        stable_counts = _per_bucket(stable.prediction_values, bounds)
        canary_counts = _per_bucket(canary.prediction_values, bounds)
        return [f"≤{b:g}" for b in bounds], stable_counts, canary_counts
    return None


def _per_bucket(histogram: Histogram, bounds: list[float]) -> list[float]:
    cumulative = dict(zip(histogram.bounds, histogram.cumulative, strict=True))
    counts, previous, last = [], 0.0, 0.0
    for bound in bounds:
        last = cumulative.get(bound, last)
        counts.append(max(last - previous, 0.0))
        previous = last
    return counts


def _pool(labels: list[str], stable_counts: list[float],
          canary_counts: list[float]) -> tuple[list[str], list[float], list[float]]:
    """Pool bins holding less than MIN_BIN_SHARE of stable's mass into one bin, so rare
    classes do not dominate the interval of PSI."""
    total = sum(stable_counts) or 1.0
    keep = [i for i, count in enumerate(stable_counts) if count / total >= MIN_BIN_SHARE]
    rare = [i for i in range(len(labels)) if i not in keep]
    out_labels = [labels[i] for i in keep]
    out_stable = [stable_counts[i] for i in keep]
    out_canary = [canary_counts[i] for i in keep]
    if rare:
        out_labels.append("other" if len(rare) > 1 else labels[rare[0]])
        out_stable.append(sum(stable_counts[i] for i in rare))
        out_canary.append(sum(canary_counts[i] for i in rare))
    return out_labels, out_stable, out_canary


def _psi_term(canary_share: float, stable_share: float) -> float:
    c, s = max(canary_share, PSI_FLOOR), max(stable_share, PSI_FLOOR)
    return (c - s) * math.log(c / s)


def population_stability_index(stable_counts: list[float], canary_counts: list[float]) -> float:
    """PSI = Σ (c - s) ln(c / s) over bins, with shares floored at PSI_FLOOR."""
    stable_total, canary_total = sum(stable_counts) or 1.0, sum(canary_counts) or 1.0
    return sum(_psi_term(c / canary_total, s / stable_total)
               for s, c in zip(stable_counts, canary_counts, strict=True))


def _psi_upper(stable_counts: list[float], canary_counts: list[float], alpha: float,
               m: float) -> float:
    """Upper bound on PSI from always-valid bounds on every bin's share difference d = c - s
    (each side of each bin at α / 2k, so all hold together with probability 1 - α).

    PSI's term (c - s) ln(c / s) is convex in d and zero at d = 0, so its greatest value over
    [d_lo, d_hi] is at an end. Stable's share s is taken at its estimate, its error entering
    only at second order (stable usually has the larger sample)."""
    k = len(stable_counts)
    per_side_alpha = alpha / (2 * k)
    scales = scale_grid(0.01)
    stable_total, canary_total = sum(stable_counts) * m, sum(canary_counts) * m
    high = 0.0
    for s_count, c_count in zip(stable_counts, canary_counts, strict=True):
        s_share, c_share = s_count * m / stable_total, c_count * m / canary_total
        p_s, p_c = _adjusted(s_count * m, stable_total), _adjusted(c_count * m, canary_total)
        variance = p_s * (1 - p_s) / stable_total + p_c * (1 - p_c) / canary_total
        width = half_width(variance, per_side_alpha, scales)
        difference = c_share - s_share
        ends = [min(max(s_share + d, 0.0), 1.0) for d in (difference - width,
                                                          difference + width)]
        high += max(_psi_term(end, s_share) for end in ends)
    return high


def _psi_lower(stable_counts: list[float], canary_counts: list[float], alpha: float,
               m: float, tolerance: float) -> float:
    """Lower bound on PSI: the estimate, less its bias, less an always-valid half-width.

    Far from PSI = 0 the estimate is asymptotically normal with the delta-method variance
    (the gradient of PSI in each arm's shares, through the multinomial covariance). Near 0
    the gradient vanishes and the estimate behaves as (1/n_c + 1/n_s) times a chi-squared
    variable with k - 1 degrees of freedom: mean (k - 1)(1/n_c + 1/n_s), which is subtracted,
    and variance 2(k - 1)(1/n_c + 1/n_s)², which is added. So a good canary's small-sample
    PSI, which is all bias, is not mistaken for a shift, while a real shift is judged at the
    precision its own variance allows rather than at the worst case of every bin at once.
    """
    k = len(stable_counts)
    stable_n, canary_n = sum(stable_counts) * m, sum(canary_counts) * m
    s = [max(count * m / stable_n, PSI_FLOOR) for count in stable_counts]
    c = [max(count * m / canary_n, PSI_FLOOR) for count in canary_counts]
    estimate = sum((ci - si) * math.log(ci / si) for ci, si in zip(c, s, strict=True))
    grad_c = [math.log(ci / si) + 1.0 - si / ci for ci, si in zip(c, s, strict=True)]
    grad_s = [-math.log(ci / si) + 1.0 - ci / si for ci, si in zip(c, s, strict=True)]
    spread = 1.0 / canary_n + 1.0 / stable_n
    variance = (_multinomial_variance(grad_c, c) / canary_n
                + _multinomial_variance(grad_s, s) / stable_n
                + 2.0 * (k - 1) * spread * spread)
    width = half_width(variance, alpha, scale_grid(max(tolerance, 0.01) / 2))
    return estimate - (k - 1) * spread - width


def _multinomial_variance(gradient: list[float], shares: list[float]) -> float:
    """gᵀ (diag(p) - p pᵀ) g: the variance of g · (share estimates) for one observation."""
    mean = sum(g * p for g, p in zip(gradient, shares, strict=True))
    return max(sum(g * g * p for g, p in zip(gradient, shares, strict=True)) - mean * mean,
               0.0)


def check_prediction_distribution(metric: MetricSpec, stable: ArmObservation,
                                  canary: ArmObservation, alpha: float, *,
                                  explain: bool = True) -> MetricRecord:
    """θ = PSI between canary's and stable's predictions; fail when θ > tolerance.

    The lower end of the interval (which decides `fail`) is the bias-corrected estimate less
    an always-valid half-width (_psi_lower); the upper end (which decides `pass`) comes from
    simultaneous bounds on every bin's share difference (_psi_upper).
    """
    tolerance = metric.tolerance or 0.0
    binned = _bins(stable, canary)
    stable_n = sum(binned[1]) if binned else 0.0
    canary_n = sum(binned[2]) if binned else 0.0
    if binned is None:
        return _no_data(metric, ArmValue(None, 0), ArmValue(None, 0), "predictions")
    labels, stable_counts, canary_counts = _pool(*binned)
    psi = population_stability_index(stable_counts, canary_counts)

    def interval_at(m: float) -> Interval:
        low = max(_psi_lower(stable_counts, canary_counts, alpha, m, tolerance), 0.0)
        high = _psi_upper(stable_counts, canary_counts, alpha, m)
        return Interval(estimate=psi, lower=low, upper=high)

    if _needs_more(stable_n, metric.min_samples) or _needs_more(canary_n, metric.min_samples):
        return _no_data(metric, ArmValue(None, int(stable_n)), ArmValue(None, int(canary_n)),
                        "predictions", interval_at if explain else None, tolerance)

    interval, verdict, required = _decide(interval_at, tolerance, canary_n, explain)
    shifts = sorted(
        zip(labels, stable_counts, canary_counts, strict=True),
        key=lambda row: -abs(row[2] / canary_n - row[1] / stable_n))
    label, s_count, c_count = shifts[0]
    biggest = (f"largest shift {label!r}: {s_count / stable_n:.1%} of stable's predictions vs "
               f"{c_count / canary_n:.1%} of canary's")
    bounds = f"PSI {psi:.3f} (interval {interval.lower:.3f} to {interval.upper:.3f})"
    if verdict is Verdict.FAIL:
        reason = f"{bounds} is above the tolerated {tolerance:.3f}; {biggest}"
    elif verdict is Verdict.PASS:
        reason = f"{bounds} is within the tolerated {tolerance:.3f}; {biggest}"
    else:
        more = f"; about {required} more canary predictions needed" if required else ""
        reason = f"{bounds} still straddles the tolerated {tolerance:.3f}{more}"
    return MetricRecord(
        name=metric.name, type=metric.type, verdict=verdict,
        stable=ArmValue(None, int(stable_n)), canary=ArmValue(psi, int(canary_n)),
        statistic=psi, effect=interval, required_samples=required, reason=reason)


# --- custom Prometheus query ----------------------------------------------------------------

def check_threshold(metric: MetricSpec, value: float | None) -> MetricRecord:
    """An absolute range for a user's query about the canary; no comparison with stable."""
    threshold = metric.threshold
    low = threshold.minimum if threshold else None
    high = threshold.maximum if threshold else None
    if value is None or math.isnan(value):
        return MetricRecord(
            name=metric.name, type=metric.type, verdict=Verdict.NO_DATA,
            stable=ArmValue(None, 0), canary=ArmValue(None, 0),
            reason="the query returned no value yet")
    inside = (low is None or value >= low) and (high is None or value <= high)
    allowed = f"[{'-∞' if low is None else f'{low:g}'}, {'∞' if high is None else f'{high:g}'}]"
    return MetricRecord(
        name=metric.name, type=metric.type, verdict=Verdict.PASS if inside else Verdict.FAIL,
        stable=ArmValue(None, 0), canary=ArmValue(value, 1), statistic=value,
        reason=f"value {value:g} is {'inside' if inside else 'outside'} {allowed}")


Check = Callable[..., MetricRecord]
CHECKS: Mapping[MetricType, Check] = {
    MetricType.ERROR_RATE: check_error_rate,
    MetricType.LATENCY: check_latency,
    MetricType.PREDICTION_DISTRIBUTION: check_prediction_distribution,
    MetricType.ACCURACY: check_accuracy,
}
"""The comparative checks, by metric type (prometheus metrics use check_threshold)."""
