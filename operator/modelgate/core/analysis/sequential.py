"""Group-sequential boundaries for an analysis with a known plan.

The analysis looks at its data every interval up to a known maximum duration, so it has a
plan: K = maxDuration / interval looks. A fixed-sample test repeated at every look would roll
back good canaries far more often than its nominal level; an always-valid confidence sequence
(built for an unbounded horizon) keeps the level but wastes much of it on looks that never
come. A group-sequential design in between spends the error budget over the looks that will
happen (Lan and DeMets 1983): a spending function f(τ) says how much of the budget may have
been used by the fraction τ of the plan, and the critical value c_k of look k is the one at
which a standard normal statistic observed at looks 1..k crosses for the first time at look k
with probability f(τ_k) - f(τ_{k-1}). Over the whole plan it crosses with probability f(1), the
budget, however the evidence is spread. Each decision has its own budget: α for rolling back a
canary as good as stable, β for promoting one worse than stable by the tolerance.

Information is assumed to grow in proportion to time (steady traffic), so the joint law of the
statistics across looks is that of a Brownian motion seen at τ_1..τ_K, and the boundaries
depend only on the number of looks, the budget and the spending function: they are computed
once and cached. The step program's growing weights make early looks a little poorer than
that; the simulations in the tests and in `bench/analysis_bench.py` check the error rates
under both programs.

Spending function: Hwang, Shih and DeCani's f(τ) = level (1 - e^{-γτ}) / (1 - e^{-γ}). Which
γ is right depends on how much data the plan will hold. The budget α of rolling back uses
γ = -1, a little more patient than spending in proportion to time. The budget β of promoting
is spent as suits the test's reach, the distance between "identical" and "worse by the
tolerance" in standard errors with all the plan's data at today's traffic (`spending_gamma`):
a canary that will only just have enough data by the end keeps β for the last looks (γ = -6,
the last critical value about 1.74 against a single look's 1.645, so it is promoted about as
often as a fixed-sample test at the horizon would), while one with ample data spends it early
(γ = 2) and is promoted within minutes. This is the sense in which the design is tuned to the
expected sample size; the reach is estimated from stable's arm and the traffic, never from the
canary's effect.

Written here rather than taken from a library: the recursion is the textbook one (Armitage,
McPherson and Rowe 1969; Jennison and Turnbull 2000, ch. 19), a few lines of numpy, and no
maintained Python package offers group-sequential boundaries (gsDesign and rpact are R).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

SPENDING_GAMMA = -1.0
"""γ of the Hwang-Shih-DeCani spending function when the reach is not known (see the module
docstring): the budget α of rolling back."""
REACH_GAMMAS = ((2.4, -6.0), (3.4, 0.0), (6.0, 2.0))
"""(reach, γ) points, interpolated linearly and held constant beyond the ends: how patient the
spending of β is for a given reach (see `spending_gamma`)."""
GAMMA_STEP = 0.25
"""γ is rounded to this step so a handful of boundary sets serve every traffic level."""
MAX_LOOKS = 120
"""Plans with more looks use the boundaries of this many, each look at the planned look at or
after its time (a little more often than planned, so slightly above the nominal level)."""
GRID_STEPS_PER_SD = 4.0
"""Grid points per standard deviation of one look's increment, for the numerical integral."""
TAIL_SDS = 8.0
"""How far below zero the grid reaches, in standard deviations of the running sum."""


@dataclass(frozen=True)
class Interval:
    """An estimate with the bounds the two decisions compare with their boundaries."""

    estimate: float
    lower: float
    upper: float


def spent(fraction: float, level: float, gamma: float = SPENDING_GAMMA) -> float:
    """The share of `level` that may be spent by `fraction` (0..1) of the plan."""
    fraction = min(max(fraction, 0.0), 1.0)
    if abs(gamma) < 1e-9:
        return level * fraction
    return level * (1.0 - math.exp(-gamma * fraction)) / (1.0 - math.exp(-gamma))


def spending_gamma(reach: float | None) -> float:
    """γ for a test whose standardised distance between the hypotheses at the end of the plan
    (tolerance / standard error with all the plan's data, extrapolated at today's traffic) is
    `reach`. A test that will only just separate them by the end (reach about 2.4, a
    fixed-sample power of 77% at β 5%) should keep its budget for the last looks (γ = -6);
    one with ample data should spend early and decide within minutes (γ = 2); in between,
    γ = 0 (spending in proportion to time) at reach 3.4 balances the two. The reach depends
    on traffic and on the nuisance spread, estimated from stable's arm alone, never on the
    canary's effect, so the choice does not favour either decision."""
    if reach is None or not math.isfinite(reach):
        return SPENDING_GAMMA
    points = REACH_GAMMAS
    if reach <= points[0][0]:
        gamma = points[0][1]
    elif reach >= points[-1][0]:
        gamma = points[-1][1]
    else:
        gamma = points[-1][1]
        for (x0, y0), (x1, y1) in pairwise(points):
            if x0 <= reach <= x1:
                gamma = y0 + (y1 - y0) * (reach - x0) / (x1 - x0)
                break
    return round(gamma / GAMMA_STEP) * GAMMA_STEP


@lru_cache(maxsize=256)
def boundaries(looks: int, level: float, gamma: float = SPENDING_GAMMA) -> tuple[float, ...]:
    """Critical values c_1..c_K (standard-normal scale) for K equally spaced looks: a standard
    Brownian motion's Z_k = W(τ_k) / sqrt(τ_k) first exceeds c_k at look k with probability
    spent(τ_k) - spent(τ_{k-1}), so exceeds some c_k with probability spent(1) = level.

    Numerical integration of the running sum S_k = W(τ_k) over the region not yet crossed,
    look by look, on a grid (the density of S_k below its boundary is the previous density
    convolved with the Gaussian increment)."""
    if looks < 1:
        raise ValueError(f"looks must be at least 1, not {looks}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), not {level}")
    step = 1.0 / looks
    sd = math.sqrt(step)
    values: list[float] = []
    grid = weights = np.empty(0)
    before = 0.0
    for k in range(1, looks + 1):
        tau = k * step
        budget = spent(tau, level, gamma) - before
        before += budget
        if k == 1:
            critical = float(norm.isf(budget)) * math.sqrt(tau)
        else:
            mass = weights  # density × quadrature weight at each grid point

            def crossing(b: float, mass: np.ndarray = mass, grid: np.ndarray = grid) -> float:
                return float(np.sum(mass * norm.sf((b - grid) / sd)))

            if budget <= 0.0 or crossing(50.0) >= budget:
                critical = 50.0
            else:
                critical = float(brentq(lambda b, target=budget: crossing(b) - target,
                                        -50.0, 50.0, xtol=1e-7))
        values.append(critical / math.sqrt(tau))
        # density of S_k on the region not crossed (below `critical`), on a new grid
        low = -TAIL_SDS * math.sqrt(tau)
        points = max(int((critical - low) / sd * GRID_STEPS_PER_SD) + 1, 64)
        new_grid = np.linspace(low, critical, points)
        spacing = new_grid[1] - new_grid[0]
        quadrature = np.full(points, spacing)
        quadrature[0] = quadrature[-1] = spacing / 2
        if k == 1:
            density = norm.pdf(new_grid / math.sqrt(tau)) / math.sqrt(tau)
        else:
            kernel = norm.pdf((new_grid[None, :] - grid[:, None]) / sd) / sd
            density = weights @ kernel
        grid, weights = new_grid, density * quadrature
    return tuple(values)


@dataclass(frozen=True)
class Plan:
    """Where a look falls in the analysis' plan of looks."""

    looks: int
    """Looks in the whole plan (maxDuration / interval, at most MAX_LOOKS)."""
    look: int
    """This look's number, 1..looks."""
    interval_seconds: float
    """Seconds between planned looks."""
    max_duration_seconds: float

    @classmethod
    def at(cls, elapsed_seconds: float, interval_seconds: float,
           max_duration_seconds: float) -> Plan:
        """The plan of an analysis looking every `interval_seconds` for
        `max_duration_seconds`, at `elapsed_seconds`."""
        planned = max(1, math.ceil(max_duration_seconds / interval_seconds - 1e-9))
        looks = min(planned, MAX_LOOKS)
        step = max_duration_seconds / looks
        return cls(looks=looks, look=cls._look(elapsed_seconds, step, looks),
                   interval_seconds=step, max_duration_seconds=max_duration_seconds)

    @staticmethod
    def _look(elapsed_seconds: float, step: float, looks: int) -> int:
        # looks come about every interval, a little late: round to the nearest planned look
        return min(max(1, math.ceil(elapsed_seconds / step - 0.5)), looks)

    def later(self, seconds: float) -> Plan:
        """The same plan `seconds` later (the look number stops at the last)."""
        elapsed = self.look * self.interval_seconds + seconds
        return Plan(self.looks, self._look(elapsed, self.interval_seconds, self.looks),
                    self.interval_seconds, self.max_duration_seconds)

    def critical(self, level: float, reach: float | None = None) -> float:
        """The critical value of this look for a decision with error budget `level`, spent
        as suits a test of that reach (see `spending_gamma`)."""
        return boundaries(self.looks, level, spending_gamma(reach))[self.look - 1]

    def reach(self, tolerance: float, standard_error: float) -> float | None:
        """tolerance / standard error extrapolated to the end of the plan at steady
        traffic (information grows with the looks)."""
        if standard_error <= 0 or tolerance <= 0:
            return None
        return tolerance / standard_error * math.sqrt(self.looks / self.look)

    @property
    def last(self) -> bool:
        return self.look >= self.looks
