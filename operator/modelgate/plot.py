"""Decision plots: `modelgate analyze ... --plot FILE.png` (from a tape) and `modelgate plot
NAME -o FILE.png` (from a live rollout).

Per metric, two panels over time: the stable and canary values (with sample sizes), and the
canary's effect θ (how much worse than stable) with its interval against the two lines that
decide: 0 (an interval wholly above it: worse at all, `fail`) and the tolerance δ (an interval
wholly below it: within tolerance, `pass`). With a live rollout a top panel shows the canary's
asked and achieved weight per step. A vertical line marks the decision, and the title names
it and its reason. matplotlib draws headless (Agg); it is the `plot` extra of the package.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UNITS = {"errorRate": "share of 5xx answers", "latency": "seconds",
         "predictionDistribution": "PSI against stable", "accuracy": "share correct",
         "prometheus": "value"}
"""The unit of a metric type's values."""
EFFECTS = {"errorRate": "increase of the 5xx share", "latency": "relative increase",
           "predictionDistribution": "PSI", "accuracy": "decrease of the share correct"}
"""What a metric type's effect θ (how much worse the canary is) measures, as its tolerance
does (core.types.DEFAULT_TOLERANCES)."""


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed (the package's `plot` extra)."""


@dataclass
class Look:
    """One analysis: the status.analysis (or replay line) shape, at `t` seconds."""

    t: float
    metrics: Sequence[Mapping[str, Any]]
    weight: int | None = None
    desired_weight: int | None = None
    step: int | None = None


@dataclass
class Decision:
    t: float
    decision: str
    reason: str


@dataclass
class Story:
    """Everything a plot shows."""

    title: str
    looks: list[Look] = field(default_factory=list)
    decision: Decision | None = None
    declared: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """metric name -> its spec (type, tolerance, thresholdRange)."""
    steps: Sequence[str] = ()


def from_replay(title: str, declared: Mapping[str, Mapping[str, Any]],
                lines: Iterable[Mapping[str, Any]]) -> Story:
    """The story of `modelgate analyze`'s output lines; `declared` as `declared_metrics`
    gives, or from the parsed spec (with its defaults) as the CLI does."""
    story = Story(title=title, declared=declared)
    for line in lines:
        if line.get("final"):
            story.decision = Decision(float(line["t"]), str(line["decision"]),
                                      str(line.get("reason", "")))
        else:
            story.looks.append(Look(t=float(line["t"]), metrics=line.get("metrics") or []))
    return story


def declared_metrics(spec_body: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    spec = spec_body.get("spec") or {}
    return {str(metric.get("name")): metric
            for metric in (spec.get("analysis") or {}).get("metrics") or []}


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def draw(story: Story, path: Path) -> dict[str, Any]:
    """Write the plot of `story` to `path` (PNG, or what its suffix says); returns what it
    drew in words (the headline, each panel's title and legend), for tests and logs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailableError("plots need matplotlib: pip install 'modelgate[plot]'") from exc

    names: list[str] = []
    for look in story.looks:
        for metric in look.metrics:
            if metric.get("name") not in names:
                names.append(str(metric.get("name")))
    weights = [look for look in story.looks if look.weight is not None]
    rows = len(names) + (1 if weights else 0)
    figure, axes = plt.subplots(max(rows, 1), 2, figsize=(13, 2.9 * max(rows, 1) + 1.2),
                                squeeze=False, sharex=True)
    row = 0
    if weights:
        ax = axes[0][0]
        times = [look.t for look in weights]
        ax.step(times, [look.weight for look in weights], where="post", color="tab:orange",
                marker="o", label="canary weight (achieved)")
        ax.step(times, [look.desired_weight for look in weights], where="post",
                color="tab:gray", linestyle="--", marker="x", label="weight the step asks")
        ax.set_ylabel("canary weight (%)")
        ax.set_ylim(-5, 105)
        ax.set_title("Steps and weights", loc="left", fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
        step_ax = axes[0][1]
        step_ax.step(times, [(look.step or 0) + 1 for look in weights], where="post",
                     color="tab:purple", marker="o")
        step_ax.set_ylabel("step")
        if story.steps:
            step_ax.set_yticks(range(1, len(story.steps) + 1),
                               [f"{number}. {words}" for number, words in
                                enumerate(story.steps, start=1)], fontsize=7)
        step_ax.set_title("Current step", loc="left", fontsize=10)
        row = 1
    for name in names:
        declared = story.declared.get(name) or {}
        kind = str(declared.get("type", ""))
        unit = UNITS.get(kind, "value")
        series = [(look.t, metric) for look in story.looks for metric in look.metrics
                  if metric.get("name") == name]
        times = [t for t, _ in series]
        value_ax, effect_ax = axes[row]
        for arm, color in (("stable", "tab:blue"), ("canary", "tab:red")):
            values = [_number((metric.get(arm) or {}).get("value")) for _, metric in series]
            samples = [(metric.get(arm) or {}).get("samples", 0) for _, metric in series]
            last = samples[-1] if samples else 0
            value_ax.plot(times, values, marker=".", color=color, label=f"{arm} (n={last})")
        value_ax.set_title(f"{name} ({kind or 'metric'}): values", loc="left", fontsize=10)
        value_ax.set_ylabel(unit)
        value_ax.legend(loc="best", fontsize=8)

        effects = [metric.get("effect") or {} for _, metric in series]
        estimate = [_number(effect.get("estimate")) for effect in effects]
        lower = [_number(effect.get("lower")) for effect in effects]
        upper = [_number(effect.get("upper")) for effect in effects]
        effect_ax.fill_between(times, lower, upper, color="tab:red", alpha=0.15)
        effect_ax.errorbar(times, estimate,
                           yerr=[[max(0.0, e - lo) for e, lo in zip(estimate, lower,
                                                                    strict=True)],
                                 [max(0.0, up - e) for e, up in zip(estimate, upper,
                                                                    strict=True)]],
                           marker=".", color="tab:red", ecolor="tab:red", capsize=3,
                           label="effect (canary worse by) and its interval")
        tolerance = declared.get("tolerance")
        if tolerance is not None:
            effect_ax.axhline(float(tolerance), color="tab:green", linestyle="--",
                              label=f"tolerance {float(tolerance):g}: pass below")
            effect_ax.axhline(0, color="black", linewidth=0.8,
                              label="0: fail when the interval is above")
        threshold = declared.get("thresholdRange")
        if threshold:
            for bound in ("min", "max"):
                if threshold.get(bound) is not None:
                    value_ax.axhline(float(threshold[bound]), color="tab:green",
                                     linestyle="--", label=f"threshold {bound}")
        verdicts = [str(metric.get("verdict")) for _, metric in series]
        effect_ax.set_title(f"{name}: effect, verdict {verdicts[-1] if verdicts else '-'}",
                            loc="left", fontsize=10)
        effect_ax.set_ylabel(EFFECTS.get(kind, "effect"))
        effect_ax.legend(loc="best", fontsize=8)
        row += 1
    for ax in axes[-1]:
        ax.set_xlabel("seconds since the canary started")
    headline = story.title
    if story.decision is not None:
        for ax_row in axes:
            for ax in ax_row:
                ax.axvline(story.decision.t, color="tab:purple", linestyle=":",
                           linewidth=1.5)
        headline += (f": {story.decision.decision} at {story.decision.t:g}s\n"
                     + textwrap.shorten(story.decision.reason, 180, placeholder=" …"))
    elif story.looks:
        headline += f": no decision yet ({len(story.looks)} analyses)"
    figure.suptitle(headline, fontsize=11, x=0.01, ha="left")
    figure.tight_layout(rect=(0, 0, 1, 0.96 if story.decision is None else 0.93))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    drawn = {"headline": headline, "panels": [
        {"title": ax.get_title(loc="left"), "ylabel": ax.get_ylabel(),
         "legend": [text.get_text() for text in legend.get_texts()]
         if (legend := ax.get_legend()) is not None else []}
        for ax_row in axes for ax in ax_row]}
    plt.close(figure)
    return drawn
