"""Drift: the fields of a child that the operator owns, compared with what it writes, and who
changed them (metadata.managedFields). The sandbox shows the same through real kubectl
(tests/operator/test_owned_children.py)."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import REGISTRY
from support.cluster import FakeCluster

from modelgate import api
from modelgate.core import manifests
from modelgate.deployments import Change, changed_by, drift
from modelgate.reconcile import reconcile
from modelgate.settings import OperatorSettings

SERVER = 'k:{"name":"server"}'


def body(**serving: Any) -> dict[str, Any]:
    return {"metadata": {"name": "iris", "namespace": "ml", "generation": 1, "uid": "u1"},
            "spec": {"model": {"version": "v1", "uri": "file:///m"},
                     "serving": {"env": [{"name": "TOKEN", "value": "s3cret"}],
                                 "resources": {"requests": {"cpu": "0.5"}}, **serving}}}


def wanted(**serving: Any) -> dict[str, Any]:
    spec = api.parse(body(**serving))
    owner = manifests.Owner(name="iris", namespace="ml", uid="u1")
    return manifests.deployment(spec, owner, manifests.STABLE, spec.model, 2)


def live(**serving: Any) -> dict[str, Any]:
    """What an API server returns: defaults added, quantities in canonical form."""
    obj: dict[str, Any] = json.loads(json.dumps(wanted(**serving)))  # no shared sub-objects
    obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    obj["spec"]["revisionHistoryLimit"] = 10
    container = obj["spec"]["template"]["spec"]["containers"][0]
    container["terminationMessagePath"] = "/dev/termination-log"
    container["readinessProbe"]["successThreshold"] = 1
    container["readinessProbe"]["httpGet"]["scheme"] = "HTTP"
    container["resources"]["requests"]["cpu"] = "500m"
    obj["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] = "x"
    return obj


def container(obj: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return result


def test_server_defaults_canonical_quantities_and_others_fields_are_not_drift() -> None:
    assert drift(wanted(), live()) == []
    # an empty env value is omitted from what the API server returns
    empty = live(env=[{"name": "EMPTY", "value": ""}])
    variable = next(e for e in container(empty)["env"] if e["name"] == "EMPTY")
    del variable["value"]
    assert drift(wanted(env=[{"name": "EMPTY", "value": ""}]), empty) == []


def test_a_service_edited_by_someone_is_drift() -> None:
    spec = api.parse(body())
    owner = manifests.Owner(name="iris", namespace="ml", uid="u1")
    service = manifests.service(spec, owner)
    edited: dict[str, Any] = json.loads(json.dumps(service))
    edited["spec"]["clusterIP"] = "10.0.0.1"  # the server's: not ours
    assert drift(service, edited) == []
    edited["spec"]["ports"][0]["port"] = 8080
    edited["spec"]["selector"]["extra"] = "x"
    assert {change.field() for change in drift(service, edited)} == {
        "spec.ports[80,TCP]", "spec.ports[8080,TCP]", "spec.selector.extra"}


def test_each_owned_field_someone_changes_is_named() -> None:
    obj = live()
    obj["spec"]["replicas"] = 5
    container(obj)["image"] = "someone/else:1"
    next(e for e in container(obj)["env"] if e["name"] == "TOKEN")["value"] = "leaked"
    container(obj)["env"].append({"name": "EXTRA", "value": "1"})
    container(obj)["resources"]["limits"] = {"memory": "1Gi"}
    del container(obj)["livenessProbe"]
    obj["metadata"]["labels"]["modelgate.dev/role"] = "canary"
    found = {change.field(): change for change in drift(wanted(), obj)}
    assert set(found) == {
        "metadata.labels.modelgate.dev/role", "spec.replicas",
        "spec.template.spec.containers[server].image",
        "spec.template.spec.containers[server].env[TOKEN].value",
        "spec.template.spec.containers[server].env[EXTRA]",
        "spec.template.spec.containers[server].livenessProbe",
        "spec.template.spec.containers[server].resources.limits"}
    assert found["spec.replicas"].describe() == "spec.replicas was 5, restored to 2"
    # an env value is never quoted (it may be a secret), only named
    said = " ".join(change.describe() for change in found.values())
    assert "s3cret" not in said
    assert "leaked" not in said
    assert found["spec.template.spec.containers[server].env[EXTRA]"].how == "added"
    assert found["spec.template.spec.containers[server].livenessProbe"].how == "removed"


def test_the_manager_that_owns_a_changed_field_is_named() -> None:
    obj = live()
    obj["spec"]["replicas"] = 5
    container(obj)["image"] = "someone/else:1"
    obj["metadata"]["managedFields"] = [
        {"manager": "modelgate", "operation": "Update", "time": "2026-01-01T00:00:00Z",
         "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
             SERVER: {"f:env": {}}}}}}}},
        {"manager": "kubectl", "operation": "Update", "subresource": "scale",
         "time": "2026-01-01T00:01:00Z", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        {"manager": "kubectl-set", "operation": "Update", "time": "2026-01-01T00:02:00Z",
         "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
             SERVER: {"f:image": {}}}}}}}},
        {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
         "time": "2026-01-01T00:03:00Z", "fieldsV1": {"f:status": {"f:replicas": {}}}},
    ]
    by_field = {change.field(): changed_by(obj, change) for change in drift(wanted(), obj)}
    assert by_field == {
        "spec.replicas": "kubectl (through the scale subresource)",
        "spec.template.spec.containers[server].image": "kubectl-set"}
    # without managedFields nobody can be named
    assert changed_by(live(), Change(("spec", "replicas"), "changed", 2, 5)) is None


def test_a_tick_restores_a_drifted_deployment_and_says_who_did_it() -> None:
    cluster = FakeCluster(body())
    first = reconcile(cluster, OperatorSettings(), body(), now=5000.0)
    assert "DriftCorrected" not in cluster.events
    assert first.status is not None
    stored = cluster.deployments[("ml", "iris-stable")]
    stored["spec"]["replicas"] = 7
    stored["metadata"]["managedFields"] = [
        {"manager": "hpa-controller", "operation": "Update", "subresource": "scale",
         "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
    second = reconcile(cluster, OperatorSettings(), body(), now=5001.0)
    (event,) = [e for e in second.events if e.reason == "DriftCorrected"]
    assert event.warning
    assert "Deployment iris-stable" in event.message
    assert "by hpa-controller (through the scale subresource): spec.replicas was 7, " \
        "restored to 2" in event.message
    assert cluster.deployments[("ml", "iris-stable")]["spec"]["replicas"] == 2
    assert REGISTRY.get_sample_value("modelgate_operator_drift_corrected_total",
                                     {"namespace": "ml", "name": "iris"}) == 1
    # a planned change (the spec's replicas) is an update, not drift
    third = reconcile(cluster, OperatorSettings(), body(replicas=3), now=5002.0)
    assert [e for e in third.events if e.reason == "DriftCorrected"] == []
