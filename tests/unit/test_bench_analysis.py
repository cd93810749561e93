"""The analysis benchmark runs, and its simulation means what it says (small and seeded)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from support.bench import load_bench

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    return load_bench("analysis_bench")


def test_good_canaries_at_high_traffic_are_promoted_and_none_rolled_back() -> None:
    bench = _bench()
    scenario = next(s for s in bench.scenarios(30, 30) if s.name.endswith("100 req/s"))
    result = bench.run_scenario(scenario, 30, seed=1)
    decisions = {outcome.decision for outcome in result.outcomes["modelgate"]}
    assert decisions == {"promote"}


def test_a_clear_regression_is_rolled_back_near_the_oracle() -> None:
    bench = _bench()
    scenario = next(s for s in bench.scenarios(30, 30) if s.name == "error rate 1% → 3%")
    result = bench.run_scenario(scenario, 30, seed=2)
    ticks = [o.tick for o in result.outcomes["modelgate"] if o.decision == "rollback"]
    assert len(ticks) == 30
    assert result.oracle is not None
    assert sorted(ticks)[15] <= 1.5 * result.oracle


def test_shifted_classes_reach_the_requested_psi() -> None:
    bench = _bench()
    assert abs(bench.psi(bench.shifted_classes(0.1), bench.CLASSES) - 0.1) < 1e-6
