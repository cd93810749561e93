"""What a real cluster does that a kind API server would not (issue 22, parts 2-4), through real
kubectl against the sandbox: a canary whose pods never become ready (a model that crashes its
server, a serving image that cannot be pulled) is rolled back at its progress deadline with the
cause read from its pods; a name that cannot name a Service is
refused at apply, and the edge of the rule deploys; a write that admission refuses shows in
status and Events, and an abort still removes the canary."""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.kubectl import Kubectl
from support.waiting import wait_for

pytestmark = [pytest.mark.kubectl, pytest.mark.xdist_group("kubectl")]

REFUSALS = "sandbox-admission-refusals"
"""tests/sandbox/admission.py's switch: a ConfigMap of admission refusals."""


@pytest.fixture
def example(sandbox_env: dict[str, str]) -> dict[str, Any]:
    """The sandbox's iris v1 example (2 replicas, quick analysis settings)."""
    text = (Path(sandbox_env["MODELGATE_SANDBOX"]) / "examples" / "iris-v1.yaml").read_text()
    return dict(yaml.safe_load(text))


def model(example: dict[str, Any], version: str, trusted: tuple[str, ...] = ()) -> dict[str, Any]:
    """spec.model of another of the sandbox's model files, beside v1's."""
    v1 = Path(example["spec"]["model"]["uri"].removeprefix("file://"))
    path = v1.parent.parent / version / "model.skops"
    found = {"version": version, "uri": path.as_uri(),
             "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {**found, "trustedTypes": list(trusted)} if trusted else found


def deployed(kubectl: Kubectl, example: dict[str, Any], name: str, **spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(example)
    body["metadata"]["name"] = name
    body["spec"].update(spec)
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))
    kubectl("wait", f"md/{name}", "--for=jsonpath={.status.phase}=Healthy", "--timeout=180s",
            timeout=240)
    return body


def events(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    return list(kubectl.json("get", "events", "--field-selector",
                             f"involvedObject.name={name}")["items"])


def condition(kubectl: Kubectl, name: str, kind: str) -> dict[str, Any] | None:
    status = kubectl.json("get", "md", name).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), None)


@pytest.fixture
def cleanup(kubectl: Kubectl) -> Iterator[list[str]]:
    """Names of objects (`kind/name`) to delete after the test, whatever it did."""
    names: list[str] = []
    yield names
    for name in names:
        kubectl("delete", name, "--ignore-not-found", "--wait=false", check=False)


# --- names -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["iris.v2", "2iris"])
def test_a_name_that_cannot_name_a_service_is_refused_at_apply(
        kubectl: Kubectl, example: dict[str, Any], name: str) -> None:
    body = copy.deepcopy(example)
    body["metadata"]["name"] = name
    refused = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body), check=False)
    assert refused.returncode != 0
    assert f'The ModelDeployment "{name}" is invalid' in refused.stderr, refused.stderr
    assert "metadata.name must be a DNS-1035 label" in refused.stderr, refused.stderr
    assert kubectl("get", "md", name, "--ignore-not-found", "-o", "name").stdout == ""


def test_the_api_server_refuses_such_a_service_name_as_a_cluster_does(kubectl: Kubectl) -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "2iris"},
               "spec": {"selector": {"app": "iris"}, "ports": [{"port": 80}]}}
    refused = kubectl("create", "-f", "-", stdin=json.dumps(service), check=False)
    assert refused.returncode != 0
    assert 'The Service "2iris" is invalid: metadata.name: Invalid value: "2iris": a DNS-1035 ' \
        "label must consist of lower case alphanumeric characters or '-', start with an " \
        "alphabetic character" in refused.stderr, refused.stderr


def test_a_name_at_the_edge_of_the_rule_deploys_with_its_service(
        kubectl: Kubectl, example: dict[str, Any], cleanup: list[str]) -> None:
    cleanup.append("md/z9")  # one letter, ending in a digit
    deployed(kubectl, example, "z9", serving={**example["spec"]["serving"], "replicas": 1})
    assert kubectl.json("get", "service", "z9")["spec"]["selector"]
    assert kubectl.json("get", "deploy", "z9-stable")["status"]["readyReplicas"] == 1


# --- progress deadlines ------------------------------------------------------------------------

def test_a_crash_looping_canary_is_rolled_back_at_its_deadline_with_the_last_log_line(
        kubectl: Kubectl, example: dict[str, Any], cleanup: list[str]) -> None:
    cleanup.append("md/crashy")
    rollout = {"steps": [{"setWeight": 50}, {"analysis": {}}], "progressDeadline": "30s"}
    body = deployed(kubectl, example, "crashy", rollout=rollout)

    body["spec"]["model"] = model(example, "v3-crash", ("sandbox.models.CrashingClassifier",))
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))
    kubectl("wait", "md/crashy", "--for=jsonpath={.status.phase}=RolledBack", "--timeout=120s",
            timeout=180)

    status = kubectl.json("get", "md", "crashy")["status"]
    message = status["message"]
    assert "canary v3-crash's pods were not ready within the progress deadline (30s): pod " \
        "crashy-canary-" in message, message
    assert "exit code 3; last log line: fatal: CrashingClassifier cannot run in this process" \
        in message, message
    assert status["stable"]["version"] == "v1"
    assert status["history"][-1]["outcome"] == "RolledBack"
    # within its deadline: rolled back a few ticks after the 30 s ran out, not later
    started = next(e for e in events(kubectl, "crashy") if e["reason"] == "RolloutStarted")
    rolled = wait_for("the RolledBack Event (posted right after the status)", lambda: next(
        (e for e in events(kubectl, "crashy") if e["reason"] == "RolledBack"), None), 30)
    assert "CrashingClassifier" in rolled["message"]
    assert rolled["type"] == "Warning"
    waited = _seconds(rolled["lastTimestamp"]) - _seconds(started["lastTimestamp"])
    assert 30 - 1 <= waited <= 30 + 10, waited
    wait_for("the canary Deployment to go", lambda: not kubectl(
        "get", "deploy", "crashy-canary", "--ignore-not-found", "-o", "name").stdout)


def test_a_canary_whose_image_cannot_be_pulled_is_rolled_back_with_the_kubelets_reason(
        kubectl: Kubectl, example: dict[str, Any], cleanup: list[str]) -> None:
    cleanup.append("md/badimage")
    rollout = {"steps": [{"setWeight": 50}, {"analysis": {}}], "progressDeadline": "15s"}
    body = deployed(kubectl, example, "badimage", rollout=rollout)

    image = "registry.invalid/modelgate/serving:1"  # a serving change: canaried
    body["spec"]["serving"] = {**body["spec"]["serving"], "image": image}
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))
    kubectl("wait", "md/badimage", "--for=jsonpath={.status.phase}=RolledBack",
            "--timeout=120s", timeout=180)

    message = kubectl.json("get", "md", "badimage")["status"]["message"]
    assert "were not ready within the progress deadline (15s): pod badimage-canary-" \
        in message, message
    assert "container server: ImagePullBackOff: Back-off pulling image " \
        f'"{image}"' in message, message
    stable = kubectl.json("get", "deploy", "badimage-stable")
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == "sandbox"


def _seconds(timestamp: str) -> float:
    return datetime.datetime.fromisoformat(timestamp).timestamp()


def deployment(name: str, image: str, resources: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels}, "spec": {"containers": [{
                    "name": "server", "image": image, "resources": resources or {},
                    "ports": [{"containerPort": 8080}]}]}}}}


def test_the_kubelet_stand_in_reports_pulls_that_fail_and_pods_that_do_not_fit(
        kubectl: Kubectl, cleanup: list[str]) -> None:
    cleanup.extend(["deploy/pull-fails", "deploy/too-big"])
    # (kubectl create deployment speaks protobuf, which the sandbox does not: JSON instead)
    kubectl("create", "-f", "-", stdin=json.dumps(
        deployment("pull-fails", "registry.invalid/modelgate/serving:1")))
    kubectl("create", "-f", "-", stdin=json.dumps(
        deployment("too-big", "sandbox", {"requests": {"cpu": "64"}})))

    def waiting(app: str) -> str | None:
        for pod in kubectl.json("get", "pods", "-l", f"app={app}")["items"]:
            for container in pod.get("status", {}).get("containerStatuses") or []:
                reason = (container.get("state") or {}).get("waiting", {}).get("reason")
                if reason == "ImagePullBackOff":
                    return json.dumps(container)
        return None

    pulled = wait_for("ImagePullBackOff", lambda: waiting("pull-fails"), timeout=60)
    assert 'Back-off pulling image \\"registry.invalid/modelgate/serving:1\\"' in pulled

    def unschedulable() -> str | None:
        for pod in kubectl.json("get", "pods", "-l", "app=too-big")["items"]:
            for found in pod.get("status", {}).get("conditions") or []:
                if found["type"] == "PodScheduled" and found.get("reason") == "Unschedulable":
                    return str(found["message"])
        return None

    message = wait_for("an Unschedulable pod", unschedulable, timeout=60)
    assert message.startswith("0/1 nodes are available: 1 Insufficient cpu.")


# --- refused writes ----------------------------------------------------------------------------

def test_a_refused_write_shows_in_status_and_events_and_an_abort_still_removes_the_canary(
        kubectl: Kubectl, example: dict[str, Any], cleanup: list[str]) -> None:
    cleanup.extend(["md/guarded", f"configmap/{REFUSALS}"])
    body = deployed(kubectl, example, "guarded",
                    rollout={"steps": [{"setWeight": 50}, {"pause": {}}]})
    body["spec"]["model"] = model(example, "v2")
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))
    kubectl("wait", "md/guarded", "--for=jsonpath={.status.canary.weight}=50",
            "--timeout=120s", timeout=180)

    policy = "the stable arm's replicas are frozen by policy"
    rule = json.dumps({"kind": "Deployment", "name": "guarded-stable", "verbs": ["patch"],
                       "message": policy})
    kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": REFUSALS},
        "data": {"stable": rule}}))
    kubectl("annotate", "md", "guarded", "modelgate.dev/abort=first")

    refused = wait_for("WritesAccepted=False", lambda: (
        (found := condition(kubectl, "guarded", "WritesAccepted")) is not None
        and found["status"] == "False" and found))
    expected = ("patch Deployment default/guarded-stable was refused by the API server (403 "
                'Forbidden): admission webhook "refusals.sandbox.modelgate.dev" denied the '
                f"request: {policy}")
    assert refused["message"] == expected
    assert refused["reason"] == "WriteRefused"
    status = kubectl.json("get", "md", "guarded")["status"]
    assert status["phase"] == "RolledBack"
    assert status["history"][-1]["outcome"] == "Aborted"
    wait_for("the canary Deployment to go", lambda: not kubectl(
        "get", "deploy", "guarded-canary", "--ignore-not-found", "-o", "name").stdout)
    posted = wait_for("the WriteRefused Event", lambda: [
        e for e in events(kubectl, "guarded") if e["reason"] == "WriteRefused"], 30)
    assert [e["message"] for e in posted] == [expected]
    assert posted[0]["type"] == "Warning"

    kubectl("delete", "configmap", REFUSALS)
    wait_for("WritesAccepted=True", lambda: (
        (found := condition(kubectl, "guarded", "WritesAccepted")) is not None
        and found["status"] == "True"))
    kubectl("wait", "deploy/guarded-stable", "--for=jsonpath={.status.readyReplicas}=2",
            "--timeout=120s", timeout=180)
    assert len([e for e in events(kubectl, "guarded") if e["reason"] == "WriteRefused"]) == 1
