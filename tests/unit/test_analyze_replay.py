"""`modelgate analyze` (docs/architecture.md, contract 5): tapes replayed through the judge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import crd
from support.tapes import Arm, make_tape

from modelgate import api, cli, status

MINIMAL = crd.ROOT / "manifests" / "examples" / "minimal.yaml"


def run(tmp_path: Path, lines: list[str], capsys: pytest.CaptureFixture[str],
        spec: Path = MINIMAL) -> tuple[int, list[dict[str, Any]], str]:
    tape = tmp_path / "tape.jsonl"
    tape.write_text("\n".join(lines) + "\n")
    code = cli.main(["analyze", "--spec", str(spec), "--tape", str(tape)])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_a_good_canary_is_promoted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = make_tape(Arm("1", pods=2, rate=120, error_rate=0.001),
                      Arm("2", pods=1, rate=80, error_rate=0.001), seconds=900)
    code, out, _ = run(tmp_path, lines, capsys)
    assert code == 0
    final = out[-1]
    assert final["final"] is True
    assert final["decision"] == "promote"
    assert {m["verdict"] for m in final["metrics"]} == {"pass"}
    assert [m["name"] for m in final["metrics"]] == [
        "error-rate", "latency-p99", "prediction-distribution"]
    assert all("final" not in line for line in out[:-1])
    assert [line["t"] for line in out[:-1]] == [30.0 * k for k in range(1, len(out))]


def test_a_canary_with_more_errors_is_rolled_back_naming_the_metric(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = make_tape(Arm("1", pods=2, rate=120, error_rate=0.001),
                      Arm("2", pods=1, rate=80, error_rate=0.05), seconds=900)
    code, out, _ = run(tmp_path, lines, capsys)
    assert code == 0
    final = out[-1]
    assert final["decision"] == "rollback"
    assert final["reason"].startswith("error-rate failed")
    failing = {m["name"]: m for m in final["metrics"]}["error-rate"]
    assert failing["verdict"] == "fail"
    assert failing["canary"]["samples"] > 0
    assert failing["effect"]["lower"] > 0.0025


def test_shifted_predictions_are_rolled_back(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    shifted = {"setosa": 0.2, "versicolor": 0.3, "virginica": 0.5}
    lines = make_tape(Arm("1", pods=2, rate=120), Arm("2", pods=1, rate=80, classes=shifted),
                      seconds=900)
    _, out, _ = run(tmp_path, lines, capsys)
    assert out[-1]["decision"] == "rollback"
    assert out[-1]["reason"].startswith("prediction-distribution failed")


def test_low_traffic_holds_and_ends_inconclusive_never_rolled_back(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = make_tape(Arm("1", pods=1, rate=0.1, error_rate=0.5),
                      Arm("2", pods=1, rate=0.05), seconds=600)
    code, out, _ = run(tmp_path, lines, capsys)
    assert code == 0
    assert out[-1]["decision"] == "inconclusive"
    assert {m["verdict"] for m in out[-1]["metrics"]} == {"no-data"}
    assert all(m["requiredSamples"] > 0 for m in out[-1]["metrics"])


def test_a_tape_with_a_missing_arm_is_inconclusive(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(tmp_path, make_tape(None, Arm("2", pods=1, rate=50), seconds=120),
                       capsys)
    assert code == 0
    assert out[-1]["decision"] == "inconclusive"
    assert out[-1]["metrics"][0]["stable"]["samples"] == 0


@pytest.mark.parametrize(("tape", "message"), [
    ("not json", "tape line 1: not JSON"),
    ('{"t": 0, "role": "stable", "pod": "p"}', "tape line 1: missing text"),
    ('{"t": 0, "role": "baseline", "pod": "p", "text": ""}', "role must be stable or canary"),
    ('{"t": "soon", "role": "stable", "pod": "p", "text": ""}', "t must be a number"),
    ('{"t": 0, "role": "stable", "pod": "p", "text": "metric{ 1"}', "not Prometheus text"),
    ("", "the tape holds no scrapes"),
])
def test_unusable_tapes_exit_non_zero_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tape: str, message: str) -> None:
    code, out, err = run(tmp_path, [tape], capsys)
    assert code != 0
    assert out == []
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_an_invalid_spec_exits_non_zero(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("apiVersion: modelgate.dev/v1alpha1\nkind: ModelDeployment\n"
                    "metadata: {name: x}\nspec: {model: {version: '1'}}\n")
    code, _, err = run(tmp_path, make_tape(Arm("1", 1, 10), Arm("2", 1, 10), seconds=60),
                       capsys, spec=spec)
    assert code != 0
    assert "spec.model.uri: is required" in err
    assert len(err.strip().splitlines()) == 1


def test_decision_records_fit_the_crds_status_schema(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import jsonschema

    lines = make_tape(Arm("1", pods=2, rate=120, error_rate=0.001),
                      Arm("2", pods=1, rate=80, error_rate=0.05), seconds=300)
    _, out, _ = run(tmp_path, lines, capsys)
    status_schema = crd._json_schema()["properties"]["status"]
    for line in out:
        record = {key: value for key, value in line.items() if key not in ("t", "final")}
        record.setdefault("elapsedSeconds", line["t"])
        jsonschema.validate({"analysis": record}, status_schema)
        for metric in record["metrics"]:
            assert all(value == value for value in metric.get("effect", {}).values())


def _declared(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    """Paths in `value` the schema does not declare: the API server would prune them."""
    if isinstance(value, dict):
        properties = schema.get("properties")
        if properties is None:
            return []  # x-kubernetes-preserve-unknown-fields or a free-form object
        missing = [f"{path}.{key}" for key in value if key not in properties]
        return missing + [item for key, child in value.items() if key in properties
                          for item in _declared(properties[key], child, f"{path}.{key}")]
    if isinstance(value, list) and "items" in schema:
        return [item for child in value for item in _declared(schema["items"], child, path)]
    return []


def test_every_field_of_a_decision_record_is_declared_so_none_is_pruned() -> None:
    from scipy.stats import norm

    from modelgate.core.analysis import ArmObservation, Histogram, Observation, judge
    from modelgate.core.types import AnalysisSpec
    from modelgate_serving.metrics import LATENCY_BUCKETS

    bounds = (*LATENCY_BUCKETS, float("inf"))

    def latency(n: float) -> Histogram:
        return Histogram(bounds, tuple(n * float(norm.cdf((b - 0.02) / 0.01)) for b in bounds))

    stable = ArmObservation(requests=3000, errors=15, latency=latency(3000),
                            classes={"a": 2000, "b": 1000})
    canary = ArmObservation(requests=600, errors=3, latency=latency(600),
                            classes={"a": 400, "b": 200})
    record = judge(AnalysisSpec(metrics=api.default_metrics(100)),
                   Observation(300, stable, canary, since=0), 300)
    written = status.analysis_record_to_status(record)
    assert "secondsToDecision" in json.dumps(written)
    assert "resolution" in json.dumps(written)
    status_schema = crd._json_schema()["properties"]["status"]
    assert _declared(status_schema, {"analysis": written}, "status") == []
