"""`modelgate status NAME --watch`: a rollout, live, until it ends.

On a terminal the view is redrawn in place (rich): the steps with the current one marked, the
asked and achieved weight, each arm's pods and their readiness, each metric's verdict with its
estimate, interval, tolerance and the time to a decision, the last Events. Without a terminal
(a CI log) it prints a plain line for each change instead. The exit code says how the rollout
ended (`EXIT_CODES`).
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from modelgate import plot
from modelgate.core.analysis.checks import duration_words
from modelgate.core.manifests import ROLE_LABEL
from modelgate.k8s import ApiException, Cluster
from modelgate.k8s.viewer import Viewer

EXIT_HEALTHY = 0
EXIT_ROLLED_BACK = 1
EXIT_DEGRADED = 2
EXIT_TIMEOUT = 3
EXIT_GONE = 4
EXIT_CODES = {
    EXIT_HEALTHY: "Healthy: the declared version serves all traffic",
    EXIT_ROLLED_BACK: "RolledBack: the declared version was rejected",
    EXIT_DEGRADED: "Degraded: the spec cannot be acted on or its pods cannot run",
    EXIT_TIMEOUT: "still going when --timeout ran out",
    EXIT_GONE: "the ModelDeployment does not exist (or was deleted)",
}
_ENDED = {"Healthy": EXIT_HEALTHY, "RolledBack": EXIT_ROLLED_BACK, "Degraded": EXIT_DEGRADED}


@dataclass
class Snapshot:
    """What one look at the cluster saw."""

    body: Mapping[str, Any]
    pods: Sequence[Mapping[str, Any]] = ()
    events: Sequence[Mapping[str, Any]] = ()
    at: datetime.datetime = field(
        default_factory=lambda: datetime.datetime.now(tz=datetime.UTC))


def outcome(body: Mapping[str, Any]) -> int | None:
    """The exit code if the rollout has ended, else None. Ended means: the operator has seen
    the current spec (status.observedGeneration), no canary is in flight and the phase is one
    that stays until the spec or a person changes it."""
    metadata = body.get("metadata") or {}
    current = body.get("status") or {}
    generation = metadata.get("generation")
    if generation is not None and current.get("observedGeneration") != generation:
        return None
    if current.get("canary"):
        return None
    return _ENDED.get(str(current.get("phase")))


# --- reading the view's parts --------------------------------------------------------------

def _step_words(step: Mapping[str, Any]) -> str:
    if "setWeight" in step:
        return f"setWeight {step['setWeight']}%"
    if "pause" in step:
        duration = (step.get("pause") or {}).get("duration")
        return f"pause {duration}" if duration else "pause (until promoted)"
    if "analysis" in step:
        max_duration = (step.get("analysis") or {}).get("maxDuration")
        return "analysis" + (f" (at most {max_duration})" if max_duration else "")
    return ", ".join(step)


def steps(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(mark, words) per step: "done", "current" or "" (to come, or no canary in flight)."""
    program = ((body.get("spec") or {}).get("rollout") or {}).get("steps") or []
    canary = (body.get("status") or {}).get("canary") or {}
    index = canary.get("stepIndex") if canary else None
    marks = []
    for position, step in enumerate(program):
        mark = "" if index is None else ("done" if position < index else
                                         "current" if position == index else "")
        marks.append((mark, _step_words(step)))
    return marks


def _ready(pod: Mapping[str, Any]) -> bool:
    return any(condition.get("type") == "Ready" and condition.get("status") == "True"
               for condition in (pod.get("status") or {}).get("conditions") or [])


def arms(pods: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[str, bool, str]]]:
    """role -> [(pod, ready, phase)], terminating pods left out."""
    result: dict[str, list[tuple[str, bool, str]]] = {}
    for pod in pods:
        metadata = pod.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            continue
        role = str((metadata.get("labels") or {}).get(ROLE_LABEL, "?"))
        result.setdefault(role, []).append(
            (str(metadata.get("name")), _ready(pod), str((pod.get("status") or {}).get(
                "phase", "Pending"))))
    return {role: sorted(items) for role, items in sorted(result.items())}


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def metrics(body: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per metric of the last analysis, as words."""
    spec_metrics = {metric.get("name"): metric for metric in
                    ((body.get("spec") or {}).get("analysis") or {}).get("metrics") or []}
    analysis = (body.get("status") or {}).get("analysis") or {}
    rows = []
    for metric in analysis.get("metrics") or []:
        declared = spec_metrics.get(metric.get("name")) or {}
        effect = metric.get("effect") or {}
        tolerance = declared.get("tolerance")
        threshold = declared.get("thresholdRange")
        seconds = metric.get("secondsToDecision")
        rows.append({
            "name": str(metric.get("name")),
            "verdict": str(metric.get("verdict")),
            "stable": f"{_number((metric.get('stable') or {}).get('value'))} "
                      f"(n={(metric.get('stable') or {}).get('samples', 0)})",
            "canary": f"{_number((metric.get('canary') or {}).get('value'))} "
                      f"(n={(metric.get('canary') or {}).get('samples', 0)})",
            "estimate": "-" if not effect else (
                f"{_number(effect.get('estimate'))} [{_number(effect.get('lower'))}, "
                f"{_number(effect.get('upper'))}]"),
            "tolerance": (f"{tolerance:g}" if tolerance is not None else
                          f"{threshold.get('min', '-')}..{threshold.get('max', '-')}"
                          if threshold else "-"),
            "decision": (f"~{duration_words(float(seconds))}" if seconds is not None
                         and metric.get("verdict") in ("continue", "no-data") else ""),
        })
    return rows


def _age(stamp: Any, now: datetime.datetime) -> str:
    try:
        then = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return "?"
    seconds = max(0, int((now - then).total_seconds()))
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"


def _headline(body: Mapping[str, Any]) -> tuple[str, str]:
    metadata = body.get("metadata") or {}
    current = body.get("status") or {}
    stable = (current.get("stable") or {}).get("version", "-")
    canary = current.get("canary") or {}
    where = f"{metadata.get('namespace')}/{metadata.get('name')}"
    versions = f"stable {stable}"
    if canary:
        versions += (f", canary {canary.get('version')} at {canary.get('weight', 0)}% "
                     f"(asked {canary.get('desiredWeight', 0)}%)"
                     + (", paused" if canary.get("paused") else ""))
    return where, f"{current.get('phase', 'Pending')}; {versions}"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


# --- the terminal view -----------------------------------------------------------------------

_PHASE_STYLE = {"Healthy": "bold green", "Progressing": "bold cyan", "Paused": "bold yellow",
                "RolledBack": "bold red", "Degraded": "bold red", "Pending": "bold"}
_VERDICT_STYLE = {"pass": "green", "fail": "red", "continue": "cyan", "no-data": "yellow"}


def render(snapshot: Snapshot, ended: int | None = None) -> Group:
    """The whole live view of one snapshot."""
    body = snapshot.body
    current = body.get("status") or {}
    where, line = _headline(body)
    phase = str(current.get("phase", "Pending"))
    title = Text.assemble((where, "bold"), "  ", (line, _PHASE_STYLE.get(phase, "bold")))
    parts: list[Any] = [title, Text(str(current.get("message", "")), style="dim",
                                    no_wrap=True, overflow="ellipsis")]

    step_table = Table(title="Steps", title_justify="left", show_header=False, box=None,
                       pad_edge=False)
    step_table.add_column(width=2)
    step_table.add_column()
    for number, (mark, words) in enumerate(steps(body), start=1):
        symbol = {"done": "✓", "current": "▶"}.get(mark, " ")
        step_table.add_row(symbol, Text(f"{number}. {words}",
                                        style="bold" if mark == "current" else
                                        "dim" if mark == "done" else ""))
    parts.append(step_table)

    pod_table = Table(title="Pods", title_justify="left", box=None, pad_edge=False)
    for column in ("ARM", "READY", "PODS"):
        pod_table.add_column(column)
    for role, items in arms(snapshot.pods).items():
        ready = sum(1 for _, is_ready, _ in items if is_ready)
        pod_table.add_row(role, f"{ready}/{len(items)}",
                          " ".join(f"{name}{'' if is_ready else ' (' + phase + ')'}"
                                   for name, is_ready, phase in items))
    parts.append(pod_table)

    analysis = current.get("analysis") or {}
    reason = str(analysis.get("reason") or "").split(";")[0]
    metric_table = Table(title=f"Analysis: {analysis.get('decision', 'none yet')}"
                         + (f" ({_shorten(reason, 100)})" if reason else ""),
                         title_justify="left", box=None, pad_edge=False)
    for column in ("METRIC", "VERDICT", "STABLE", "CANARY", "EFFECT [INTERVAL]", "TOLERANCE",
                   "DECISION IN"):
        metric_table.add_column(column)
    for row in metrics(body):
        metric_table.add_row(row["name"], Text(row["verdict"],
                                               style=_VERDICT_STYLE.get(row["verdict"], "")),
                             row["stable"], row["canary"], row["estimate"], row["tolerance"],
                             row["decision"])
    parts.append(metric_table)

    event_table = Table(title="Events", title_justify="left", box=None, pad_edge=False)
    for column in ("AGE", "TYPE", "REASON", "MESSAGE"):
        event_table.add_column(column)
    for event in list(snapshot.events)[-6:]:
        event_table.add_row(_age(event.get("lastTimestamp") or event.get("eventTime"),
                                 snapshot.at), str(event.get("type", "")),
                            str(event.get("reason", "")), str(event.get("message", "")))
    parts.append(event_table)
    if ended is not None:
        parts.append(Text(f"ended: {EXIT_CODES[ended]} (exit {ended})",
                          style="bold green" if ended == EXIT_HEALTHY else "bold red"))
    else:
        parts.append(Text(f"watching; updated {snapshot.at:%H:%M:%S} UTC (Ctrl-C to stop)",
                          style="dim"))
    return Group(*parts)


# --- plain lines, for logs ---------------------------------------------------------------------

def plain_lines(snapshot: Snapshot) -> list[str]:
    """The view as lines, each one standing for a fact; printing those not printed before
    gives a log of the changes."""
    body = snapshot.body
    where, line = _headline(body)
    lines = [f"{where}: {line}"]
    current_step = [f"step {number}/{len(steps(body))} {words}" for number, (mark, words)
                    in enumerate(steps(body), start=1) if mark == "current"]
    lines += [f"{where}: {text}" for text in current_step]
    for role, items in arms(snapshot.pods).items():
        ready = sum(1 for _, is_ready, _ in items if is_ready)
        lines.append(f"{where}: pods {role} {ready}/{len(items)} ready")
    for row in metrics(body):
        lines.append(f"{where}: metric {row['name']} {row['verdict']} effect {row['estimate']} "
                     f"tolerance {row['tolerance']}")
    for event in snapshot.events:
        lines.append(f"{where}: event {event.get('type')} {event.get('reason')}: "
                     f"{event.get('message')}")
    return lines


# --- the loop --------------------------------------------------------------------------------

def look(cluster: Cluster, viewer: Viewer, namespace: str, name: str) -> Snapshot | None:
    """One snapshot; None if the ModelDeployment does not exist."""
    body = cluster.find_model_deployment(namespace, name)
    if body is None:
        return None
    return Snapshot(body=body, pods=viewer.pods(namespace, name),
                    events=viewer.events(namespace, name))


def watch(cluster: Cluster, viewer: Viewer, namespace: str, name: str, *, interval: float,
          timeout: float | None, out: TextIO | None = None, tty: bool | None = None,
          clock: Callable[[], float] = time.monotonic) -> int:
    """Show the rollout until it ends; the exit code of `EXIT_CODES`."""
    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    deadline = None if timeout is None else clock() + timeout
    try:
        snapshot = look(cluster, viewer, namespace, name)
    except ApiException as exc:
        print(f"modelgate status: {namespace}/{name}: {exc.status} {exc.reason}",
              file=sys.stderr)
        return EXIT_GONE
    if snapshot is None:
        print(f"modelgate status: {namespace}/{name}: no such ModelDeployment", file=sys.stderr)
        return EXIT_GONE
    if tty:
        return _watch_live(cluster, viewer, namespace, name, snapshot, interval, deadline,
                           out, clock)
    return _watch_plain(cluster, viewer, namespace, name, snapshot, interval, deadline, out,
                        clock)


def _next(cluster: Cluster, viewer: Viewer, namespace: str, name: str, interval: float,
          deadline: float | None, clock: Callable[[], float]) -> Snapshot | int | None:
    """The next snapshot after `interval`; EXIT_TIMEOUT past the deadline. API errors are
    shown by keeping the last snapshot (the caller retries): a watch outlives a blip."""
    if deadline is not None and clock() >= deadline:
        return EXIT_TIMEOUT
    time.sleep(interval)
    return look(cluster, viewer, namespace, name)


def _watch_live(cluster: Cluster, viewer: Viewer, namespace: str, name: str,
                snapshot: Snapshot, interval: float, deadline: float | None, out: TextIO,
                clock: Callable[[], float]) -> int:
    console = Console(file=out)
    ended = outcome(snapshot.body)
    with Live(render(snapshot, ended), console=console, auto_refresh=False,
              redirect_stdout=False, redirect_stderr=False) as live:
        while ended is None:
            try:
                following = _next(cluster, viewer, namespace, name, interval, deadline, clock)
            except ApiException:
                continue
            if following is None:
                live.update(Text(f"{namespace}/{name} was deleted", style="bold red"),
                            refresh=True)
                return EXIT_GONE
            if isinstance(following, int):
                live.update(render(snapshot, EXIT_TIMEOUT), refresh=True)
                return EXIT_TIMEOUT
            snapshot = following
            ended = outcome(snapshot.body)
            live.update(render(snapshot, ended), refresh=True)
    return ended


def _watch_plain(cluster: Cluster, viewer: Viewer, namespace: str, name: str,
                 snapshot: Snapshot, interval: float, deadline: float | None, out: TextIO,
                 clock: Callable[[], float]) -> int:
    seen: set[str] = set()
    while True:
        for line in plain_lines(snapshot):
            if line not in seen:
                seen.add(line)
                print(f"{snapshot.at:%H:%M:%S} {line}", file=out, flush=True)
        ended = outcome(snapshot.body)
        if ended is not None:
            print(f"{namespace}/{name}: ended: {EXIT_CODES[ended]} (exit {ended})", file=out,
                  flush=True)
            return ended
        try:
            following = _next(cluster, viewer, namespace, name, interval, deadline, clock)
        except ApiException as exc:
            print(f"{namespace}/{name}: API error {exc.status} {exc.reason}; retrying",
                  file=out, flush=True)
            continue
        if following is None:
            print(f"{namespace}/{name}: deleted (exit {EXIT_GONE})", file=out, flush=True)
            return EXIT_GONE
        if isinstance(following, int):
            print(f"{namespace}/{name}: still going after --timeout (exit {EXIT_TIMEOUT})",
                  file=out, flush=True)
            return EXIT_TIMEOUT
        snapshot = following


# --- following a rollout for its plot ----------------------------------------------------------

def follow(cluster: Cluster, namespace: str, name: str, *, interval: float,
           timeout: float | None, clock: Callable[[], float] = time.monotonic,
           progress: TextIO | None = None) -> tuple[plot.Story, int]:
    """Record every analysis the operator writes (status keeps only the last one) until the
    rollout ends or `timeout`; the story to draw and the exit code of `EXIT_CODES`."""
    deadline = None if timeout is None else clock() + timeout
    story = plot.Story(title=f"{namespace}/{name}")
    seen: set[Any] = set()
    if progress is not None:
        print(f"{namespace}/{name}: following the rollout", file=progress, flush=True)
    while True:
        try:
            body = cluster.find_model_deployment(namespace, name)
        except ApiException:
            body = {}
        if body is None:
            return story, EXIT_GONE
        if body:
            if record(story, body, seen) and progress is not None:
                print(f"{namespace}/{name}: analysis at {story.looks[-1].t:g}s: "
                      f"{((body.get('status') or {}).get('analysis') or {}).get('decision')}",
                      file=progress, flush=True)
            ended = outcome(body)
            if ended is not None:
                conclude(story, body)
                return story, ended
        if deadline is not None and clock() >= deadline:
            return story, EXIT_TIMEOUT
        time.sleep(interval)


def record(story: plot.Story, body: Mapping[str, Any], seen: set[Any]) -> bool:
    """Add the analysis `body`'s status holds to `story` unless `seen` has it (status keeps
    only the last one, so a follower must look at least once per analysis); True if added.
    Also takes the declared metrics and steps, which the spec may change."""
    current = body.get("status") or {}
    story.declared = plot.declared_metrics(body)
    story.steps = [words for _, words in steps(body)]
    analysis = current.get("analysis") or {}
    key = (analysis.get("time"), analysis.get("elapsedSeconds"))
    if not analysis.get("metrics") or key in seen:
        return False
    canary = current.get("canary") or {}
    if _before(analysis.get("time"), canary.get("startedAt")):
        # the last analysis of the rollout before this canary's: status keeps it until
        # this one's first
        return False
    seen.add(key)
    t = float(analysis.get("elapsedSeconds") or 0)
    if story.looks and story.looks[-1].t == t:
        # the same look rewritten (the final status keeps it): keep the last
        story.looks.pop()
    story.looks.append(plot.Look(
        t=t, metrics=analysis["metrics"], weight=canary.get("weight"),
        desired_weight=canary.get("desiredWeight"), step=canary.get("stepIndex")))
    return True


def _before(stamp: Any, start: Any) -> bool:
    """True when the time `stamp` is known to come before `start` (both RFC 3339)."""
    try:
        return bool(stamp and start) and (
            datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            < datetime.datetime.fromisoformat(str(start).replace("Z", "+00:00")))
    except ValueError:
        return False


def conclude(story: plot.Story, body: Mapping[str, Any]) -> None:
    """Mark the end of an ended rollout on `story`: the last look's time, the phase it ended
    in and why."""
    current = body.get("status") or {}
    if story.looks:
        story.decision = plot.Decision(
            story.looks[-1].t, str(current.get("phase")),
            str((current.get("analysis") or {}).get("reason") or current.get("message") or ""))
