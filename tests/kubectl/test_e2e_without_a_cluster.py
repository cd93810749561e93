"""`make e2e` (MODELGATE_E2E_CLUSTER=current) with no cluster behind the kubeconfig fails, and
says why: the CI job can no longer go green having tested nothing (issue 21)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.kubectl import KUBECTL, ROOT

pytestmark = [pytest.mark.kubectl]

NOWHERE = """apiVersion: v1
kind: Config
clusters: [{name: nowhere, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: nobody, user: {token: none}}]
contexts: [{name: nowhere, context: {cluster: nowhere, user: nobody}}]
current-context: nowhere
"""


@pytest.mark.skipif(KUBECTL is None and not os.environ.get("CI"), reason="kubectl is not installed")
def test_the_e2e_suite_fails_rather_than_skips_without_a_cluster(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(NOWHERE)
    env = {**os.environ, "MODELGATE_E2E_CLUSTER": "current", "KUBECONFIG": str(kubeconfig)}

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         "tests/e2e/test_scenarios.py", "-k", "promoted"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)

    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout, result.stdout
    assert "skipped" not in result.stdout, result.stdout
    assert "needs a cluster with modelgate deployed" in result.stdout, result.stdout
