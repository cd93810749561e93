"""Canary analysis: observations of both arms -> per-metric verdicts -> a decision record.

Pure: numpy/scipy at most, no I/O, no clock (time is always an argument).
"""

from modelgate.core.analysis.judge import final_decision, judge
from modelgate.core.analysis.observations import (
    ArmObservation,
    Histogram,
    Observation,
    PodScrape,
    Role,
    Sample,
)
from modelgate.core.analysis.records import (
    AnalysisDecision,
    AnalysisRecord,
    ArmValue,
    MetricRecord,
    Verdict,
)
from modelgate.core.analysis.window import Window, fold, observe

__all__ = [
    "AnalysisDecision",
    "AnalysisRecord",
    "ArmObservation",
    "ArmValue",
    "Histogram",
    "MetricRecord",
    "Observation",
    "PodScrape",
    "Role",
    "Sample",
    "Verdict",
    "Window",
    "final_decision",
    "fold",
    "judge",
    "observe",
]
