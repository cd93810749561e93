"""`make undeploy` with live ModelDeployments (issue 21): it deletes them first and waits for
the operator to release them (its finalizer), saying what it waits for, and only then removes
the operator and the CRD. With the operator away it stops at that wait and says why, instead
of hanging for ever on objects nothing can release."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.kubectl import ROOT, Kubectl

pytestmark = [pytest.mark.kubectl, pytest.mark.xdist_group("kubectl")]
CRD = ROOT / "crds" / "modeldeployments.modelgate.dev.yaml"
NAMES = ("undeploy-a", "undeploy-b")
LIVE = "undeploy-live"


def make_undeploy(env: dict[str, str], *variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", "--no-print-directory", "undeploy", *variables],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)


def operator(env: dict[str, str], state: str) -> None:
    done = subprocess.run([sys.executable, "-m", "sandbox.serve", f"operator-{state}",
                           "--workdir", env["SANDBOX_DIR"]], cwd=ROOT,
                          env={**env, "PYTHONPATH": str(ROOT / "tests")}, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_make_undeploy_releases_live_model_deployments_before_removing_the_crd(
        sandbox_env: dict[str, str], kubectl: Kubectl) -> None:
    example = yaml.safe_load(
        (Path(sandbox_env["MODELGATE_SANDBOX"]) / "examples" / "iris-v1.yaml").read_text())
    for name in NAMES:
        example["metadata"]["name"] = name
        kubectl("apply", "-f", "-", stdin=yaml.safe_dump(example))
    for name in NAMES:  # the operator has taken them on (and put its finalizer on them)
        kubectl("wait", f"md/{name}", "--for=jsonpath={.status.phase}=Healthy",
                "--timeout=180s", timeout=240)
    try:
        operator(sandbox_env, "down")
        held = make_undeploy(sandbox_env, "UNDEPLOY_TIMEOUT=3s")

        assert held.returncode != 0
        assert "deleting the ModelDeployments" in held.stdout, held.stdout
        assert all(f"default/{name}" in held.stdout for name in NAMES), held.stdout
        assert "waiting up to 3s for the operator to release them" in held.stdout
        assert "is the operator running?" in held.stdout
        for name in NAMES:  # held by the finalizer, Terminating
            stuck = kubectl.json("get", "md", name)
            assert stuck["metadata"]["deletionTimestamp"]
            assert stuck["metadata"]["finalizers"]
        assert kubectl("get", "crd", "modeldeployments.modelgate.dev", "-o", "name").stdout

        operator(sandbox_env, "up")
        for name in NAMES:  # back up, the operator releases what was deleted while it was away
            kubectl("wait", f"md/{name}", "--for=delete", "--timeout=180s", timeout=240)
        # and a live one, Healthy, is deleted by undeploy and released before the CRD goes
        example["metadata"]["name"] = LIVE
        kubectl("apply", "-f", "-", stdin=yaml.safe_dump(example))
        kubectl("wait", f"md/{LIVE}", "--for=jsonpath={.status.phase}=Healthy",
                "--timeout=180s", timeout=240)
        done = make_undeploy(sandbox_env)

        assert done.returncode == 0, done.stdout + done.stderr
        assert f"deleting the ModelDeployments default/{LIVE}" in done.stdout, done.stdout
        assert "for the operator to release them" in done.stdout
        assert "no ModelDeployments left; removing the operator, its RBAC and the CRD" \
            in done.stdout
        assert kubectl("get", "md", "-o", "name").stdout.strip() == ""
        assert kubectl("get", "crd", "--ignore-not-found", "-o", "name").stdout.strip() == ""
        # nothing left to wait for: a second undeploy goes straight to the manifests
        again = make_undeploy(sandbox_env)
        assert again.returncode == 0, again.stderr
        assert "waiting" not in again.stdout
    finally:
        operator(sandbox_env, "up")
        # the sandbox still serves the kind (the emulator keeps its resource types); put the
        # CRD object back for the tests that follow in this sandbox
        kubectl("apply", "-f", str(CRD))
