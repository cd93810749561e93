"""Install manifests: every kustomization renders offline, every object validates against the
Kubernetes API's schemas, RBAC grants exactly what the operator's code calls, the operator runs
locked down, and both images build non-root from pinned slim bases."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.33.0"
KUSTOMIZATIONS = ["manifests/base", "manifests/namespaced", "manifests/overlays/kind",
                  "manifests/overlays/production", "crds"]


def render(path: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (client) is needed to render the kustomizations"
    result = subprocess.run([kubectl, "kustomize", str(ROOT / path)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def objects(path: str, kind: str) -> list[dict[str, Any]]:
    return [obj for obj in render(path) if obj["kind"] == kind]


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_every_kustomization_renders_and_every_object_validates(path: str) -> None:
    rendered = render(path)
    assert rendered
    for obj in rendered:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


# --- RBAC from the code ---------------------------------------------------------------------

_VERBS = {"read": "get", "get": "get", "list": "list", "create": "create", "patch": "patch",
          "delete": "delete"}
_RESOURCES = {"deployment": ("apps", "deployments"), "service": ("", "services"),
              "pod": ("", "pods"), "event": ("", "events"),
              "custom_object": ("modelgate.dev", "modeldeployments")}
KOPF_NEEDS = {("modelgate.dev", "modeldeployments", "watch"),
              ("modelgate.dev", "modeldeployments/finalizers", "update")}
"""What kopf itself calls on the resource it serves (it lists and watches ModelDeployments),
and what the API server checks for the children's owner references with blockOwnerDeletion
(OwnerReferencesPermissionEnforcement: update on the owner's finalizers)."""
KOPF_CLUSTER_WIDE = {("apiextensions.k8s.io", "customresourcedefinitions", "list"),
                     ("apiextensions.k8s.io", "customresourcedefinitions", "watch")}


def calls_in_code() -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every Kubernetes client call the operator makes: those in
    operator/modelgate/k8s but the CLI's reads (viewer.py, see cli_reads)."""
    return _calls(path for path in (ROOT / "operator" / "modelgate" / "k8s").rglob("*.py")
                  if path.name != "viewer.py")


def cli_reads() -> set[tuple[str, str, str]]:
    return _calls([ROOT / "operator" / "modelgate" / "k8s" / "viewer.py"])


def _calls(sources: Iterable[Path]) -> set[tuple[str, str, str]]:
    calls = set()
    for source in sources:
        for method in re.findall(r"self\.(?:apps|core|custom)\.(\w+)", source.read_text()):
            verb, _, rest = re.fullmatch(r"([a-z]+)_(namespaced|cluster)_(\w+)",
                                             method).groups()  # type: ignore[union-attr]
            status = rest.endswith("_status")
            group, resource = _RESOURCES[rest.removesuffix("_status")]
            calls.add((group, resource + ("/status" if status else ""), _VERBS[verb]))
    return calls


def test_the_cli_view_only_reads() -> None:
    """`modelgate status --watch` lists pods and Events with the person's credentials; the
    operator's role does not need (nor grant) listing Events."""
    assert cli_reads() == {("", "pods", "list"), ("", "events", "list")}
    assert all(verb in ("get", "list") for _, _, verb in cli_reads())


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def test_the_code_calls_what_the_test_knows_how_to_read() -> None:
    calls = calls_in_code()
    assert ("apps", "deployments", "patch") in calls
    assert ("modelgate.dev", "modeldeployments/status", "patch") in calls
    assert len(calls) >= 12


def test_the_cluster_role_grants_exactly_what_the_code_and_kopf_use() -> None:
    (role,) = objects("manifests/base", "ClusterRole")
    assert granted(role["rules"]) == calls_in_code() | KOPF_NEEDS | KOPF_CLUSTER_WIDE
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in role["rules"])


def test_the_namespaced_variant_grants_the_same_in_one_namespace_and_nothing_cluster_wide(
        ) -> None:
    rendered = render("manifests/namespaced")
    assert not [obj for obj in rendered if obj["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    (role,) = [obj for obj in rendered if obj["kind"] == "Role"]
    assert granted(role["rules"]) == calls_in_code() | KOPF_NEEDS
    (deployment,) = [obj for obj in rendered if obj["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in
           deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELGATE_OPERATOR_NAMESPACES"] == role["metadata"]["namespace"]


# --- the operator's Deployment ---------------------------------------------------------------

@pytest.mark.parametrize("path", ["manifests/overlays/kind", "manifests/overlays/production",
                                  "manifests/namespaced"])
def test_the_operator_runs_locked_down_with_probes_and_resources(path: str) -> None:
    (deployment,) = objects(path, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    # one replica and no peering, on purpose (manifests/operator/deployment.yaml says why)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


def test_the_kind_overlay_runs_the_locally_built_image() -> None:
    (deployment,) = objects("manifests/overlays/kind", "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "modelgate/operator:dev"
    assert container["imagePullPolicy"] == "Never"


# --- images ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("dockerfile", "entrypoint"), [
    ("serving-image/Dockerfile", '["modelgate-serve"]'),
    ("operator/Dockerfile", '["modelgate", "run"]'),
])
def test_images_run_as_non_root_from_a_slim_pinned_base(dockerfile: str, entrypoint: str) -> None:
    text = (ROOT / dockerfile).read_text()
    bases = re.findall(r"^ARG PYTHON_IMAGE=(\S+)", text, re.MULTILINE)
    assert bases
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64}", bases[0])
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert f"ENTRYPOINT {entrypoint}" in text
    # every distribution hash-checked, nothing fetched unchecked for the package's own build
    package = dockerfile.split("/")[0]
    assert f"--require-hashes --no-deps -r /src/{package}/requirements.lock" in text
    assert f"--no-deps --no-build-isolation /src/{package}" in text


@pytest.mark.parametrize("package", ["serving-image", "operator"])
def test_the_image_locks_hash_the_same_pins_as_the_tests(package: str) -> None:
    """*/requirements.lock (make lock-images) agrees with constraints.txt, and every
    requirement in it carries hashes."""
    def normal(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text()
                .splitlines() if "==" in line and not line.startswith("#"))
    pins = {normal(name): version for name, version in pins.items()}
    lock = (ROOT / package / "requirements.lock").read_text()
    locked = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, re.MULTILINE)
    assert locked
    for name, version in locked:
        if name.lower() != "setuptools":  # the build backend, pinned in pyproject.toml
            assert pins.get(normal(name)) == version, name
    entries = re.split(r"^(?=[A-Za-z])", lock, flags=re.MULTILINE)[1:]
    assert all("--hash=sha256:" in entry for entry in entries)
