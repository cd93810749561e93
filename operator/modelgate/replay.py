"""Replay a tape of recorded scrapes through the judge (docs/architecture.md, contract 5).

A tape is JSON Lines, one scrape per line:
    {"t": <seconds since canary start>, "role": "stable"|"canary", "pod": "<name>",
     "text": "<Prometheus exposition of that pod at t>"}
The judge runs at every analysis interval (t = interval, 2·interval, ...) on everything
scraped up to then, exactly as the operator's analysis does, and the replay stops at the first
decision the operator would act on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

from modelgate.core.analysis import (
    AnalysisDecision,
    PodScrape,
    Role,
    final_decision,
    judge,
    observe,
)
from modelgate.core.analysis.observations import custom_values
from modelgate.core.types import ModelDeploymentSpec
from modelgate.exposition import ExpositionError, parse_exposition
from modelgate.status import analysis_record_to_status


class TapeError(ValueError):
    """A tape that cannot be replayed; the message names the line."""


def read_tape(lines: Iterable[str]) -> list[PodScrape]:
    scrapes = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TapeError(f"tape line {number}: not JSON ({exc.msg})") from exc
        if not isinstance(entry, dict):
            raise TapeError(f"tape line {number}: expected an object with t, role, pod, text")
        missing = [key for key in ("t", "role", "pod", "text") if key not in entry]
        if missing:
            raise TapeError(f"tape line {number}: missing {', '.join(missing)}")
        t = entry["t"]
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise TapeError(f"tape line {number}: t must be a number of seconds, not {t!r}")
        if entry["role"] not in ("stable", "canary"):
            raise TapeError(f"tape line {number}: role must be stable or canary, not "
                            f"{entry['role']!r}")
        if not isinstance(entry["pod"], str) or not isinstance(entry["text"], str):
            raise TapeError(f"tape line {number}: pod and text must be strings")
        try:
            samples = parse_exposition(entry["text"])
        except ExpositionError as exc:
            raise TapeError(f"tape line {number}: {exc}") from exc
        scrapes.append(PodScrape(t=float(t), role=Role(entry["role"]), pod=entry["pod"],
                                 samples=samples))
    if not scrapes:
        raise TapeError("the tape holds no scrapes")
    return scrapes


def replay(spec: ModelDeploymentSpec, scrapes: list[PodScrape]) -> Iterator[dict[str, Any]]:
    """One dict per analysis interval, then the final one ({"final": true, ...})."""
    analysis = spec.analysis
    interval = analysis.interval_seconds
    last_t = max(scrape.t for scrape in scrapes)
    ticks = [interval * k for k in range(1, int(last_t // interval) + 1)] or [last_t]
    record = None
    passed: tuple[str, ...] = ()
    for tick in ticks:
        observation = observe(scrapes, at=tick)
        record = judge(analysis, observation, elapsed_seconds=tick,
                       # a tape holds the pods' own metrics only: a Prometheus query cannot
                       # be replayed from it, so those metrics report no data (and hold)
                       custom_values=custom_values(analysis, {}), passed=passed)
        passed = record.passed
        status = analysis_record_to_status(record)
        yield {"t": tick, **status}
        decision = final_decision(record, analysis.on_inconclusive)
        if record.decision is not AnalysisDecision.CONTINUE:
            reason = record.reason
            if decision is not record.decision:
                reason = (f"inconclusive, so onInconclusive: {analysis.on_inconclusive.value} "
                          f"applies; {record.reason}")
            yield _final(decision, tick, reason, status["metrics"])
            return
    assert record is not None
    yield _final(AnalysisDecision.INCONCLUSIVE, ticks[-1],
                 f"the tape ends at {ticks[-1]:g}s before a confident verdict; {record.reason}",
                 status["metrics"])


def _final(decision: AnalysisDecision, t: float, reason: str,
           metrics: list[dict[str, Any]]) -> dict[str, Any]:
    return {"final": True, "decision": decision.value, "t": t,
            "reason": _one_sentence(reason), "metrics": metrics}


def _one_sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text.endswith(".") else text + "."
