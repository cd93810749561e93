"""The pieces of `modelgate status --watch` and of the list: when a rollout has ended and
with which exit code, the steps marked, pods per arm, metric rows, the live view's text, the
plain lines, the table, and the CLI's refusals. No cluster: status bodies as the operator
writes them."""

from __future__ import annotations

import datetime
import io
from typing import Any

import pytest
from rich.console import Console

from modelgate import cli, control, watch

NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)


def body(phase: str = "Progressing", *, generation: int = 2, observed: int | None = 2,
         canary: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "iris", "namespace": "ml", "generation": generation,
                     "creationTimestamp": "2026-12-07T11:00:00Z"},
        "spec": {"rollout": {"steps": [{"setWeight": 25}, {"pause": {"duration": "2s"}},
                                       {"setWeight": 50}, {"analysis": {}}, {"pause": {}}]},
                 "analysis": {"metrics": [
                     {"name": "error-rate", "type": "errorRate", "tolerance": 0.03},
                     {"name": "memory", "type": "prometheus",
                      "thresholdRange": {"max": 900}}]}},
        "status": {
            "phase": phase, "observedGeneration": observed, "message": "m",
            "stable": {"version": "v1"},
            "canary": canary,
            "analysis": {"decision": "continue", "reason": "waiting; more words", "metrics": [
                {"name": "error-rate", "verdict": "continue",
                 "stable": {"value": 0.01, "samples": 300},
                 "canary": {"value": 0.012, "samples": 120},
                 "effect": {"estimate": 0.002, "lower": -0.01, "upper": 0.02},
                 "secondsToDecision": 90},
                {"name": "memory", "verdict": "pass", "stable": {"value": 500, "samples": 1},
                 "canary": {"value": 600, "samples": 1}}]},
        },
    }


CANARY = {"version": "v2", "weight": 50, "desiredWeight": 25, "stepIndex": 2}


@pytest.mark.parametrize(("phase", "code"), [("Healthy", watch.EXIT_HEALTHY),
                                             ("RolledBack", watch.EXIT_ROLLED_BACK),
                                             ("Degraded", watch.EXIT_DEGRADED)])
def test_a_settled_phase_the_operator_has_seen_ends_the_watch(phase: str, code: int) -> None:
    assert watch.outcome(body(phase)) == code


def test_the_watch_goes_on_while_a_canary_flies_paused_or_the_spec_is_unseen() -> None:
    assert watch.outcome(body("Progressing", canary=CANARY)) is None
    assert watch.outcome(body("Paused", canary=CANARY)) is None
    assert watch.outcome(body("Paused")) is None  # a person has to act
    assert watch.outcome(body("Pending")) is None
    # just applied: the last status still says Healthy for the previous spec
    assert watch.outcome(body("Healthy", generation=3, observed=2)) is None


def test_steps_are_marked_done_and_current() -> None:
    marks = watch.steps(body(canary=CANARY))
    assert marks == [("done", "setWeight 25%"), ("done", "pause 2s"),
                     ("current", "setWeight 50%"), ("", "analysis"),
                     ("", "pause (until promoted)")]
    assert {mark for mark, _ in watch.steps(body("Healthy"))} == {""}


def test_pods_are_grouped_by_arm_with_readiness_and_terminating_ones_left_out() -> None:
    def pod(name: str, role: str, ready: bool, deleting: bool = False) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name,
                                    "labels": {"modelgate.dev/role": role}}
        if deleting:
            metadata["deletionTimestamp"] = "2026-12-07T12:00:00Z"
        return {"metadata": metadata, "status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True" if ready else "False"}]}}

    arms = watch.arms([pod("s-1", "stable", True), pod("c-1", "canary", False),
                       pod("s-0", "stable", True, deleting=True)])
    assert arms == {"canary": [("c-1", False, "Running")], "stable": [("s-1", True, "Running")]}


def test_metric_rows_carry_estimate_interval_tolerance_and_time_to_decision() -> None:
    error, memory = watch.metrics(body(canary=CANARY))
    assert error == {"name": "error-rate", "verdict": "continue", "stable": "0.01 (n=300)",
                     "canary": "0.012 (n=120)", "estimate": "0.002 [-0.01, 0.02]",
                     "tolerance": "0.03", "decision": "~2 minutes"}
    assert memory["tolerance"] == "-..900"
    assert memory["decision"] == ""


def text_of(renderable: Any) -> str:
    console = Console(file=io.StringIO(), width=140, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_the_live_view_shows_every_part_and_how_it_ended() -> None:
    snapshot = watch.Snapshot(body=body(canary=CANARY), events=[
        {"type": "Normal", "reason": "StepCompleted", "message": "step 2/5 done",
         "lastTimestamp": "2026-12-07T11:59:30Z"}], at=NOW)
    text = text_of(watch.render(snapshot))
    assert "ml/iris  Progressing; stable v1, canary v2 at 50% (asked 25%)" in text
    assert "▶   3. setWeight 50%" in text
    assert "✓   1. setWeight 25%" in text
    assert "Analysis: continue (waiting)" in text
    assert "30s  Normal  StepCompleted  step 2/5 done" in text
    assert "watching; updated 12:00:00 UTC" in text
    ended = text_of(watch.render(watch.Snapshot(body=body("RolledBack"), at=NOW),
                                 watch.EXIT_ROLLED_BACK))
    assert "ended: RolledBack: the declared version was rejected (exit 1)" in ended


def test_plain_lines_name_one_fact_each() -> None:
    lines = watch.plain_lines(watch.Snapshot(body=body(canary=CANARY), at=NOW))
    assert lines[:2] == ["ml/iris: Progressing; stable v1, canary v2 at 50% (asked 25%)",
                         "ml/iris: step 3/5 setWeight 50%"]
    assert ("ml/iris: metric error-rate continue effect 0.002 [-0.01, 0.02] tolerance 0.03"
            in lines)


def test_the_list_is_a_kubectl_table_with_a_namespace_column_for_all_namespaces() -> None:
    other = body("Healthy")
    other["metadata"] = {**other["metadata"], "name": "churn", "namespace": "a"}
    table = control.table([body(canary=CANARY), other], namespaces=True, now=NOW)
    assert table.splitlines() == [
        "NAMESPACE   NAME    PHASE         STABLE   CANARY   WEIGHT   DECISION   AGE",
        "a           churn   Healthy       v1       <none>   <none>   <none>     60m",
        "ml          iris    Progressing   v1       v2       50%      continue   60m",
    ]
    assert control.table([other], namespaces=False, now=NOW).startswith("NAME ")


def test_printed_objects_leave_out_managed_fields_as_kubectl_does() -> None:
    obj = {"metadata": {"name": "x", "managedFields": [{}]}, "spec": {}}
    assert control.printable(obj) == {"metadata": {"name": "x"}, "spec": {}}
    assert control.dump({"a": 1}, "yaml") == "a: 1"


@pytest.mark.parametrize(("argv", "words"), [
    (["status", "-A", "iris"], "-A lists every namespace"),
    (["status", "--watch"], "give its NAME"),
    (["status", "iris", "--watch", "-o", "json"], "-o prints one snapshot"),
    (["status", "iris", "--watch", "--interval", "0"], "--interval must be more than 0"),
    (["status", "-o", "table"], "invalid choice"),
])
def test_the_cli_refuses_what_it_cannot_do_naming_why(
        argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert words in capsys.readouterr().err


def test_the_kubectl_plugin_names_itself_so_and_has_no_run(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"], prog=cli.KUBECTL_PROG)
    out = capsys.readouterr().out
    assert out.startswith("usage: kubectl modelgate")
    for verb in ("status", "promote", "abort", "retry", "pause", "resume", "analyze"):
        assert verb in out
    with pytest.raises(SystemExit):
        cli.main(["run"], prog=cli.KUBECTL_PROG)
    assert "invalid choice: 'run'" in capsys.readouterr().err
