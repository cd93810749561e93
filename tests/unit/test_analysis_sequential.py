"""The confidence sequences hold at every look at once."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelgate.core.analysis.sequential import (
    confidence_sequence,
    half_width,
    scale_grid,
)


def test_half_width_shrinks_as_the_estimate_gets_more_precise() -> None:
    scales = scale_grid(0.01)
    widths = [half_width(v, 0.01, scales) for v in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)]
    assert widths == sorted(widths, reverse=True)


def test_half_width_is_wider_than_a_fixed_sample_bound_it_replaces() -> None:
    # Validity at every look costs width: always above the one-look one-sided z bound.
    for variance in (1e-3, 1e-5):
        assert half_width(variance, 0.01, scale_grid(0.01)) > 2.326 * math.sqrt(variance)


def test_a_grid_of_scales_is_close_to_the_best_single_scale_across_its_range() -> None:
    # A single scale tau is tightest near variance tau² / 11.5 (for alpha 1%); the grid
    # 0.001..0.016 covers variances from about 1e-7 to 2e-5.
    grid = scale_grid(0.001)
    for variance in (1e-7, 1e-6, 1e-5, 2e-5):
        best = min(half_width(variance, 0.01, [tau]) for tau in np.geomspace(1e-4, 1, 200))
        assert half_width(variance, 0.01, grid) < 1.25 * best


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_each_bound_holds_at_every_look_at_once(alpha: float) -> None:
    # Paths of a running mean looked at after every one of 500 observations: the share of
    # paths whose lower bound ever rises above the true mean stays at or below alpha, and so
    # does the share whose upper bound ever falls below it.
    rng = np.random.default_rng(7)
    paths, looks, sigma = 4000, 500, 1.0
    observations = rng.normal(0.0, sigma, size=(paths, looks))
    means = np.cumsum(observations, axis=1) / np.arange(1, looks + 1)
    scales = scale_grid(0.05)
    widths = np.array([half_width(sigma**2 / n, alpha, scales) for n in range(1, looks + 1)])
    assert (means - widths > 0).any(axis=1).mean() <= alpha
    assert (means + widths < 0).any(axis=1).mean() <= alpha
    # ...whereas a fixed-sample one-sided bound looked at as often is crossed far more often
    z = {0.05: 1.645, 0.2: 0.8416}[alpha]
    naive = (means - z * sigma / np.sqrt(np.arange(1, looks + 1)) > 0).any(axis=1).mean()
    assert naive > 2 * alpha


def test_interval_is_centred_on_the_estimate() -> None:
    interval = confidence_sequence(0.3, 0.01, 0.05, scale_grid(0.1))
    assert interval.lower < 0.3 < interval.upper
    assert interval.upper - 0.3 == pytest.approx(0.3 - interval.lower)
