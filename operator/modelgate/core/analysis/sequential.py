"""Always-valid confidence sequences for an asymptotically normal estimate.

The analysis looks at its data every interval for as long as a rollout lasts. A fixed-sample
test looked at that often rolls back a good canary far more often than its nominal α. A
confidence sequence instead holds at every look at once: with probability at least 1 - α the
true value is inside the interval at every time, so acting the first time the interval clears
a boundary keeps the error rate at α however often one looks.

Method: the mixture sequential probability ratio test (Robbins 1970; Johari et al. 2017,
"Peeking at A/B tests"), used in its asymptotic form (Waudby-Smith et al. 2021, "Time-uniform
central limit theory"). For an estimate θ̂ with variance V, the likelihood ratio of θ against
θ̂, averaged over a normal prior N(θ, τ²) on the effect, is

    Λ(θ) = sqrt(V / (V + τ²)) · exp(τ² (θ̂ - θ)² / (2 V (V + τ²)))

a nonnegative martingale under θ, so by Ville's inequality it exceeds 1/α with probability at
most α, ever. The confidence sequence is {θ : Λ(θ) < 1/α}. Every decision here is one-sided
(is the canary worse by more than the tolerance? is it confidently within it?), so the prior is
half-normal on the tested side, which multiplies Λ by 2Φ(·) and tightens each bound at no cost
in validity. One τ is tight only near the sample
size where effects of size τ become visible; this module averages Λ over a small grid of τ
(an average of martingales is one), so large effects are caught early and small ones later,
at the cost of log(len(grid)) in the threshold.

Written here rather than taken from a library: no maintained Python package offers a
two-sample mixture confidence sequence with plug-in variances (confseq covers one-sample
bounded means only), and the whole method is the formula above plus a root finder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.optimize import brentq
from scipy.special import log_ndtr

MIN_VARIANCE = 1e-12


@dataclass(frozen=True)
class Interval:
    """A confidence interval (from a confidence sequence) around an estimate."""

    estimate: float
    lower: float
    upper: float


def half_width(variance: float, alpha: float, scales: Sequence[float]) -> float:
    """Half-width w of a one-sided bound: P(ever θ̂ - w > θ) ≤ α (and, by symmetry,
    P(ever θ̂ + w < θ) ≤ α).

    The mixture is over a half-normal prior on effects in the tested direction, which gives
    Λ₊(θ̂ - θ = w) = 2 Φ(w τ / sqrt(V (V + τ²))) · sqrt(V / (V + τ²)) ·
                     exp(τ² w² / (2 V (V + τ²)))
    (the two-sided mixture times 2Φ(·)); averaged over `scales`, solved for Λ₊ = 1/α.
    """
    if not scales:
        raise ValueError("scales must not be empty")
    v = max(variance, MIN_VARIANCE)
    threshold = math.log(1.0 / alpha)
    # log Λ_j(w) = log 2 + log Φ(c_j w) + a_j + b_j w²
    a = [0.5 * math.log(v / (v + tau * tau)) for tau in scales]
    b = [tau * tau / (2.0 * v * (v + tau * tau)) for tau in scales]
    c = [tau / math.sqrt(v * (v + tau * tau)) for tau in scales]

    def log_mean_lambda(w: float) -> float:
        exponents = [math.log(2.0) + float(log_ndtr(c_j * w)) + a_j + b_j * w * w
                     for a_j, b_j, c_j in zip(a, b, c, strict=True)]
        top = max(exponents)
        return top + math.log(sum(math.exp(e - top) for e in exponents) / len(exponents))

    # Λ₊ grows with w. At w = 0 it is below 1 ≤ 1/α. It reaches 1/α no later than where the
    # two-sided term of any one scale alone reaches len(scales)/α (there 2Φ(·) ≥ 1).
    high = min(math.sqrt((threshold + math.log(len(scales)) - a_j) / b_j)
               for a_j, b_j in zip(a, b, strict=True))
    return float(brentq(lambda w: log_mean_lambda(w) - threshold, 0.0, high, xtol=1e-12,
                        rtol=1e-10))


def confidence_sequence(estimate: float, variance: float, alpha: float,
                        scales: Sequence[float]) -> Interval:
    """Always-valid bounds on the quantity `estimate` estimates: the lower bound is above it
    with probability at most α, at any time; so is the upper bound below it."""
    width = half_width(variance, alpha, scales)
    return Interval(estimate=estimate, lower=estimate - width, upper=estimate + width)


def scale_grid(smallest: float, steps: int = 5) -> tuple[float, ...]:
    """Mixing scales smallest, 2·smallest, 4·smallest, ...: effects from the tolerance up to
    16 times it are each caught near the fastest rate a single tuned test would allow."""
    return tuple(smallest * 2.0**k for k in range(steps))
