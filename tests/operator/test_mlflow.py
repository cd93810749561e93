"""MLflow's model registry as the model source, against a real MLflow tracking server
(tests/support/mlflow_server.py: `mlflow server`, SQLite backend, served artifacts) filled by
the real MLflow client: versions registered there are canaried in the sandbox, promotions
move the alias and tag the version, rollbacks tag it with the reason, and every kind of bad
input holds the rollout with the reason in status and Events, touching nothing that serves,
until it is fixed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
import requests
from sandbox import Sandbox
from sandbox.models import FAULTY_TYPE
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from support import mlflow_server
from support.rollouts import eventually, healthy, phase, serving_pods

# one xdist worker: the tests share the module's MLflow server and sandbox (`--dist loadgroup`)
pytestmark = [pytest.mark.sandbox, pytest.mark.xdist_group("mlflow")]


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[mlflow_server.Mlflow]:
    with mlflow_server.running(Path(tmp_path_factory.mktemp("mlflow"))) as server:
        yield server


def spec(sandbox: Sandbox, name: str, mlflow: mlflow_server.Mlflow, model: dict[str, Any],
         **registry: Any) -> dict[str, Any]:
    return sandbox.model_deployment(
        name, "v1", model=model, serving={"replicas": 2, "image": "sandbox"},
        registry={"trackingUri": mlflow.url, **registry})


def resolved(status: dict[str, Any], label: str) -> dict[str, Any]:
    entries = (status.get("registry") or {}).get("resolved") or []
    return next(entry for entry in reversed(entries) if entry["label"] == label)


def unresolved(reason: str) -> Any:
    def check(status: dict[str, Any]) -> bool:
        return status.get("phase") == "Degraded" and any(
            c["type"] == "ModelResolved" and c["status"] == "False" and c["reason"] == reason
            for c in status.get("conditions") or [])
    check.__name__ = f"Degraded, ModelResolved False for {reason}"
    return check


def only_stable_serves(sandbox: Sandbox, name: str, version: str) -> None:
    """Nothing was touched: the stable pods serve `version` and there is no canary."""
    assert f"{name}-canary" not in sandbox.deployments()
    pods = serving_pods(sandbox, name)
    assert pods
    assert {p["metadata"]["labels"]["modelgate.dev/version"] for p in pods} == {version}


def _ticks(sandbox: Sandbox) -> int:
    try:
        return sandbox.ticks()
    except requests.RequestException:  # its metrics port is not up yet
        return 0


def test_a_registered_version_is_canaried_promoted_and_the_alias_moves_once(
        sandbox: Sandbox, mlflow: mlflow_server.Mlflow, name: str) -> None:
    first = mlflow.register(name, sandbox.models["v1"].path)
    second = mlflow.register(name, sandbox.models["v2"].path)
    writeback = {"writeBack": {"enabled": True}}
    sandbox.apply(spec(sandbox, name, mlflow, {"version": "v1", "uri": f"models:/{name}/{first}"},
                       **writeback))
    status = sandbox.wait(name, healthy("v1"), timeout=90)
    entry = resolved(status, "v1")
    assert (entry["version"], entry["format"], entry["sha256"]) == (
        first, "skops", sandbox.models["v1"].sha256)
    assert status["stable"]["sha256"] == sandbox.models["v1"].sha256
    sandbox.start_traffic(name, 60)

    # the alias form: resolved once, to the version it names now
    mlflow.set_alias(name, "champion", second)
    sandbox.apply(spec(sandbox, name, mlflow, {"version": "v2", "uri": f"models:/{name}@champion"},
                       **writeback))
    status = sandbox.wait(name, healthy("v2"), timeout=150)
    entry = resolved(status, "v2")
    assert (entry["version"], entry["alias"]) == (second, "champion")
    status = sandbox.wait(name, lambda s: ((s.get("registry") or {}).get("writeBack") or {})
                          .get("state") == "Written", timeout=30, what="the write-back")
    assert status["registry"]["writeBack"]["version"] == second
    assert mlflow.alias(name, "production") == second
    tags = mlflow.version(name, second)["tags"]
    assert tags["modelgate.decision"] == "promoted"
    assert tags["modelgate.deployment"] == f"{sandbox.get(name)['metadata']['namespace']}/{name}"
    assert tags["modelgate.decided_at"] == status["history"][-1]["at"]
    sandbox.wait_events(name, "ModelResolved")

    # moving the alias in the registry changes nothing: git declares what serves
    mlflow.set_alias(name, "champion", first)
    # a restarted operator does not write the same decision again
    sandbox.kill_operator()
    sandbox.start_operator()
    eventually(lambda: _ticks(sandbox) > 0, timeout=60, what="the restarted operator ticking")
    sandbox.wait_ticks(6)
    status = sandbox.status(name)
    assert status["phase"] == "Healthy"
    assert status["stable"]["version"] == "v2"
    assert resolved(status, "v2")["version"] == second
    assert sandbox.event_reasons(name).count("RegistryUpdated") == 1
    assert status["registry"]["writeBack"]["attempts"] == 1


def test_a_bad_registered_version_is_rolled_back_and_tagged_with_the_reason(
        sandbox: Sandbox, mlflow: mlflow_server.Mlflow, name: str) -> None:
    good = mlflow.register(name, sandbox.models["v1"].path)
    bad = mlflow.register(name, sandbox.models["v3"].path)
    writeback = {"writeBack": {"enabled": True, "alias": "live"}}
    sandbox.apply(spec(sandbox, name, mlflow, {"version": "v1", "uri": f"models:/{name}/{good}"},
                       **writeback))
    sandbox.wait(name, healthy("v1"), timeout=90)
    sandbox.start_traffic(name, 80)

    sandbox.apply(spec(sandbox, name, mlflow, {"version": "v3", "uri": f"models:/{name}/{bad}",
                                               "trustedTypes": [FAULTY_TYPE]}, **writeback))
    status = sandbox.wait(name, phase("RolledBack"), timeout=120)
    assert status["stable"]["version"] == "v1"
    status = sandbox.wait(name, lambda s: ((s.get("registry") or {}).get("writeBack") or {})
                          .get("state") == "Written", timeout=30, what="the write-back")
    tags = mlflow.version(name, bad)["tags"]
    assert tags["modelgate.decision"] == "rolled_back"
    assert "error-rate" in tags["modelgate.reason"]
    assert "error-rate: fail" in tags["modelgate.summary"]
    assert mlflow.alias(name, "live") is None  # a rollback moves no alias


def test_bad_registry_input_holds_with_the_reason_and_resumes_when_fixed(
        sandbox: Sandbox, mlflow: mlflow_server.Mlflow, name: str,
        tmp_path: Path) -> None:
    good = mlflow.register(name, sandbox.models["v1"].path)
    sandbox.apply(spec(sandbox, name, mlflow, {"version": "v1", "uri": f"models:/{name}/{good}"}))
    sandbox.wait(name, healthy("v1"), timeout=90)

    def declare(model: dict[str, Any]) -> None:
        # sandbox.apply merges spec.model: null what this declaration leaves out
        sandbox.apply(spec(sandbox, name, mlflow, {"sha256": None, "trusted": None, **model}))

    next_version = str(int(good) + 1)
    declare({"version": "v2", "uri": f"models:/{name}/{next_version}"})
    status = sandbox.wait(name, unresolved("ModelNotFound"), timeout=30)
    assert f"no version {next_version}" in status["message"]
    only_stable_serves(sandbox, name, "v1")

    declare({"version": "v2", "uri": f"models:/{name}@champion"})
    status = sandbox.wait(name, unresolved("AliasNotFound"), timeout=30)
    assert "no alias 'champion'" in status["message"]

    second = mlflow.register(name, sandbox.models["v2"].path)
    assert second == next_version
    declare({"version": "v2", "uri": f"models:/{name}/{second}", "sha256": "0" * 64})
    status = sandbox.wait(name, unresolved("DigestMismatch"), timeout=30)
    assert sandbox.models["v2"].sha256 in status["message"]
    only_stable_serves(sandbox, name, "v1")

    x, y = load_iris(return_X_y=True)
    pickled = tmp_path / "model.pkl"
    joblib.dump(LogisticRegression(max_iter=500, C=0.7).fit(x, y), pickled)
    pickle_version = mlflow.register(name, pickled, artifact="model.pkl")
    declare({"version": "v5", "uri": f"models:/{name}/{pickle_version}"})
    status = sandbox.wait(name, unresolved("PickleNotTrusted"), timeout=30)
    assert "trusted: true" in status["message"]
    only_stable_serves(sandbox, name, "v1")
    # Events follow the status that records them: wait for the last one's
    sandbox.wait_events(name, "ModelNotFound", "AliasNotFound", "DigestMismatch",
                        "PickleNotTrusted")

    # MLflow down while a new URI is resolved: held; back up: the rollout resumes
    mlflow_server.stop(mlflow)
    try:
        declare({"version": "v2", "uri": f"models:/{name}/{second}"})
        sandbox.wait(name, unresolved("RegistryUnavailable"), timeout=30)
        only_stable_serves(sandbox, name, "v1")
    finally:
        mlflow_server.restart(mlflow, mlflow.log.parent)
    status = sandbox.wait(name, lambda s: (s.get("canary") or {}).get("version") == "v2",
                          timeout=60, what="canary v2 once MLflow is back")
    assert resolved(status, "v2")["sha256"] == sandbox.models["v2"].sha256
    sandbox.wait_events(name, "ModelResolved")

    # the pickle, opted in: served as joblib, and said so
    declare({"version": "v5", "uri": f"models:/{name}/{pickle_version}", "trusted": True})
    status = sandbox.wait(name, lambda s: (s.get("canary") or {}).get("version") == "v5",
                          timeout=60, what="canary v5 from the trusted pickle")
    assert resolved(status, "v5")["format"] == "joblib"
    assert status["canary"]["format"] == "joblib"
    sandbox.wait_events(name, "PickleModelTrusted")
    eventually(lambda: sandbox.kubelet.ready_endpoints(
        {"app.kubernetes.io/instance": name, "modelgate.dev/version": "v5"}),
        timeout=60, what="a ready pod serving the pickle")
