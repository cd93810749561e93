"""One check per metric type: two one-sided tests against the plan's boundaries.

Every comparative check asks two questions at every look, each a one-sided test whose
critical value comes from the plan (see `sequential`):

- **Is the canary worse than stable at all?** A test of "no worse" (θ ≤ 0) with the metric's
  share of α. Crossing it is `fail` and rolls back. An identical canary crosses it with
  probability at most α over the whole analysis.
- **Is the canary within the tolerance?** A test of "worse by the tolerance or more" (θ ≥ δ)
  with budget β. Crossing it is `pass`. A canary worse by the tolerance passes with
  probability at most β, so it is promoted with probability at most β.

Between "identical" and "worse by the tolerance" either decision may come, the classical
indifference zone of a sequential test between two hypotheses (Wald's SPRT, and the
group-sequential tests that truncate it). When both are crossed at once the canary is
confidently worse than stable but confidently within tolerance, which the tolerance allows:
`pass`. Too few samples is `no-data`, which holds the rollout and never rolls back.

Per type (docs/analysis.md says why):
- errorRate and accuracy: two proportions. The "no worse" test uses the pooled proportion's
  variance (the variance under its hypothesis), the "within tolerance" test each arm's own
  (Wald), both with one success and one failure added per arm (Agresti-Caffo) so zero errors
  in a small sample is not certainty.
- latency: distribution-free, on the histogram's bucket bounds only (no interpolation):
  with b a bucket bound just below stable's quantile, "no worse" compares both arms' shares
  above b; "within tolerance" asks whether the canary's share above B (the largest bound at
  most (1 + tolerance) b) is confidently below stable's share above b. That is what a
  quantile within the tolerance means, whatever the distribution. The buckets bound what can
  be proven: the record names b, B and the tolerance actually tested, B / b - 1.
- predictionDistribution: "no worse" is the chi-squared test of homogeneity of the two arms'
  class (or value-bucket) counts, at the look's nominal level; "within tolerance" is an upper
  bound on the population stability index (PSI) from its delta-method variance.
- prometheus: the user's query against an absolute range; no sampling model, so no error
  rates: inside passes, outside fails.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from scipy.stats import chi2, norm

from modelgate.core.analysis.observations import ArmObservation, Histogram
from modelgate.core.analysis.records import ArmValue, LatencyResolution, MetricRecord, Verdict
from modelgate.core.analysis.sequential import Interval, Plan
from modelgate.core.types import MetricSpec, MetricType

PSI_FLOOR = 1e-4
"""Smallest share used in PSI's logarithm, so an empty bin does not make PSI infinite."""
MIN_BIN_SHARE = 0.02
"""Classes or value bins with less of stable's mass than this are pooled into one bin."""
MAX_SCALE_UP = 1_000.0
"""Give up estimating the time to a verdict beyond this many times the current window."""
BOUND_SLACK = 1e-4
"""Relative slack when matching bucket bounds (the server rounds them to 6 digits)."""


@dataclass(frozen=True)
class Design:
    """What a check needs of the analysis: its plan, its budgets, how long it has run."""

    plan: Plan
    alpha: float
    """This metric's budget for rolling back a canary as good as stable."""
    beta: float
    """Budget for passing a canary worse than stable by the tolerance."""
    window_seconds: float
    """Seconds the window has collected for; the traffic rate is samples / this."""

    def fail_critical(self, plan: Plan) -> float:
        return plan.critical(self.alpha)

    def pass_critical(self, plan: Plan, reach: float | None = None) -> float:
        return plan.critical(self.beta, reach)


@dataclass(frozen=True)
class Tested:
    """One look's result of a check on (scaled) counts."""

    verdict: Verdict
    interval: Interval | None = None
    statistic: float | None = None


Test = Callable[[float, Plan], Tested]
"""A check's test on every count multiplied by m, at a look of the plan."""


def _adjusted(successes: float, trials: float) -> float:
    return (successes + 1.0) / (trials + 2.0)


def _verdict(interval: Interval, tolerance: float) -> Verdict:
    if interval.upper < tolerance:
        return Verdict.PASS  # within tolerance wins over "worse, but within it"
    if interval.lower > 0.0:
        return Verdict.FAIL
    return Verdict.CONTINUE


# --- what is still needed: the time to a verdict ---------------------------------------------

def _forecast(test: Test, design: Design, canary_samples: float) -> tuple[int | None,
                                                                          float | None]:
    """Extra canary samples and seconds until `test` would decide if traffic stays at its
    current rate and the estimate where it is now; (None, None) when out of sight or there is
    no traffic to extrapolate from. Within the plan every later look is tried with its own
    critical value; beyond it, the last look's."""
    window = design.window_seconds
    if canary_samples <= 0 or window <= 0:
        return None, None
    plan = design.plan

    def decided(extra: float) -> bool:
        verdict = test((window + extra) / window, plan.later(extra)).verdict
        return verdict in (Verdict.PASS, Verdict.FAIL)

    remaining = plan.looks - plan.look
    extra: float | None = None
    for step in range(1, remaining + 1):
        if decided(step * plan.interval_seconds):
            extra = step * plan.interval_seconds
            break
    if extra is None:
        high = max(remaining * plan.interval_seconds, window, plan.interval_seconds)
        while not decided(high):
            high *= 2.0
            if high > window * MAX_SCALE_UP:
                return None, None
        low = high / 2.0
        for _ in range(16):
            middle = (low + high) / 2.0
            if decided(middle):
                high = middle
            else:
                low = middle
        extra = high
    return max(1, math.ceil(canary_samples * extra / window)), extra


def waiting_time(seconds: float | None, rate: float | None, plan: Plan | None = None,
                 elapsed: float | None = None) -> str:
    """'about 12 more minutes at 4.1 req/s to the canary' (and whether that is past the
    plan's end)."""
    if seconds is None or rate is None:
        return ""
    text = f"about {duration_words(seconds)} more at {rate:.2g} req/s to the canary"
    if plan is not None and elapsed is not None and \
            elapsed + seconds > plan.max_duration_seconds + 1e-6:
        text += ", past the analysis' maxDuration"
    return text


def duration_words(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} seconds"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} minutes"
    return f"{seconds / 3600:.1f} hours"


def _record(metric: MetricSpec, stable: ArmValue, canary: ArmValue, test: Test,
            design: Design, explain: bool, describe: Callable[[Tested], str],
            what: str, **extra: object) -> MetricRecord:
    """Run `test` on today's data and write the record; when undecided (and asked to
    explain), add what is still needed."""
    tested = test(1.0, design.plan)
    required = seconds = None
    undecided = tested.verdict in (Verdict.CONTINUE, Verdict.NO_DATA)
    if undecided and explain:
        required, seconds = _forecast(test, design, canary.samples)
    reason = describe(tested)
    if undecided:
        rate = canary.samples / design.window_seconds if design.window_seconds > 0 else None
        if canary.samples <= 0:
            reason += (f"; the canary has had no {what} yet: at least {metric.min_samples} per "
                       "arm are needed before judging")
        elif explain and seconds is not None:
            reason += "; a verdict in " + waiting_time(
                seconds, rate, design.plan, design.plan.look * design.plan.interval_seconds)
        elif explain:
            reason += "; no verdict in sight at this traffic and effect"
    return MetricRecord(
        name=metric.name, type=metric.type, verdict=tested.verdict, stable=stable,
        canary=canary, statistic=tested.statistic, effect=tested.interval,
        required_samples=required, seconds_to_decision=seconds, reason=reason,
        **extra)  # type: ignore[arg-type]


def _short(metric: MetricSpec, stable_n: float, canary_n: float, what: str) -> str:
    short = max(metric.min_samples - canary_n, metric.min_samples - stable_n, 0)
    return (f"{canary_n:.0f} canary and {stable_n:.0f} stable {what} so far; "
            f"{metric.min_samples} per arm are needed before judging ({short:.0f} more)")


# --- two proportions: error rate, accuracy --------------------------------------------------

def check_error_rate(metric: MetricSpec, stable: ArmObservation, canary: ArmObservation,
                     design: Design, *, explain: bool = True) -> MetricRecord:
    """θ = canary error rate - stable error rate; fail when confidently above 0, pass when
    confidently below the tolerance."""
    return _two_proportions(metric, design, explain, what="requests",
                            stable_hits=stable.errors, stable_n=stable.requests,
                            canary_hits=canary.errors, canary_n=canary.requests,
                            worse_when_higher=True, noun="error rate")


def check_accuracy(metric: MetricSpec, stable: ArmObservation, canary: ArmObservation,
                   design: Design, *, explain: bool = True) -> MetricRecord:
    """θ = stable accuracy - canary accuracy (the drop); fail when confidently above 0, pass
    when confidently below the tolerance."""
    return _two_proportions(metric, design, explain, what="labelled predictions",
                            stable_hits=stable.correct, stable_n=stable.labelled,
                            canary_hits=canary.correct, canary_n=canary.labelled,
                            worse_when_higher=False, noun="accuracy")


def _two_proportions(metric: MetricSpec, design: Design, explain: bool, *, what: str,
                     stable_hits: float, stable_n: float, canary_hits: float, canary_n: float,
                     worse_when_higher: bool, noun: str) -> MetricRecord:
    tolerance = metric.tolerance or 0.0
    stable_rate = stable_hits / stable_n if stable_n else None
    canary_rate = canary_hits / canary_n if canary_n else None
    sign = 1.0 if worse_when_higher else -1.0

    def test(m: float, plan: Plan) -> Tested:
        if stable_n * m < metric.min_samples or canary_n * m < metric.min_samples:
            return Tested(Verdict.NO_DATA)
        assert stable_rate is not None
        assert canary_rate is not None
        difference = sign * (canary_rate - stable_rate)
        pooled = _adjusted((stable_hits + canary_hits) * m, (stable_n + canary_n) * m)
        null_error = math.sqrt(pooled * (1 - pooled) * (1 / (stable_n * m) + 1 / (canary_n * m)))
        p_s, p_c = _adjusted(stable_hits * m, stable_n * m), _adjusted(canary_hits * m,
                                                                       canary_n * m)
        error = math.sqrt(p_s * (1 - p_s) / (stable_n * m) + p_c * (1 - p_c) / (canary_n * m))
        # the reach from stable's spread alone, so the choice of spending is blind to θ
        reach = plan.reach(tolerance, math.sqrt(p_s * (1 - p_s) * (1 / (stable_n * m)
                                                                   + 1 / (canary_n * m))))
        interval = Interval(difference, difference - design.fail_critical(plan) * null_error,
                            difference + design.pass_critical(plan, reach) * error)
        return Tested(_verdict(interval, tolerance), interval, difference / null_error)

    change = "increase" if worse_when_higher else "drop"

    def describe(tested: Tested) -> str:
        if tested.interval is None:
            return _short(metric, stable_n, canary_n, what)
        assert stable_rate is not None
        assert canary_rate is not None
        interval = tested.interval
        rates = f"canary {noun} {canary_rate:.2%} vs stable {stable_rate:.2%}"
        bounds = (f"{change} {interval.estimate:+.2%} (bounds {interval.lower:+.2%} to "
                  f"{interval.upper:+.2%})")
        if tested.verdict is Verdict.PASS:
            return f"{rates}: {bounds}, confidently below the tolerated {tolerance:.2%}"
        if tested.verdict is Verdict.FAIL:
            return f"{rates}: {bounds}, confidently worse than stable"
        return (f"{rates}: {bounds}, not yet confidently below the tolerated "
                f"{tolerance:.2%} nor worse than stable")

    return _record(metric, ArmValue(stable_rate, int(stable_n)),
                   ArmValue(canary_rate, int(canary_n)), test, design, explain, describe, what)


# --- latency quantile -----------------------------------------------------------------------

def histogram_quantile(histogram: Histogram, quantile: float) -> float | None:
    """The quantile by linear interpolation within its bucket (as PromQL's
    histogram_quantile), or None when empty or when it falls in the +Inf bucket. Shown in
    records; the test itself uses bucket bounds only."""
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


def count_above(histogram: Histogram, bound: float, *, at_least: bool) -> float:
    """Observations above `bound`, read at a bucket bound of this histogram: the bound itself
    when it has one, else the next bound up (at_least=False: fewer counted above) or down
    (at_least=True: more counted above), so a histogram with other buckets is judged
    conservatively."""
    bounds, cumulative = histogram.bounds, histogram.cumulative
    index = bisect_left(bounds, bound * (1 - BOUND_SLACK))
    if index >= len(bounds):
        chosen = cumulative[-1] if cumulative else 0.0
    elif bounds[index] <= bound * (1 + BOUND_SLACK) or not at_least:
        chosen = cumulative[index]  # the bound itself, or the next one up
    else:
        chosen = cumulative[index - 1] if index > 0 else 0.0
    return max(histogram.count - chosen, 0.0)


@dataclass(frozen=True)
class _Bounds:
    low: float
    """Largest finite bound with stable's share above it at least 1 - q."""
    high: float
    """The next bound up (stable's quantile is in (low, high])."""


def _stable_bounds(histogram: Histogram, quantile: float) -> _Bounds | str | None:
    """The bucket bounds around stable's quantile, or why there are none."""
    rank = quantile * histogram.count
    previous = None
    for edge, cumulative in zip(histogram.bounds, histogram.cumulative, strict=True):
        if cumulative >= rank:
            if previous is None:
                return "below"
            if math.isinf(edge):
                return "above"
            return _Bounds(low=previous, high=edge)
        previous = edge
    return "above"


def _within(bounds: tuple[float, ...], limit: float) -> float | None:
    """The largest finite bound at most `limit` (with slack for rounding)."""
    index = bisect_right(bounds, limit * (1 + BOUND_SLACK)) - 1
    while index >= 0 and not math.isfinite(bounds[index]):
        index -= 1
    return bounds[index] if index >= 0 else None


def check_latency(metric: MetricSpec, stable: ArmObservation, canary: ArmObservation,
                  design: Design, *, explain: bool = True) -> MetricRecord:
    """Is the canary's q-quantile above stable's (fail), or confidently within
    (1 + tolerance) times it (pass)? Counts at bucket bounds only, distribution-free.

    θ = canary's share above b - stable's share above b, b the bound just below stable's
    quantile. fail: θ confidently above 0. pass: the canary's share above B ≤ (1 + tolerance) b
    is confidently below stable's share above b.
    """
    quantile = metric.quantile if metric.quantile is not None else 0.99
    tolerance = metric.tolerance or 0.0
    stable_n, canary_n = stable.latency.count, canary.latency.count
    stable_q = histogram_quantile(stable.latency, quantile)
    canary_q = histogram_quantile(canary.latency, quantile)
    stable_value = ArmValue(stable_q, int(stable_n))
    canary_value = ArmValue(canary_q, int(canary_n))
    label = f"p{quantile * 100:g}"
    around = _stable_bounds(stable.latency, quantile) if stable_n > 0 else None
    resolution = None
    pairs: list[tuple[float, float]] = []
    if isinstance(around, _Bounds):
        bounds = stable.latency.bounds if stable.latency.bounds == canary.latency.bounds \
            else tuple(sorted(set(stable.latency.bounds) | set(canary.latency.bounds)))
        # b is chosen from stable's own counts (the bound its share above first exceeds
        # 1 - q), which could favour a pass slightly; the simulations find no excess of false
        # promotions, and checking the next bound up as well cost a third of the power.
        high = _within(bounds, around.low * (1 + tolerance))
        if high is not None and high > around.low:
            pairs.append((around.low, high))
        if pairs:
            low, high = pairs[0]
            resolution = LatencyResolution(stable_bound=low, canary_bound=high,
                                           tested_tolerance=high / low - 1.0)

    def test(m: float, plan: Plan) -> Tested:
        if stable_n * m < metric.min_samples or canary_n * m < metric.min_samples:
            return Tested(Verdict.NO_DATA)
        if not pairs:
            return Tested(Verdict.CONTINUE)
        n_s, n_c = stable_n * m, canary_n * m
        low = pairs[0][0]
        stable_above = count_above(stable.latency, low, at_least=True) * m
        canary_above = count_above(canary.latency, low, at_least=False) * m
        difference = canary_above / n_c - stable_above / n_s
        pooled = _adjusted(stable_above + canary_above, n_s + n_c)
        null_error = math.sqrt(pooled * (1 - pooled) * (1 / n_s + 1 / n_c))
        # within tolerance: canary's share above B against stable's above b, with its margin
        margin = -math.inf
        for low_bound, high_bound in pairs:
            s_above = count_above(stable.latency, low_bound, at_least=False) * m
            c_above = count_above(canary.latency, high_bound, at_least=True) * m
            p_s, p_c = _adjusted(s_above, n_s), _adjusted(c_above, n_c)
            error = math.sqrt(p_s * (1 - p_s) / n_s + p_c * (1 - p_c) / n_c)
            # the reach from stable's own shares at b and B (blind to the canary)
            s_high = _adjusted(count_above(stable.latency, high_bound, at_least=True) * m, n_s)
            reach = plan.reach(p_s - s_high, math.sqrt(p_s * (1 - p_s) / n_s
                                                       + s_high * (1 - s_high) / n_c))
            margin = max(margin, c_above / n_c - s_above / n_s
                         + design.pass_critical(plan, reach) * error)
        # On θ's scale, pass is "θ's upper bound below the canary's share between b and B",
        # the excess the tolerance allows: upper = margin + that share.
        allowed = (canary_above - count_above(canary.latency, pairs[0][1], at_least=True)
                   * m) / n_c
        interval = Interval(difference, difference - design.fail_critical(plan) * null_error,
                            margin + allowed)
        if margin < 0:
            verdict = Verdict.PASS
        elif interval.lower > 0:
            verdict = Verdict.FAIL
        else:
            verdict = Verdict.CONTINUE
        return Tested(verdict, interval, difference / null_error)

    values = (f"canary {label} {_ms(canary_q)} vs stable {_ms(stable_q)}"
              + (f" ({canary_q / stable_q - 1.0:+.0%})"
                 if canary_q is not None and stable_q else ""))

    def describe(tested: Tested) -> str:
        if tested.verdict is Verdict.NO_DATA:
            return _short(metric, stable_n, canary_n, "requests")
        if around == "above":
            return (f"stable's {label} lies beyond the largest finite latency bucket, so it "
                    "cannot be compared; the server's buckets end too low")
        if around == "below":
            return (f"stable's {label} lies below the smallest latency bucket, so it cannot "
                    "be compared; the server's buckets start too high")
        if resolution is None:
            low = around.low if isinstance(around, _Bounds) else None
            return (f"{values}: no bucket bound within +{tolerance:.0%} above {_ms(low)}; "
                    "the buckets are too coarse to judge this tolerance")
        assert tested.interval is not None
        at = (f"at bucket bounds {_ms(resolution.stable_bound)} and "
              f"{_ms(resolution.canary_bound)} (tested tolerance "
              f"+{resolution.tested_tolerance:.1%})")
        share = (f"canary's share above {_ms(resolution.stable_bound)} "
                 f"{tested.interval.estimate:+.2%} against stable's")
        if tested.verdict is Verdict.PASS:
            return f"{values}: confidently within +{tolerance:.0%} {at}"
        if tested.verdict is Verdict.FAIL:
            return f"{values}: {share}, confidently slower than stable {at}"
        return f"{values}: {share}, not yet telling {at}"

    return _record(metric, stable_value, canary_value, test, design, explain, describe,
                   "requests", resolution=resolution)


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
    classes do not dominate PSI's variance or the chi-squared test."""
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


def _multinomial_variance(gradient: list[float], shares: list[float]) -> float:
    """gᵀ (diag(p) - p pᵀ) g: the variance of g · (share estimates) for one observation."""
    mean = sum(g * p for g, p in zip(gradient, shares, strict=True))
    return max(sum(g * g * p for g, p in zip(gradient, shares, strict=True)) - mean * mean,
               0.0)


def _psi_moments(stable_counts: list[float], canary_counts: list[float],
                 m: float) -> tuple[float, float, float]:
    """PSI's estimate, its small-sample bias and its standard error, counts scaled by m.

    Far from PSI = 0 the estimate is asymptotically normal with the delta-method variance
    (the gradient of PSI in each arm's shares, through the multinomial covariance). Near 0
    the gradient vanishes and the estimate behaves as (1/n_c + 1/n_s) times a chi-squared
    variable with k - 1 degrees of freedom: mean (k - 1)(1/n_c + 1/n_s), the bias, and
    variance 2(k - 1)(1/n_c + 1/n_s)², which is added."""
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
    return estimate, (k - 1) * spread, math.sqrt(variance)


def _pearson(stable_counts: list[float], canary_counts: list[float], m: float) -> float:
    """Pearson's chi-squared statistic of the 2 × k table, counts scaled by m."""
    stable_n, canary_n = sum(stable_counts) * m, sum(canary_counts) * m
    total = stable_n + canary_n
    statistic = 0.0
    for s_count, c_count in zip(stable_counts, canary_counts, strict=True):
        column = (s_count + c_count) * m
        if column <= 0:
            continue
        for observed, arm in ((s_count * m, stable_n), (c_count * m, canary_n)):
            expected = column * arm / total
            statistic += (observed - expected) ** 2 / expected
    return statistic


@lru_cache(maxsize=4096)
def _chi2_critical(critical: float, degrees: int) -> float:
    """The chi-squared value with the same tail probability as `critical` of the normal."""
    return float(chi2.isf(float(norm.sf(critical)), degrees))


def check_prediction_distribution(metric: MetricSpec, stable: ArmObservation,
                                  canary: ArmObservation, design: Design, *,
                                  explain: bool = True) -> MetricRecord:
    """θ = PSI between canary's and stable's predictions. fail: the chi-squared test of
    homogeneity rejects "same distribution" at the look's nominal level; pass: PSI's upper
    bound (bias-corrected estimate plus the critical value times its standard error) is below
    the tolerance."""
    tolerance = metric.tolerance or 0.0
    binned = _bins(stable, canary)
    if binned is None:
        def nothing(m: float, plan: Plan) -> Tested:
            return Tested(Verdict.NO_DATA)
        return _record(metric, ArmValue(None, 0), ArmValue(None, 0), nothing, design, explain,
                       lambda _: _short(metric, 0, 0, "predictions"), "predictions")
    labels, stable_counts, canary_counts = _pool(*binned)
    stable_n, canary_n = sum(stable_counts), sum(canary_counts)
    psi = population_stability_index(stable_counts, canary_counts)
    degrees = max(len(labels) - 1, 1)

    def test(m: float, plan: Plan) -> Tested:
        if stable_n * m < metric.min_samples or canary_n * m < metric.min_samples:
            return Tested(Verdict.NO_DATA)
        estimate, bias, error = _psi_moments(stable_counts, canary_counts, m)
        upper = estimate - bias + design.pass_critical(plan, plan.reach(tolerance,
                                                                        error)) * error
        lower = max(estimate - bias - design.fail_critical(plan) * error, 0.0)
        statistic = _pearson(stable_counts, canary_counts, m)
        interval = Interval(psi, lower, upper)
        if upper < tolerance:
            verdict = Verdict.PASS
        elif len(labels) > 1 and statistic > _chi2_critical(design.fail_critical(plan),
                                                            degrees):
            verdict = Verdict.FAIL
        else:
            verdict = Verdict.CONTINUE
        return Tested(verdict, interval, statistic)

    def describe(tested: Tested) -> str:
        if tested.interval is None:
            return _short(metric, stable_n, canary_n, "predictions")
        shifts = sorted(
            zip(labels, stable_counts, canary_counts, strict=True),
            key=lambda row: -abs(row[2] / canary_n - row[1] / stable_n))
        label, s_count, c_count = shifts[0]
        biggest = (f"largest shift {label!r}: {s_count / stable_n:.1%} of stable's predictions "
                   f"vs {c_count / canary_n:.1%} of canary's")
        bounds = f"PSI {psi:.3f} (upper bound {tested.interval.upper:.3f})"
        if tested.verdict is Verdict.PASS:
            return f"{bounds} is below the tolerated {tolerance:.3f}; {biggest}"
        if tested.verdict is Verdict.FAIL:
            return (f"{bounds}: the distributions differ (chi-squared {tested.statistic:.1f} "
                    f"on {degrees} degrees of freedom); {biggest}")
        return f"{bounds} not yet below the tolerated {tolerance:.3f} nor shown to differ"

    return _record(metric, ArmValue(None, int(stable_n)), ArmValue(psi, int(canary_n)),
                     test, design, explain, describe, "predictions")


# --- custom Prometheus query ----------------------------------------------------------------

def check_threshold(metric: MetricSpec, value: float | None,
                    stable: float | None = None) -> MetricRecord:
    """A user's query about the canary: within an absolute range (thresholdRange), or, with a
    tolerance instead, at most that much above the same query's value for stable."""
    if metric.threshold is None:
        return _check_against_stable(metric, value, stable)
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


def _check_against_stable(metric: MetricSpec, value: float | None,
                          stable: float | None) -> MetricRecord:
    tolerance = metric.tolerance or 0.0
    missing = [arm for arm, found in (("canary", value), ("stable", stable))
               if found is None or math.isnan(found)]
    if missing:
        return MetricRecord(
            name=metric.name, type=metric.type, verdict=Verdict.NO_DATA,
            stable=ArmValue(stable, 0 if stable is None else 1),
            canary=ArmValue(value, 0 if value is None else 1),
            reason=f"the query returned no value yet for {' and '.join(missing)}")
    assert value is not None
    assert stable is not None
    increase = value - stable
    within = increase <= tolerance
    return MetricRecord(
        name=metric.name, type=metric.type, verdict=Verdict.PASS if within else Verdict.FAIL,
        stable=ArmValue(stable, 1), canary=ArmValue(value, 1), statistic=increase,
        reason=f"canary {value:g} vs stable {stable:g}: increase {increase:+g} is "
               f"{'within' if within else 'above'} the tolerated {tolerance:g}")


Check = Callable[..., MetricRecord]
CHECKS: Mapping[MetricType, Check] = {
    MetricType.ERROR_RATE: check_error_rate,
    MetricType.LATENCY: check_latency,
    MetricType.PREDICTION_DISTRIBUTION: check_prediction_distribution,
    MetricType.ACCURACY: check_accuracy,
}
"""The comparative checks, by metric type (prometheus metrics use check_threshold)."""
