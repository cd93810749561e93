"""Decision plots rendered from known tapes (tests/support/tapes.py): what each panel says,
and a real PNG of the right size that is not blank."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from matplotlib import image
from support import crd
from support.tapes import Arm, make_tape

from modelgate import api, cli, plot

MINIMAL = crd.ROOT / "manifests" / "examples" / "minimal.yaml"


def analyze_and_plot(tmp_path: Path, lines: list[str],
                     capsys: pytest.CaptureFixture[str]) -> tuple[list[dict[str, Any]], Path]:
    tape = tmp_path / "tape.jsonl"
    tape.write_text("\n".join(lines) + "\n")
    png = tmp_path / "out" / "decision.png"
    code = cli.main(["analyze", "--spec", str(MINIMAL), "--tape", str(tape), "--plot",
                     str(png)])
    assert code == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()], png


SPEC = api.parse(yaml.safe_load(MINIMAL.read_text()))
DECLARED = {metric.name: {"type": metric.type.value, "tolerance": metric.tolerance}
            for metric in SPEC.analysis.metrics}


def story_of(out: list[dict[str, Any]]) -> plot.Story:
    return plot.from_replay("iris", DECLARED, out)


def test_a_promoted_canary_is_drawn_per_metric_with_tolerance_and_decision(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = analyze_and_plot(tmp_path, make_tape(
        Arm("1", pods=2, rate=120, error_rate=0.001), Arm("2", pods=1, rate=60,
                                                          error_rate=0.001),
        seconds=900), capsys)
    assert out[-1]["decision"] == "promote"
    pixels = image.imread(png)
    assert pixels.shape[:2] == (990, 1300)  # 3 metrics x 2 panels: 13 x 9.9 inches at 100 dpi
    assert len({tuple(pixel) for pixel in pixels[::7, ::7].reshape(-1, pixels.shape[2])}) > 50

    drawn = plot.draw(story_of(out), tmp_path / "again.png")
    assert drawn["headline"].startswith(f"iris: promote at {out[-1]['t']:g}s\n")
    titles = [panel["title"] for panel in drawn["panels"]]
    assert len(DECLARED) == 3  # the defaulted checks
    for name in DECLARED:
        assert any(title.startswith(f"{name} (") for title in titles), titles
        assert f"{name}: effect, verdict pass" in titles
    error_effect = next(panel for panel in drawn["panels"]
                        if panel["title"].startswith("error-rate: effect"))
    tolerance = DECLARED["error-rate"]["tolerance"]
    assert sorted(error_effect["legend"]) == sorted([
        "effect (canary worse by) and its interval", f"tolerance {tolerance:g}: pass below",
        "0: fail when the interval is above"])
    assert error_effect["ylabel"] == "increase of the 5xx share"
    values = next(panel for panel in drawn["panels"]
                  if panel["title"].startswith("error-rate (errorRate)"))
    assert values["legend"][0].startswith("stable (n=")


def test_a_rolled_back_canary_names_the_failing_metric_in_the_title(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = analyze_and_plot(tmp_path, make_tape(
        Arm("1", pods=2, rate=120, error_rate=0.001), Arm("2", pods=1, rate=5,
                                                          error_rate=0.006),
        seconds=900), capsys)
    assert out[-1]["decision"] == "rollback"
    assert len(out) > 3  # several looks before it
    assert png.stat().st_size > 10_000
    drawn = plot.draw(story_of(out), tmp_path / "again.png")
    assert drawn["headline"].startswith("iris: rollback at ")
    assert "error-rate" in drawn["headline"]
    assert "error-rate: effect, verdict fail" in [panel["title"] for panel in drawn["panels"]]


def test_a_live_story_adds_the_steps_and_weights_panel(tmp_path: Path) -> None:
    metric = {"name": "error-rate", "verdict": "continue",
              "stable": {"value": 0.01, "samples": 100}, "canary": {"value": 0.01, "samples": 50},
              "effect": {"estimate": 0.0, "lower": -0.01, "upper": 0.02}}
    story = plot.Story(title="ml/iris", declared={"error-rate": {"type": "errorRate",
                                                                 "tolerance": 0.03}},
                       steps=["setWeight 25%", "analysis"],
                       looks=[plot.Look(t=2, metrics=[metric], weight=0, desired_weight=25,
                                        step=0),
                              plot.Look(t=4, metrics=[metric], weight=25, desired_weight=25,
                                        step=1)],
                       decision=plot.Decision(4, "Healthy", "every metric is within"))
    drawn = plot.draw(story, tmp_path / "live.png")
    assert [panel["title"] for panel in drawn["panels"]][:2] == ["Steps and weights",
                                                                 "Current step"]
    assert drawn["panels"][0]["legend"] == ["canary weight (achieved)",
                                            "weight the step asks"]
    assert drawn["headline"].startswith("ml/iris: Healthy at 4s")


def test_analyze_says_what_is_missing_without_matplotlib(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    tape = tmp_path / "tape.jsonl"
    tape.write_text("\n".join(make_tape(Arm("1", 1, 10), Arm("2", 1, 10), seconds=60)) + "\n")
    code = cli.main(["analyze", "--spec", str(MINIMAL), "--tape", str(tape), "--plot",
                     str(tmp_path / "x.png")])
    assert code == 2
    assert "pip install 'modelgate[plot]'" in capsys.readouterr().err


def test_the_readme_shows_the_plot_make_docs_images_draws() -> None:
    readme = (crd.ROOT / "README.md").read_text()
    assert "](docs/images/decision-plot.png)" in readme
    png = crd.ROOT / "docs" / "images" / "decision-plot.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "docs/gen_images.py" in (crd.ROOT / "Makefile").read_text()
