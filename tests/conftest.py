"""The sandbox of `make sandbox-up` for kubectl: one for the whole session of an xdist worker
(the tests that use it share an xdist group: "kubectl" for tests/kubectl, "kubectl-watch" for
its one long rollout watched live, "kubectl-dashboard" for the dashboard's browser tests, "e2e"
for tests/e2e in `make test`; groups on different workers get a sandbox each, groups that
xdist puts on one worker share it one test at a time), started and stopped by the make
targets a user runs, and checked to leave no process behind."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from support.kubectl import KUBECTL, ROOT, Kubectl


@pytest.fixture(scope="session")
def sandbox_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`eval "$(make -s sandbox-up)"`: the environment a user's shell has afterwards."""
    from sandbox.serve import _alive, descendants  # here: most sessions never start one

    if KUBECTL is None:
        if os.environ.get("CI"):  # CI has kubectl: its absence there is a failure, not a skip
            pytest.fail("CI without kubectl")
        pytest.skip("kubectl is not installed")
    workdir = tmp_path_factory.mktemp("sandbox-up")
    make_env = {**os.environ, "SANDBOX_DIR": str(workdir)}
    started = subprocess.run(["make", "-s", "sandbox-up"], cwd=ROOT, env=make_env,
                             capture_output=True, text=True, timeout=300, check=False)
    assert started.returncode == 0, started.stderr
    env = {**os.environ, "KUBECACHEDIR": str(workdir / "kube-cache")}
    for line in started.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    pid = int((workdir / "sandbox.pid").read_text())
    try:
        yield {**env, "SANDBOX_DIR": str(workdir)}
    finally:
        processes = descendants(pid) | {pid}
        stopped = subprocess.run(["make", "-s", "sandbox-down"], cwd=ROOT, env=make_env,
                                 capture_output=True, text=True, timeout=120, check=False)
        assert stopped.returncode == 0, stopped.stderr
        assert "did not stop" not in stopped.stderr, stopped.stderr
        assert [p for p in processes if _alive(p)] == [], "sandbox-down left processes"


@pytest.fixture(scope="session")
def kubectl(sandbox_env: dict[str, str]) -> Kubectl:
    return Kubectl(sandbox_env)
