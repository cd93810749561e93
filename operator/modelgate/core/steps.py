"""The step program: what weight each step asks for, and how a weight becomes replicas.

The `replicas` router has no mesh to split requests by percentage: it splits the declared
number of serving pods between stable and canary behind one Service, which spreads requests
evenly over ready pods. A weight is therefore only as fine as one pod, and the weight actually
achieved (from pods that are ready) is what status reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelgate.core.durations import format_seconds
from modelgate.core.types import AnalysisGate, Pause, SetWeight, Step


@dataclass(frozen=True)
class Split:
    """Replicas of each arm for one weight."""

    stable: int
    canary: int


def replica_split(total: int, weight: int) -> Split:
    """Stable and canary replicas for `weight` percent of `total` pods.

    The canary gets the nearest whole number of pods, but at least one while its weight is
    above zero (so it is analysed) and, below 100, at least one stays stable (so there is a
    comparison). With one pod in total both arms get one: capacity never drops below what was
    declared, at the price of a coarser weight.
    """
    if weight <= 0 or total <= 0:
        return Split(stable=total, canary=0)
    if weight >= 100:
        return Split(stable=0, canary=max(total, 1))
    if total == 1:
        return Split(stable=1, canary=1)
    canary = min(max((total * weight + 50) // 100, 1), total - 1)
    return Split(stable=total - canary, canary=canary)


def achieved_weight(stable_ready: int, canary_ready: int) -> int:
    """Percentage of ready pods that are canaries: the share of requests a Service gives them."""
    total = stable_ready + canary_ready
    if total == 0:
        return 0
    return round(100 * canary_ready / total)


def describe(step: Step) -> str:
    """A step as a person would write it, for messages."""
    if isinstance(step, SetWeight):
        return f"setWeight {step.weight}"
    if isinstance(step, Pause):
        if step.duration_seconds is None:
            return "pause until promoted"
        return f"pause {format_seconds(step.duration_seconds)}"
    assert isinstance(step, AnalysisGate)
    return "analysis"
