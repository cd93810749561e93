"""A change to how the model is served is canaried like a new version: the canary runs the
same model with the new spec.serving, judged against stable, which keeps the serving section
status records for it (through an operator restart); a replicas change applies at once."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from sandbox import Sandbox
from support.rollouts import deploy, eventually, healthy

pytestmark = pytest.mark.sandbox


def _server(deployment: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return result


def _ticked(sandbox: Sandbox) -> bool:
    try:
        return sandbox.ticks() > 0
    except requests.RequestException:  # its metrics port is not open yet
        return False


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in _server(deployment)["env"]}


def test_a_serving_change_is_canaried_judged_and_promoted_and_replicas_apply_at_once(
        sandbox: Sandbox, name: str) -> None:
    serving = {"replicas": 4, "image": "sandbox"}
    deploy(sandbox, name, "v1", serving=serving)
    stable_name, canary_name = f"{name}-stable", f"{name}-canary"
    assert sandbox.status(name)["stable"]["serving"]["image"] == "sandbox"

    # a new serving image and batching: a canary of the same model with the new serving
    changed = {**serving, "image": "sandbox:2", "batching": {"mode": "off"},
               "env": [{"name": "SERVING_FLAVOUR", "value": "b"}]}
    sandbox.apply(sandbox.model_deployment(name, "v1", serving=changed))

    def canary_with_weight(status: dict[str, Any]) -> bool:
        return (status.get("canary") or {}).get("weight", 0) > 0
    in_flight = sandbox.wait(name, canary_with_weight, what="the serving canary taking traffic")
    assert in_flight["canary"]["version"] == "v1"
    assert in_flight["canary"]["serving"]["image"] == "sandbox:2"
    assert in_flight["stable"]["serving"]["image"] == "sandbox"
    started = [e["message"] for e in sandbox.events(name) if e["reason"] == "RolloutStarted"]
    assert started[-1] == ("canary rollout of the serving change of version v1 "
                           "(serving.image, serving.env, serving.batching) started against "
                           "stable v1")

    # restart safety: a killed operator resumes from status, stable keeps its old serving
    sandbox.kill_operator()
    sandbox.start_operator()
    eventually(lambda: _ticked(sandbox), timeout=60, what="the restarted operator ticking")
    sandbox.wait_ticks(2)
    children = sandbox.deployments()
    assert _server(children[stable_name])["image"] == "sandbox"
    assert _env(children[stable_name])["MODELGATE_BATCHING"] == "auto"
    assert "SERVING_FLAVOUR" not in _env(children[stable_name])
    assert _server(children[canary_name])["image"] == "sandbox:2"
    assert _env(children[canary_name])["MODELGATE_BATCHING"] == "off"
    assert _env(children[canary_name])["SERVING_FLAVOUR"] == "b"

    done = sandbox.wait(name, lambda s: healthy("v1")(s) and (s.get("stable") or {}).get(
        "serving", {}).get("image") == "sandbox:2", timeout=240,
        what="the serving change promoted")
    assert done["history"][-1]["outcome"] == "Promoted"
    assert "serving change" in done["history"][-1]["reason"]
    assert done["analysis"]["decision"] == "promote"  # judged, not waved through
    assert done["stable"]["serving"]["batching"]["mode"] == "off"
    stable = eventually(lambda: (d := sandbox.deployments().get(stable_name)) and
                        _server(d)["image"] == "sandbox:2" and d,
                        what="stable rolled to the new serving")
    assert _env(stable)["SERVING_FLAVOUR"] == "b"
    # deleted in the foreground: listed until its pods are gone
    eventually(lambda: canary_name not in sandbox.deployments(), what="the canary deleted")

    # replicas is not risky: applied to stable at once, no canary
    rollouts = sandbox.event_reasons(name).count("RolloutStarted")
    sandbox.apply(sandbox.model_deployment(name, "v1", serving={**changed, "replicas": 3}))
    eventually(lambda: sandbox.deployments()[stable_name]["spec"]["replicas"] == 3,
               what="stable scaled to 3")
    sandbox.wait(name, healthy("v1"))
    sandbox.wait_ticks(2)
    assert canary_name not in sandbox.deployments()
    assert sandbox.event_reasons(name).count("RolloutStarted") == rollouts
    assert sandbox.status(name).get("canary") is None
