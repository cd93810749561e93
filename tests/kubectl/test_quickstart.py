"""The README's sandbox quickstart, run as written: a whole release through kubectl alone."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from support.kubectl import ROOT, Kubectl

# one xdist worker for the group: the session sandbox starts once (`--dist loadgroup`)
pytestmark = [pytest.mark.kubectl, pytest.mark.xdist_group("kubectl")]


def quickstart() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- sandbox-quickstart:begin.*?-->\n```sh\n(.*?)```", readme, re.S)
    assert block, "README.md lost its sandbox quickstart block"
    return block.group(1)


def test_the_readme_quickstart_block_starts_the_sandbox_and_uses_only_kubectl() -> None:
    lines = [line.split("#")[0].strip() for line in quickstart().splitlines()]
    assert lines[0] == 'eval "$(make -s sandbox-up)"'
    assert all(line.startswith("kubectl ") for line in lines[1:] if line)


def test_the_readme_quickstart_works_as_written(sandbox_env: dict[str, str],
                                                kubectl: Kubectl) -> None:
    # sandbox-up is idempotent: the block's own `make sandbox-up` finds the session's sandbox
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", quickstart()], cwd=ROOT,
                            env=sandbox_env, capture_output=True, text=True, timeout=900,
                            check=False)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    out = result.stdout
    assert re.search(r"NAME\s+PHASE\s+READY\s+STABLE\s+CANARY\s+WEIGHT\s+AGE\n"
                     r"iris\s+Healthy\s+True\s+v2\s", out), out
    for reason in ("RolloutStarted", "StepCompleted", "RolledBack"):
        assert reason in out  # describe's Events
    assert "deployment.apps/iris-stable" in out
    assert "service/iris" in out
    assert re.search(r"pod/iris-stable-\S+\s+1/1\s+Running", out), out
    assert "modelgate-serve on 127." in out or "serving iris version v2" in out  # logs
    assert "FIELD: analysis <Object>" in out  # explain
    assert "interval\t<string>" in out
    assert 'modeldeployment.modelgate.dev "iris" deleted' in out
    # garbage collection takes every child with the owner; pods linger Terminating until the
    # kubelet has stopped them, as on a cluster
    deadline = time.monotonic() + 60
    left = "?"
    while left and time.monotonic() < deadline:
        left = kubectl("get", "deploy,svc,pods", "-l", "app.kubernetes.io/instance=iris",
                       "-o", "name").stdout.strip()
        time.sleep(0.5)
    assert left == "", f"left after the delete: {left}"
