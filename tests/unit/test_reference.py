"""The README's ModelDeployment reference is the CRD's, regenerated."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" /
                                                  "gen_reference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_reference_matches_the_crd() -> None:
    generator = _generator()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert generator.replace_in(readme, generator.reference()) == readme, (
        "README.md's reference is stale: run `make reference`")


def test_readme_serving_settings_match_the_server() -> None:
    generator = _generator()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = generator.serve_settings()
    assert "| `--model-uri` | `MODELGATE_MODEL_URI` | required |" in table
    assert generator.replace_in(readme, table) == readme, (
        "README.md's modelgate-serve settings are stale: run `make reference`")


def test_readme_operator_settings_match_the_operator() -> None:
    generator = _generator()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = generator.operator_settings()
    assert "| `MODELGATE_OPERATOR_TICK` | `5` |" in table
    assert generator.replace_in(readme, table) == readme, (
        "README.md's operator settings are stale: run `make reference`")


def test_reference_lists_every_spec_field_with_its_default() -> None:
    table = _generator().reference()
    assert "| `spec.serving.replicas` | integer | `2` | [0, 1000] |" in table
    assert "`spec.rollout.steps[].setWeight`" in table
    assert "| `spec.analysis.alpha` | number | `0.01` | (0, 0.2] |" in table
