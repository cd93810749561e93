"""status of a ModelDeployment (a dict) <-> the core's RolloutState, and the judge's decision
record -> status.analysis (the same shape `modelgate analyze` prints).

Status is the operator's memory: a restarted operator reads it back and continues, so every
field the core needs round-trips exactly. Times are RFC 3339 in status and seconds since the
epoch in the core.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from modelgate import api
from modelgate.core.analysis import AnalysisRecord, MetricRecord, Window
from modelgate.core.analysis.sequential import Interval
from modelgate.core.state import (
    CanaryState,
    Condition,
    Controls,
    HistoryEntry,
    Outcome,
    Rejection,
    RolloutState,
    StableState,
)
from modelgate.core.types import ModelFormat, ModelSource, Phase, ServingSpec


def to_time(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def from_time(text: Any) -> float:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a time")
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- status -> state ------------------------------------------------------------------------

def _window(data: Any) -> Window:
    """The stored analysis window; a damaged one starts the analysis over (which only delays
    a decision) rather than stopping the rollout."""
    try:
        return Window.from_json(data or {})
    except ValueError:
        return Window()


def _model(data: Mapping[str, Any]) -> ModelSource:
    return ModelSource(
        version=str(data["version"]), uri=str(data["uri"]), sha256=data.get("sha256"),
        format=ModelFormat(data.get("format", ModelFormat.SKOPS.value)),
        trusted=bool(data.get("trusted", False)),
        trusted_types=tuple(str(name) for name in data.get("trustedTypes") or ()),
    )


def _serving(data: Any, path: str) -> ServingSpec | None:
    """An arm's serving section as status keeps it; None when absent (a status written before
    serving changes were canaried)."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} is not an object")
    try:
        return api.parse_serving(data, path)
    except api.SpecError as exc:
        raise ValueError("; ".join(exc.problems)) from exc


def state_from_status(status: Mapping[str, Any] | None) -> RolloutState:
    """The core's state from status; ValueError if status was damaged beyond reading."""
    status = status or {}
    try:
        stable_data = status.get("stable")
        stable = None
        if stable_data and stable_data.get("version") and stable_data.get("uri"):
            stable = StableState(model=_model(stable_data),
                                 since=from_time(stable_data.get("since")),
                                 serving=_serving(stable_data.get("serving"),
                                                  "status.stable.serving"))
        canary = None
        canary_data = status.get("canary")
        if canary_data and canary_data.get("version") and canary_data.get("uri"):
            last = canary_data.get("lastAnalysisAt")
            canary = CanaryState(
                model=_model(canary_data),
                started_at=from_time(canary_data.get("startedAt")),
                step_index=int(canary_data.get("stepIndex", 0)),
                step_started_at=from_time(canary_data.get("stepStartedAt")),
                desired_weight=int(canary_data.get("desiredWeight", 0)),
                weight=int(canary_data.get("weight", 0)),
                promoting=bool(canary_data.get("promoting", False)),
                held=canary_data.get("held"),
                paused=bool(canary_data.get("paused", False)),
                last_analysis_at=None if last is None else from_time(last),
                provider_errors=int(canary_data.get("providerErrors", 0)),
                window=_window(canary_data.get("window")),
                passed=tuple(str(name) for name in canary_data.get("passed") or ()),
                serving=_serving(canary_data.get("serving"), "status.canary.serving"),
            )
        rejected = tuple(
            Rejection(model_hash=str(item["modelHash"]), version=str(item["version"]),
                      sha256=item.get("sha256"), reason=str(item.get("reason", "")),
                      at=from_time(item["at"]), serving_hash=item.get("servingHash"))
            for item in status.get("rejected", []) if item.get("modelHash"))
        history = tuple(
            HistoryEntry(version=str(item["version"]), outcome=Outcome(item["outcome"]),
                         reason=str(item.get("reason", "")), at=from_time(item["at"]))
            for item in status.get("history", []))
        conditions = tuple(
            Condition(type=str(item["type"]), status=str(item["status"]),
                      reason=str(item.get("reason", "")), message=str(item.get("message", "")),
                      last_transition=from_time(item["lastTransitionTime"]),
                      observed_generation=item.get("observedGeneration"))
            for item in status.get("conditions", []))
        control = status.get("controls") or {}
        phase = status.get("phase")
        return RolloutState(
            phase=Phase(phase) if phase else Phase.PENDING,
            message=str(status.get("message", "")),
            observed_generation=status.get("observedGeneration"),
            spec_hash=status.get("specHash"),
            stable=stable, canary=canary, rejected=rejected, history=history,
            conditions=conditions,
            controls=Controls(promote=control.get("promote"), abort=control.get("abort"),
                              retry=control.get("retry")),
            analysis=status.get("analysis"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"status cannot be read back: {exc!r}") from exc


# --- state -> status ------------------------------------------------------------------------

def _model_status(model: ModelSource) -> dict[str, Any]:
    # every key, None included: a merge patch must remove what the previous model had
    return {"version": model.version, "uri": model.uri, "sha256": model.sha256,
            "format": model.format.value, "trusted": model.trusted,
            "trustedTypes": list(model.trusted_types) or None}


def serving_to_status(serving: ServingSpec | None) -> dict[str, Any] | None:
    """An arm's serving section in spec.serving's own shape (replicas left out: the count
    always comes from the current spec), so a restarted operator rebuilds the arm exactly."""
    if serving is None:
        return None
    env: list[dict[str, Any]] = []
    for variable in serving.env:
        if variable.value_from is not None:
            ref = variable.value_from
            env.append({"name": variable.name, "valueFrom": {f"{ref.kind}KeyRef": {
                "name": ref.name, "key": ref.key}}})
        else:
            env.append({"name": variable.name, "value": variable.value or ""})
    resources = {key: dict(values) for key, values in (
        ("requests", serving.resources.requests), ("limits", serving.resources.limits))
        if values}
    return {"image": serving.image, "imagePullPolicy": serving.image_pull_policy,
            "port": serving.port, "workers": serving.workers, "resources": resources,
            "env": env, "batching": {"mode": serving.batching.mode.value,
                                     "maxBatchSize": serving.batching.max_batch_size,
                                     "maxWait": _exact_duration(
                                         serving.batching.max_wait_seconds)}}


def _exact_duration(seconds: float) -> str:
    """A duration that reads back as exactly `seconds` (whole nanoseconds, as the API reads
    them), so an arm's serving hash survives a trip through status."""
    nanoseconds = round(seconds * 1e9)
    millis, rest = divmod(nanoseconds, 1_000_000)
    return f"{millis}ms" if not rest else f"{millis}.{rest:06d}ms"


def status_from_state(state: RolloutState, record: AnalysisRecord | None = None,
                      judged_at: float | None = None) -> dict[str, Any]:
    """The whole status to write; `record` is this tick's AnalysisRecord, if any. Fields that
    no longer apply are written as None, so a merge patch removes them."""
    analysis: Any = state.analysis
    if record is not None:
        analysis = analysis_record_to_status(record)
        if judged_at is not None:
            analysis["time"] = to_time(judged_at)
    canary = state.canary
    canary_status: dict[str, Any] | None = None
    if canary is not None:
        canary_status = {
            **_model_status(canary.model),
            "weight": canary.weight, "desiredWeight": canary.desired_weight,
            "stepIndex": canary.step_index, "stepStartedAt": to_time(canary.step_started_at),
            "startedAt": to_time(canary.started_at), "promoting": canary.promoting,
            "paused": canary.paused, "held": canary.held,
            "lastAnalysisAt": None if canary.last_analysis_at is None
            else to_time(canary.last_analysis_at),
            "providerErrors": canary.provider_errors,
            "window": canary.window.to_json(),
            "passed": list(canary.passed),
            "serving": serving_to_status(canary.serving),
        }
    return {
        "phase": state.phase.value,
        "message": state.message,
        "observedGeneration": state.observed_generation,
        "specHash": state.spec_hash,
        "stable": None if state.stable is None else {
            **_model_status(state.stable.model), "since": to_time(state.stable.since),
            "serving": serving_to_status(state.stable.serving)},
        "canary": canary_status,
        "rejected": [{"version": r.version, "modelHash": r.model_hash, "reason": r.reason,
                      "at": to_time(r.at), **({"sha256": r.sha256} if r.sha256 else {}),
                      **({"servingHash": r.serving_hash} if r.serving_hash else {})}
                     for r in state.rejected],
        "history": [{"version": h.version, "outcome": h.outcome.value, "reason": h.reason,
                     "at": to_time(h.at)} for h in state.history],
        "analysis": analysis,
        "conditions": [{"type": c.type, "status": c.status, "reason": c.reason,
                        "message": c.message, "lastTransitionTime": to_time(c.last_transition),
                        **({"observedGeneration": c.observed_generation}
                           if c.observed_generation is not None else {})}
                       for c in state.conditions],
        "controls": {key: value for key, value in (
            ("promote", state.controls.promote), ("abort", state.controls.abort),
            ("retry", state.controls.retry)) if value},
    }


# --- decision record -> status -----------------------------------------------------------

def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: they become null."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)


def _effect(interval: Interval | None) -> dict[str, float | None] | None:
    if interval is None:
        return None
    return {"estimate": _finite(interval.estimate), "lower": _finite(interval.lower),
            "upper": _finite(interval.upper)}


def metric_record_to_status(record: MetricRecord) -> dict[str, Any]:
    """One metric's record in the shape of status.analysis.metrics[] (camelCase, JSON-safe)."""
    result: dict[str, Any] = {
        "name": record.name,
        "type": record.type.value,
        "verdict": record.verdict.value,
        "stable": {"value": _finite(record.stable.value), "samples": record.stable.samples},
        "canary": {"value": _finite(record.canary.value), "samples": record.canary.samples},
        "statistic": _finite(record.statistic),
        "effect": _effect(record.effect),
        "requiredSamples": record.required_samples,
        "secondsToDecision": _finite(record.seconds_to_decision),
        "resolution": None if record.resolution is None else {
            "stableBound": record.resolution.stable_bound,
            "canaryBound": record.resolution.canary_bound,
            "testedTolerance": record.resolution.tested_tolerance},
        "reason": record.reason,
    }
    return {key: value for key, value in result.items() if value is not None}


def analysis_record_to_status(record: AnalysisRecord) -> dict[str, Any]:
    """The judge's record in the shape of status.analysis (without its time)."""
    return {
        "decision": record.decision.value,
        "reason": record.reason,
        "elapsedSeconds": record.elapsed_seconds,
        **({"canaryRate": _finite(record.canary_rate)} if record.canary_rate is not None
           else {}),
        **({"look": record.look, "looks": record.looks} if record.look is not None else {}),
        "metrics": [metric_record_to_status(metric) for metric in record.metrics],
    }
