"""The CI workflow and the Argo CD / Flux objects: they parse, pin their versions, and point
at paths that exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def documents(path: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((ROOT / path).read_text()) if doc]


def test_the_workflow_parses_and_pins_every_action_and_tool() -> None:
    (workflow,) = documents(".github/workflows/ci.yaml")
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    actions = [step["uses"] for step in steps if "uses" in step]
    assert actions
    for action in actions:  # by commit: a tag can be moved to other code
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), action
    text = (ROOT / ".github/workflows/ci.yaml").read_text()
    assert len(re.findall(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", text, re.MULTILINE)) == len(actions)
    for step in steps:
        for key, value in (step.get("with") or {}).items():
            if key in ("version", "python-version", "node_image"):
                assert re.search(r"\d+\.\d+\.\d+", str(value)), f"{key}: {value} is not pinned"
    runs = " ".join(step.get("run", "") for step in steps)
    for target in ("make test", "make images kind-load", "make deploy", "make e2e"):
        assert target in runs


def test_argo_cd_and_flux_point_at_paths_of_this_repository() -> None:
    kinds = {}
    for path in ("manifests/argocd/modelgate.yaml", "manifests/argocd/models.yaml",
                 "manifests/flux/modelgate.yaml"):
        for doc in documents(path):
            kinds.setdefault(doc["kind"], []).append(doc)
    assert len(kinds["Application"]) == 2
    assert len(kinds["GitRepository"]) == 2
    assert len(kinds["Kustomization"]) == 2
    (own,) = [app for app in kinds["Application"] if app["metadata"]["name"] == "modelgate"]
    assert (ROOT / own["spec"]["source"]["path"] / "kustomization.yaml").exists()
    (flux_own,) = [k for k in kinds["Kustomization"] if k["metadata"]["name"] == "modelgate"]
    assert (ROOT / flux_own["spec"]["path"] / "kustomization.yaml").exists()
    (flux_models,) = [k for k in kinds["Kustomization"] if k["metadata"]["name"] == "models"]
    assert flux_models["spec"]["dependsOn"] == [{"name": "modelgate"}]
    (models,) = [app for app in kinds["Application"] if app["metadata"]["name"] == "models"]
    ignored = " ".join(models["spec"]["ignoreDifferences"][0]["jqPathExpressions"])
    for control in ("promote", "abort", "retry", "paused"):
        assert f"modelgate.dev/{control}" in ignored
