"""The end-to-end suite: one suite, two clusters, chosen by the kubeconfig.

- `make test` (MODELGATE_E2E_CLUSTER unset or `sandbox`): the sandbox of `make sandbox-up`
  (the session fixture tests/kubectl uses, on an xdist worker of its own: group "e2e"),
  through real kubectl.
- `make e2e` (MODELGATE_E2E_CLUSTER=current): the current kubectl context, a cluster with
  modelgate deployed (`make kind-up images kind-load deploy`; the GitHub workflow's kind job).
  Without one the suite fails: it never skips there, nor anywhere when CI=true.

Model files reach the serving pods the same way in both: from a model store (a ConfigMap served
over http from the serving image), downloaded and digest-checked.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.e2e import E2ECluster
from support.kubectl import KUBECTL

MODE = os.environ.get("MODELGATE_E2E_CLUSTER", "sandbox")


def _current_cluster() -> E2ECluster:
    """The current kubectl context, checked: it answers and has the CRD."""
    if MODE != "current":
        pytest.fail(f"MODELGATE_E2E_CLUSTER={MODE!r}: use sandbox (the default) or current")
    if KUBECTL is None:
        pytest.fail("MODELGATE_E2E_CLUSTER=current but kubectl is not installed")
    cluster = E2ECluster(kind="kind", env=dict(os.environ))
    for args in (("version", "--request-timeout=10s"),
                 ("get", "crd", "modeldeployments.modelgate.dev", "--request-timeout=10s")):
        try:
            result = cluster.run(*args, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"kubectl {' '.join(args)} timed out: no cluster answers")
        if result.returncode != 0:
            pytest.fail("MODELGATE_E2E_CLUSTER=current needs a cluster with modelgate deployed "
                        f"(make kind-up images kind-load deploy): kubectl {' '.join(args)}: "
                        f"{result.stderr.strip()}")
    return cluster


@pytest.fixture(scope="session")
def e2e_cluster(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
    from sandbox.models import build

    if MODE == "sandbox":
        env = request.getfixturevalue("sandbox_env")  # fails in CI without kubectl
        cluster = E2ECluster(kind="sandbox", env=env, sandbox_dir=Path(env["SANDBOX_DIR"]))
    else:
        cluster = _current_cluster()
        cluster.namespace = f"e2e-{uuid.uuid4().hex[:6]}"
        cluster.kubectl("create", "namespace", cluster.namespace)
    cluster.start_model_store(build(Path(tmp_path_factory.mktemp("models"))))
    yield cluster
    if cluster.kind == "sandbox":
        cluster.stop_model_store()
    else:
        cluster.kubectl("delete", "namespace", cluster.namespace, "--wait=false", check=False)
