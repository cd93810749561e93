"""The CI workflow and the Argo CD / Flux objects: they parse, pin their versions, point at
paths that exist, validate strictly against the upstream CRDs of the releases docs/gitops.md
names, and keep models safe (prune guards, the models namespace, retries)."""

from __future__ import annotations

import functools
import hashlib
import re
import subprocess
from pathlib import Path
from typing import Any

import celpy
import kubernetes_validate
import pytest
import yaml
from sandbox.admission import Admission

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


# --- strict validation against the upstream CRDs ---------------------------------------------

UPSTREAM = ROOT / "tests" / "support" / "upstream_crds"
GITOPS_FILES = ["manifests/argocd/modelgate.yaml", "manifests/argocd/models.yaml",
                "manifests/flux/modelgate.yaml"]
KUBERNETES_VERSION = "1.33.0"


@functools.cache
def upstream_admissions() -> dict[tuple[str, str], Admission]:
    """(apiVersion, kind) -> the admission of that kind by its upstream CRD."""
    admissions = {}
    for path in sorted(UPSTREAM.glob("*.yaml")):
        definition = yaml.safe_load(path.read_text())
        group, kind = definition["spec"]["group"], definition["spec"]["names"]["kind"]
        for version in definition["spec"]["versions"]:
            if version.get("served"):
                admissions[(f"{group}/{version['name']}", kind)] = Admission(
                    definition, version["name"])
    return admissions


def test_the_upstream_crds_are_the_files_their_readme_names() -> None:
    readme = (UPSTREAM / "README.md").read_text()
    for path in UPSTREAM.glob("*.yaml"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"`{path.name}` |" in readme, path.name
        assert digest in readme, path.name
    docs = (ROOT / "docs" / "gitops.md").read_text()
    for release in ("argo-cd v3.5", "source-controller v1.9", "kustomize-controller v1.9"):
        assert release in docs, f"docs/gitops.md does not name {release}"


@pytest.mark.parametrize("path", GITOPS_FILES)
def test_every_gitops_object_validates_strictly_against_its_upstream_crd(path: str) -> None:
    admissions = upstream_admissions()
    for obj in documents(path):
        meta_only = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}
        kubernetes_validate.validate(meta_only, KUBERNETES_VERSION, strict=True)
        key = (obj["apiVersion"], obj["kind"])
        if obj["apiVersion"] == "v1":
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            continue
        assert key in admissions, f"{path}: no upstream CRD for {key}"
        verdict = admissions[key].admit(obj)
        assert verdict.unknown_fields == [], f"{path} {obj['metadata']['name']}: unknown " \
            f"fields {verdict.unknown_fields}"
        assert verdict.errors == [], f"{path} {obj['metadata']['name']}: {verdict.errors}"


def test_a_misspelt_field_is_refused_so_the_validation_bites() -> None:
    admissions = upstream_admissions()
    (models,) = documents("manifests/argocd/models.yaml")
    wrong = {**models, "spec": {**models["spec"], "syncPolicy": {
        **models["spec"]["syncPolicy"], "retries": {"limit": 1}}}}
    assert admissions[("argoproj.io/v1alpha1", "Application")].admit(wrong).unknown_fields \
        == ["spec.syncPolicy.retries"]
    (flux_models,) = [d for d in documents("manifests/flux/modelgate.yaml")
                      if d["kind"] == "Kustomization" and d["metadata"]["name"] == "models"]
    bad = {**flux_models, "spec": {**flux_models["spec"], "timeout": "soon"}}
    verdict = admissions[("kustomize.toolkit.fluxcd.io/v1", "Kustomization")].admit(bad)
    assert [error.field for error in verdict.errors] == ["spec.timeout"]


def test_the_argocd_cm_snippet_is_a_valid_configmap_patch() -> None:
    (snippet,) = documents("manifests/argocd/argocd-cm.yaml")
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "argocd-cm", "namespace": "argocd"}, **snippet}
    kubernetes_validate.validate(configmap, KUBERNETES_VERSION, strict=True)


def test_flux_health_expressions_compile_as_cel() -> None:
    (flux_models,) = [d for d in documents("manifests/flux/modelgate.yaml")
                      if d["kind"] == "Kustomization" and d["metadata"]["name"] == "models"]
    (entry,) = flux_models["spec"]["healthCheckExprs"]
    assert (entry["apiVersion"], entry["kind"]) == ("modelgate.dev/v1alpha1", "ModelDeployment")
    environment = celpy.Environment()
    for key in ("inProgress", "failed", "current"):
        environment.compile(entry[key])  # raises on a syntax error


# --- what keeps models safe under GitOps ------------------------------------------------------

def test_the_crd_carries_both_prune_guards_wherever_it_is_rendered() -> None:
    for path in ("crds", "manifests/base", "manifests/overlays/kind",
                 "manifests/overlays/production"):
        rendered = subprocess.run(["kubectl", "kustomize", str(ROOT / path)],
                                  capture_output=True, text=True, timeout=60, check=True)
        crds = [d for d in yaml.safe_load_all(rendered.stdout)
                if d and d["kind"] == "CustomResourceDefinition"]
        assert crds, path
        for definition in crds:
            annotations = definition["metadata"]["annotations"]
            options = [o.strip() for o in
                       annotations["argocd.argoproj.io/sync-options"].split(",")]
            assert {"Prune=false", "Delete=false"} <= set(options), path
            assert annotations["kustomize.toolkit.fluxcd.io/prune"] == "disabled", path


def test_flux_creates_the_models_namespace_and_waits_on_model_health() -> None:
    docs = documents("manifests/flux/modelgate.yaml")
    (flux_models,) = [d for d in docs
                      if d["kind"] == "Kustomization" and d["metadata"]["name"] == "models"]
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    assert [n["metadata"]["name"] for n in namespaces] == [flux_models["spec"]["targetNamespace"]]
    assert namespaces[0]["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/prune"] == \
        "disabled"
    assert flux_models["spec"]["wait"] is True


def test_the_argo_cd_models_app_retries_and_respects_its_ignored_differences() -> None:
    (models,) = documents("manifests/argocd/models.yaml")
    policy = models["spec"]["syncPolicy"]
    assert "RespectIgnoreDifferences=true" in policy["syncOptions"]
    assert "CreateNamespace=true" in policy["syncOptions"]
    retry = policy["retry"]
    assert retry["limit"] < 0 or retry["limit"] >= 5
    assert {"duration", "factor", "maxDuration"} <= set(retry["backoff"])
