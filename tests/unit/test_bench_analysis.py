"""The analysis benchmark runs, and its simulation means what it says (small and seeded)."""

from __future__ import annotations

from types import ModuleType

import pytest
from support.bench import load_bench


def _bench() -> ModuleType:
    return load_bench("analysis_bench")


def _scenario(bench: ModuleType, name: str) -> object:
    return next(s for s in bench.scenarios() if s.name.startswith(name))


def test_good_canaries_at_high_traffic_are_promoted_and_none_rolled_back() -> None:
    bench = _bench()
    result = bench.run_scenario(_scenario(bench, "identical"), bench.STEADY, 100.0, 20, seed=1)
    decisions = {outcome.decision for outcome in result.outcomes["modelgate"]}
    assert decisions == {"promote"}


def test_a_clear_regression_is_rolled_back_and_never_promoted() -> None:
    bench = _bench()
    scenario = _scenario(bench, "errors 0.50% → 1.50%")
    result = bench.run_scenario(scenario, bench.STEPS, 50.0, 20, seed=2)
    outcomes = result.outcomes["modelgate"]
    assert [o.decision for o in outcomes] == ["rollback"] * 20
    assert result.oracle is not None
    assert result.oracle.median_tick is not None
    assert sorted(o.tick for o in outcomes)[10] <= 3 * result.oracle.median_tick


def test_no_traffic_is_never_rolled_back_and_the_reason_says_why() -> None:
    bench = _bench()
    result = bench.run_scenario(_scenario(bench, "identical"), bench.STEADY, 0.0, 3, seed=3,
                                policy=bench.OnInconclusive.ROLLBACK)
    assert {o.decision for o in result.outcomes["modelgate"]} == {"none"}
    assert all("no requests" in reason for reason in result.reasons)


def test_the_step_program_sends_the_canary_its_rate_at_the_last_weight() -> None:
    bench = _bench()
    stable, canary = bench.STEPS.rates(10.0)
    assert canary[0] == pytest.approx(10.0 / 0.6 * 0.2 * bench.INTERVAL)
    assert canary[-1] == pytest.approx(10.0 * bench.INTERVAL)
    assert stable[-1] + canary[-1] == pytest.approx(10.0 / 0.6 * bench.INTERVAL)


def test_shifted_classes_reach_the_requested_psi() -> None:
    bench = _bench()
    assert abs(bench.psi(bench.shifted_classes(0.1), bench.CLASSES) - 0.1) < 1e-6
