"""`modelgate validate`: the operator's reading of a spec, offline."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import crd

from modelgate import cli


def test_validate_accepts_every_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", *map(str, crd.EXAMPLES)]) == 0
    assert capsys.readouterr().out.count(": valid") == len(crd.EXAMPLES)


def test_validate_reports_each_problem_with_its_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("""
apiVersion: modelgate.dev/v1alpha1
kind: ModelDeployment
metadata: {name: iris}
spec:
  model: {version: "2", uri: "file:///m.skops"}
  rollout: {steps: [{setWeight: 140}]}
  serving: {replica: 3}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
""")
    assert cli.main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "iris: invalid" in err
    assert "spec.rollout.steps[0].setWeight: 140 is above 100" in err
    assert "spec.serving.replica: is not a field" in err


def test_validate_fails_on_unreadable_yaml_and_on_files_without_model_deployments(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    assert cli.main(["validate", str(broken)]) == 1
    assert "cannot read" in capsys.readouterr().err
    empty = tmp_path / "empty.yaml"
    empty.write_text("kind: ConfigMap\n")
    assert cli.main(["validate", str(empty)]) == 1
    assert "no ModelDeployment found" in capsys.readouterr().err


def test_status_shows_each_undecided_metrics_time_to_a_verdict() -> None:
    from modelgate import control

    body = {"metadata": {"namespace": "ns", "name": "iris"},
            "status": {"phase": "Progressing", "message": "m",
                       "canary": {"version": "2", "weight": 60},
                       "analysis": {"decision": "continue", "reason": "waiting",
                                    "canaryRate": 4.1, "metrics": [
                                        {"name": "error-rate", "verdict": "continue",
                                         "stable": {"value": 0.005, "samples": 900},
                                         "canary": {"value": 0.006, "samples": 900},
                                         "secondsToDecision": 720.0,
                                         "requiredSamples": 2952},
                                        {"name": "latency-p99", "verdict": "pass",
                                         "stable": {"value": 0.06, "samples": 900},
                                         "canary": {"value": 0.061, "samples": 900}}]}}}
    text = control._summary(body, detail=True)
    assert ("a verdict in about 12 minutes more at 4.1 req/s to the canary (about 2952 more "
            "canary samples)") in text
    assert text.count("a verdict in") == 1
