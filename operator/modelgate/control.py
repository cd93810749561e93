"""`modelgate status` and the controls (promote, abort, retry, pause, resume).

A control is an annotation, never a change of .spec, so git keeps declaring only what should
serve. promote/abort/retry write a fresh token (the time) that the operator acts on once and
records in status.controls; pause is a level ("true" while paused) that resume removes.
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Mapping
from typing import Any

from modelgate import control_annotations
from modelgate.core.analysis.checks import duration_words
from modelgate.k8s import ApiException, Cluster, load_config

VERBS = {
    "promote": "promote the canary now, skipping the remaining steps",
    "abort": "roll the canary back now",
    "retry": "try a rolled-back version again",
    "pause": "hold the step program where it is (analysis keeps running)",
    "resume": "continue a paused step program",
}
_TOKEN_ANNOTATION = {"promote": control_annotations.CONTROL_PROMOTE,
                     "abort": control_annotations.CONTROL_ABORT,
                     "retry": control_annotations.CONTROL_RETRY}


def _cluster() -> Cluster:
    load_config()
    return Cluster()


def request(verb: str, namespace: str, name: str, wait_seconds: float) -> int:
    """Set the annotation for `verb`, then wait for the operator to act and show the result."""
    cluster = _cluster()
    try:
        before = cluster.get_model_deployment(namespace, name)
    except ApiException as exc:
        print(f"modelgate {verb}: {namespace}/{name}: {exc.status} {exc.reason}",
              file=sys.stderr)
        return 1
    token = datetime.datetime.now(tz=datetime.UTC).isoformat(timespec="microseconds")
    if verb in _TOKEN_ANNOTATION:
        annotations: dict[str, str | None] = {_TOKEN_ANNOTATION[verb]: token}
    else:
        annotations = {control_annotations.CONTROL_PAUSED: "true" if verb == "pause" else None}
    if verb in ("promote", "abort", "pause", "resume") and not (before.get("status") or {}).get(
            "canary"):
        print(f"modelgate {verb}: {namespace}/{name} has no canary in flight; the request is "
              "recorded but changes nothing now", file=sys.stderr)
    cluster.annotate_model_deployment(namespace, name, annotations)
    print(f"{namespace}/{name}: {verb} requested")
    if wait_seconds <= 0:
        return 0
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        body = cluster.get_model_deployment(namespace, name)
        if _acted(verb, token, body.get("status") or {}):
            print(_summary(body))
            return 0
        time.sleep(0.5)
    print(f"modelgate {verb}: the operator has not acted within {wait_seconds:g}s; is it "
          "running?", file=sys.stderr)
    return 1


def _acted(verb: str, token: str, current: Mapping[str, Any]) -> bool:
    if verb in _TOKEN_ANNOTATION:
        return (current.get("controls") or {}).get(verb) == token
    canary = current.get("canary")
    if not canary:
        return True
    return bool(canary.get("paused")) == (verb == "pause")


def show_status(namespace: str, name: str | None) -> int:
    cluster = _cluster()
    try:
        bodies = ([cluster.get_model_deployment(namespace, name)] if name
                  else cluster.list_model_deployments(namespace))
    except ApiException as exc:
        print(f"modelgate status: {exc.status} {exc.reason}", file=sys.stderr)
        return 1
    if not bodies:
        print(f"no ModelDeployments in namespace {namespace}")
    for body in bodies:
        print(_summary(body, detail=True))
    return 0


def _summary(body: Mapping[str, Any], detail: bool = False) -> str:
    metadata = body.get("metadata") or {}
    current = body.get("status") or {}
    stable = (current.get("stable") or {}).get("version", "-")
    canary = current.get("canary") or {}
    lines = [f"{metadata.get('namespace')}/{metadata.get('name')}: "
             f"{current.get('phase', 'Pending (not yet seen by the operator)')}; stable "
             f"{stable}" + (f", canary {canary.get('version')} at {canary.get('weight', 0)}%"
                            if canary else ""),
             f"  {current.get('message', '')}"]
    if not detail:
        return "\n".join(lines)
    analysis = current.get("analysis") or {}
    if analysis:
        lines.append(f"  last analysis: {analysis.get('decision')} at "
                     f"{analysis.get('time', '?')}: {analysis.get('reason', '')}")
        for metric in analysis.get("metrics", []):
            stable_arm = metric.get("stable") or {}
            canary_arm = metric.get("canary") or {}
            lines.append(f"    {metric.get('name'):<26} {metric.get('verdict'):<9} stable "
                         f"{_number(stable_arm.get('value'))} (n={stable_arm.get('samples', 0)})"
                         f"  canary {_number(canary_arm.get('value'))} "
                         f"(n={canary_arm.get('samples', 0)})")
            seconds = metric.get("secondsToDecision")
            if metric.get("verdict") in ("continue", "no-data") and seconds is not None:
                rate = analysis.get("canaryRate")
                at = f" at {rate:.2g} req/s to the canary" if rate is not None else ""
                lines.append(f"      a verdict in about {duration_words(float(seconds))} more"
                             f"{at} (about {metric.get('requiredSamples')} more canary "
                             "samples)")
    for entry in (current.get("history") or [])[-5:]:
        lines.append(f"  {entry.get('at')}: {entry.get('version')} {entry.get('outcome')}: "
                     f"{entry.get('reason')}")
    return "\n".join(lines)


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"
