"""The sandbox API server's metadata.managedFields, as k8s.io/apiserver's field manager keeps
them: an Update owns what it changed, an Apply owns its configuration, a changed field leaves
its other managers, a removed field leaves everyone (tests/kubectl/test_field_manager.py
reads them through real kubectl)."""

from __future__ import annotations

import copy
from typing import Any

from sandbox.kubeapi import fields_v1, managed_fields, owned_paths

NOW = "2026-01-01T00:00:00Z"


def md(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml", "uid": "u", "generation": 1,
                         "annotations": annotations or {}},
            "spec": {"model": {"version": "v1"}, **spec}, "status": {"phase": "Healthy"}}


def owners(obj: dict[str, Any]) -> dict[tuple[str, str], set[tuple[str, ...]]]:
    return {(e["manager"], e["operation"]): owned_paths(e["fieldsV1"])
            for e in obj["metadata"]["managedFields"]}


def write(before: dict[str, Any] | None, after: dict[str, Any], manager: str,
          operation: str = "Update", **options: Any) -> dict[str, Any]:
    result = copy.deepcopy(after)
    result["metadata"]["managedFields"] = managed_fields(before, after, manager, operation,
                                                         None, NOW, **options)
    return result


def test_fields_v1_round_trips_and_has_the_api_servers_form() -> None:
    paths = {("metadata", "annotations", "modelgate.dev/paused"), ("spec", "model", "version")}
    tree = fields_v1(paths)
    assert tree["f:metadata"] == {"f:annotations": {"f:modelgate.dev/paused": {}}}
    assert owned_paths(tree) == paths
    assert owned_paths({"f:metadata": {".": {}, "f:labels": {".": {}, "f:a": {}}}}) == \
        {("metadata", "labels", "a")}


def test_an_update_owns_what_it_changed_and_takes_it_from_others() -> None:
    created = write(None, md(), "kubectl-client-side-apply")
    assert ("spec", "model", "version") in owners(created)["kubectl-client-side-apply",
                                                           "Update"]
    assert not any(path[0] == "status" for path in owners(created)[
        "kubectl-client-side-apply", "Update"])  # status is the status subresource's
    paused = write(created, md({"modelgate.dev/paused": "true"}), "modelgate")
    assert owners(paused)["modelgate", "Update"] == {
        ("metadata", "annotations", "modelgate.dev/paused")}
    promoted = write(paused, md({"modelgate.dev/paused": "true", "modelgate.dev/promote": "1"}),
                     "kubectl-annotate")
    assert owners(promoted)["kubectl-annotate", "Update"] == {
        ("metadata", "annotations", "modelgate.dev/promote")}
    assert owners(promoted)["modelgate", "Update"] == {
        ("metadata", "annotations", "modelgate.dev/paused")}
    resumed = write(promoted, md({"modelgate.dev/promote": "1"}), "modelgate")
    assert ("modelgate", "Update") not in owners(resumed)  # owns nothing: dropped


def test_an_apply_owns_its_configuration() -> None:
    config = {"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelDeployment",
              "metadata": {"name": "iris"}, "spec": {"model": {"version": "v2"}}}
    created = write(None, md(), "kubectl-client-side-apply")
    applied = write(created, md(model={"version": "v2"}), "kustomize-controller", "Apply",
                    applied=config)
    assert owners(applied)["kustomize-controller", "Apply"] == {("spec", "model", "version")}
    assert ("spec", "model", "version") not in owners(applied)[
        "kubectl-client-side-apply", "Update"]


def deployment(image: str = "serving:1", env: dict[str, str] | None = None,
               replicas: int = 2) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "iris-stable", "namespace": "ml", "uid": "d"},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "server", "image": image,
                 "env": [{"name": k, "value": v} for k, v in (env or {"A": "1"}).items()]}]}}}}


def test_core_kinds_own_associative_list_items_by_key_as_a_real_server_shows() -> None:
    created = write(None, deployment(), "modelgate", keyed=True)
    server = 'k:{"name":"server"}'
    tree = created["metadata"]["managedFields"][0]["fieldsV1"]
    assert tree["f:spec"]["f:template"]["f:spec"]["f:containers"][server]["f:env"] == {
        'k:{"name":"A"}': {"f:name": {}, "f:value": {}}}
    # `kubectl set image` owns the image alone; `kubectl patch` adding a variable owns it
    imaged = write(created, deployment(image="serving:2"), "kubectl-set", keyed=True)
    patched = write(imaged, deployment(image="serving:2", env={"A": "1", "B": "2"}),
                    "kubectl-patch", keyed=True)
    found = owners(patched)
    assert found[("kubectl-set", "Update")] == {
        ("spec", "template", "spec", "containers", server, "image")}
    assert found[("kubectl-patch", "Update")] == {
        ("spec", "template", "spec", "containers", server, "env", 'k:{"name":"B"}', key)
        for key in ("name", "value")}
    assert ("spec", "template", "spec", "containers", server, "image") not in \
        found[("modelgate", "Update")]
    assert owned_paths(fields_v1(found[("kubectl-patch", "Update")])) == \
        found[("kubectl-patch", "Update")]


def test_a_scale_write_is_recorded_under_the_scale_subresource() -> None:
    created = write(None, deployment(), "modelgate", keyed=True)
    scaled = copy.deepcopy(deployment(replicas=5))
    scaled["metadata"]["managedFields"] = managed_fields(created, scaled, "kubectl", "Update",
                                                         "scale", NOW, keyed=True)
    (entry,) = [e for e in scaled["metadata"]["managedFields"] if e["manager"] == "kubectl"]
    assert entry["subresource"] == "scale"
    assert owned_paths(entry["fieldsV1"]) == {("spec", "replicas")}
    assert ("spec", "replicas") not in owners(scaled)[("modelgate", "Update")]
