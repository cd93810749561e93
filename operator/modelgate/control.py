"""`modelgate status` and the controls (promote, abort, retry, pause, resume).

A control is an annotation, never a change of .spec, so git keeps declaring only what should
serve. promote/abort/retry write a fresh token (the time) that the operator acts on once and
records in status.controls; pause is a level ("true" while paused) that resume removes.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

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


OUTPUTS = ("json", "yaml")


@dataclass(frozen=True)
class Target:
    """Where a command acts, as kubectl's flags say: -n (None: the context's namespace),
    -A, --context, --kubeconfig."""

    namespace: str | None = None
    all_namespaces: bool = False
    context: str | None = None
    kubeconfig: str | None = None


def connect(target: Target) -> tuple[Cluster, str]:
    """The API client for `target`, and the namespace to act in."""
    namespace = load_config(target.context, target.kubeconfig)
    return Cluster(), target.namespace or namespace


def printable(body: Mapping[str, Any]) -> dict[str, Any]:
    """An object as `kubectl get -o` prints it: without metadata.managedFields."""
    result = dict(body)
    result["metadata"] = {key: value for key, value in (body.get("metadata") or {}).items()
                          if key != "managedFields"}
    return result


def dump(document: Any, output: str) -> str:
    if output == "json":
        return json.dumps(document, indent=4)
    return yaml.safe_dump(document, sort_keys=False).rstrip("\n")


def request(verb: str, target: Target, name: str, wait_seconds: float,
            output: str | None = None) -> int:
    """Set the annotation for `verb`, then wait for the operator to act and show the result
    (with `output`, the object as it is then, as json or yaml)."""
    cluster, namespace = connect(target)
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
    print(f"{namespace}/{name}: {verb} requested", file=sys.stderr if output else sys.stdout)
    if wait_seconds <= 0:
        if output:
            print(dump(printable(cluster.get_model_deployment(namespace, name)), output))
        return 0
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        body = cluster.get_model_deployment(namespace, name)
        if _acted(verb, token, body.get("status") or {}):
            print(dump(printable(body), output) if output else _summary(body))
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


def show_status(target: Target, name: str | None, output: str | None = None) -> int:
    """One ModelDeployment in detail, or (no name) a table of the namespace's (-A: all)."""
    cluster, namespace = connect(target)
    try:
        if name:
            bodies = [cluster.get_model_deployment(namespace, name)]
        else:
            bodies = cluster.list_model_deployments(None if target.all_namespaces
                                                    else namespace)
    except ApiException as exc:
        where = f"{namespace}/{name}" if name else (
            "all namespaces" if target.all_namespaces else f"namespace {namespace}")
        print(f"modelgate status: {where}: {exc.status} {exc.reason}", file=sys.stderr)
        return 1
    if output:
        document: Any = (printable(bodies[0]) if name else
                         {"apiVersion": "v1", "kind": "List",
                          "items": [printable(body) for body in bodies]})
        print(dump(document, output))
        return 0
    if name:
        print(_summary(bodies[0], detail=True))
    elif not bodies:
        print("no ModelDeployments" + ("" if target.all_namespaces
                                       else f" in namespace {namespace}"))
    else:
        print(table(bodies, target.all_namespaces))
    return 0


def _age(stamp: Any, now: datetime.datetime) -> str:
    try:
        then = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(bodies: Sequence[Mapping[str, Any]], namespaces: bool,
          now: datetime.datetime | None = None) -> str:
    """ModelDeployments as `kubectl get` prints a table (NAMESPACE first with -A)."""
    now = now or datetime.datetime.now(tz=datetime.UTC)
    header = [*(["NAMESPACE"] if namespaces else []), "NAME", "PHASE", "STABLE", "CANARY",
              "WEIGHT", "DECISION", "AGE"]
    rows = [header]
    for body in sorted(bodies, key=lambda item: ((item.get("metadata") or {}).get(
            "namespace", ""), (item.get("metadata") or {}).get("name", ""))):
        metadata = body.get("metadata") or {}
        current = body.get("status") or {}
        canary = current.get("canary") or {}
        rows.append([*([str(metadata.get("namespace"))] if namespaces else []),
                     str(metadata.get("name")), str(current.get("phase", "Pending")),
                     str((current.get("stable") or {}).get("version", "<none>")),
                     str(canary.get("version", "<none>")),
                     f"{canary.get('weight', 0)}%" if canary else "<none>",
                     str((current.get("analysis") or {}).get("decision", "<none>")
                         if canary else "<none>"),
                     _age(metadata.get("creationTimestamp"), now)])
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join("   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                     .rstrip() for row in rows)


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
