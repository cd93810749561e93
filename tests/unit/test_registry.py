"""MLflow registry sources without a server: the models:/ URI and spec.registry as parsed, the
pods' token reference, the operator's token addresses, a resolution reused from status, and
write-back's bookkeeping. Against a real MLflow server: tests/operator/test_mlflow.py."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from modelgate import api, registry, registry_sync
from modelgate.core import manifests
from modelgate.core.state import HistoryEntry, Outcome, RolloutState
from modelgate.core.types import KeyRef, ModelFormat, RegistryModel, registry_model
from modelgate.settings import OperatorSettings

SHA = "a" * 64


def resource(model: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml"},
            "spec": {"model": {"version": "v7", **model}, **spec}}


@pytest.mark.parametrize(("uri", "parsed"), [
    ("models:/iris/7", RegistryModel(name="iris", version="7")),
    ("models:/churn.v2@champion", RegistryModel(name="churn.v2", alias="champion")),
    ("file:///m.skops", None),
])
def test_a_models_uri_names_a_version_or_an_alias(uri: str, parsed: RegistryModel | None
                                                  ) -> None:
    assert registry_model(uri) == parsed


def test_spec_registry_is_parsed_with_its_defaults() -> None:
    spec = api.parse(resource({"uri": "models:/iris@champion"}))
    assert spec.registry.tracking_uri is None
    assert spec.registry.write_back.enabled is False
    assert spec.registry.write_back.alias == "production"
    spec = api.parse(resource({"uri": "models:/iris/7"}, registry={
        "trackingUri": "http://mlflow:5000", "tokenSecretRef": {"name": "m", "key": "t"},
        "writeBack": {"enabled": True, "alias": "live"}}))
    assert spec.registry.tracking_uri == "http://mlflow:5000"
    assert spec.registry.token_secret_ref == KeyRef(kind="secret", name="m", key="t")
    assert (spec.registry.write_back.enabled, spec.registry.write_back.alias) == (True, "live")


@pytest.mark.parametrize(("model", "registry_spec", "field"), [
    ({"uri": "models:/iris"}, {}, "spec.model.uri"),
    ({"uri": "models:/iris/0"}, {}, "spec.model.uri"),
    ({"uri": "models:/iris@"}, {}, "spec.model.uri"),
    ({"uri": "models:/iris/7"}, {"trackingUri": "http://u:p@mlflow:5000"},
     "spec.registry.trackingUri"),
    ({"uri": "models:/iris/7"}, {"trackingUri": "http://mlflow:5000/?x=1"},
     "spec.registry.trackingUri"),
    ({"uri": "models:/iris/7"}, {"writeBack": {"alias": "7up"}}, "spec.registry.writeBack.alias"),
    ({"uri": "models:/iris/7"}, {"tokenSecretRef": {"name": "m"}},
     "spec.registry.tokenSecretRef.key"),
])
def test_bad_registry_fields_are_refused_by_name(model: dict[str, Any],
                                                 registry_spec: dict[str, Any],
                                                 field: str) -> None:
    with pytest.raises(api.SpecError) as raised:
        api.parse(resource(model, registry=registry_spec))
    assert any(problem.startswith(field) for problem in raised.value.problems), \
        raised.value.problems


def test_the_pods_get_the_download_token_by_reference_only() -> None:
    spec = api.parse(resource({"uri": "models:/iris/7"},
                              registry={"tokenSecretRef": {"name": "m", "key": "t"}}))
    body = manifests.deployment(spec, manifests.Owner("iris", "ml", "uid"), "stable",
                                spec.model, 2)
    env = body["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MODELGATE_DOWNLOAD_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "m", "key": "t"}}} in env


def test_the_operators_token_goes_only_to_its_addresses(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    settings = OperatorSettings(mlflow_tracking_uri="http://mlflow:5000",
                                mlflow_token_file=str(token_file))
    assert registry_sync.token(settings, "http://mlflow:5000/") == "s3cret"
    assert registry_sync.token(settings, "http://elsewhere:5000") is None
    settings = OperatorSettings(mlflow_token_file=str(token_file),
                                mlflow_token_addresses=("http://a:1", "http://b:2"))
    assert registry_sync.token(settings, "http://b:2") == "s3cret"


def test_no_tracking_server_is_a_reason_not_a_crash() -> None:
    spec = api.parse(resource({"uri": "models:/iris/7"}))
    with pytest.raises(registry.RegistryError) as raised:
        registry_sync.resolve_models(OperatorSettings(), spec, {"status": {}}, 0.0)
    assert raised.value.reason == "RegistryNotConfigured"


def _entry(**overrides: Any) -> dict[str, Any]:
    entry = registry.Resolution(
        uri="models:/iris@champion", tracking_uri="http://mlflow:5000", name="iris",
        version="3", alias="champion", artifact_uri="mlflow-artifacts:/1/r/artifacts/model",
        download_uri="http://mlflow:5000/api/2.0/mlflow-artifacts/artifacts/1/r/model.skops",
        file="model.skops", sha256=SHA, format=ModelFormat.SKOPS,
    ).to_status("v7", "2026-12-07T20:00:00.000Z")
    return {**entry, **overrides}


def test_a_resolution_in_status_is_reused_without_asking_the_registry() -> None:
    # the tracking server does not exist: only status can answer
    spec = api.parse(resource({"uri": "models:/iris@champion"},
                              registry={"trackingUri": "http://mlflow:5000"}))
    body = {"status": {"registry": {"resolved": [_entry()]}}}
    resolved, status, events = registry_sync.resolve_models(OperatorSettings(), spec, body, 0.0)
    assert resolved.model.uri == _entry()["downloadUri"]
    assert (resolved.model.sha256, resolved.model.version) == (SHA, "v7")
    assert status["resolved"] == [_entry()]
    assert events == ()


@pytest.mark.parametrize("model", [
    {"uri": "models:/iris@champion", "version": "v8"},      # another label
    {"uri": "models:/iris@champion", "sha256": "b" * 64},   # another pin
])
def test_a_changed_declaration_is_resolved_again(model: dict[str, Any]) -> None:
    spec = api.parse(resource(model, registry={"trackingUri": "http://127.0.0.1:9"}))
    body = {"status": {"registry": {"resolved": [_entry()]}}}
    with pytest.raises(registry.RegistryError) as raised:  # port 9: nothing listens
        registry_sync.resolve_models(OperatorSettings(mlflow_timeout_seconds=2), spec, body,
                                     0.0)
    assert raised.value.reason == "RegistryUnavailable"


def test_write_back_is_off_by_default_and_never_repeats_a_written_decision() -> None:
    state = RolloutState(history=(HistoryEntry("v7", Outcome.PROMOTED, "all passed", 100.0),))
    body = {"metadata": {"name": "iris", "namespace": "ml"}}
    current = {"resolved": [_entry()]}
    spec = api.parse(resource({"uri": "models:/iris@champion"}))
    assert registry_sync.write_back(OperatorSettings(), spec, body, state, None, current,
                                    0.0) == (current, ())
    spec = api.parse(resource({"uri": "models:/iris@champion"},
                              registry={"writeBack": {"enabled": True}}))
    written = {**current, "writeBack": {"key": "v7/Promoted/1970-01-01T00:01:40.000Z",
                                        "state": "Written"}}
    # written already: nothing is sent (the tracking server in status does not exist)
    assert registry_sync.write_back(OperatorSettings(), spec, body, state, None, written,
                                    0.0) == (written, ())


def test_a_registry_that_is_down_leaves_the_write_back_pending_with_one_event() -> None:
    state = RolloutState(history=(HistoryEntry("v7", Outcome.ROLLED_BACK, "error-rate", 1.0),))
    body = {"metadata": {"name": "iris", "namespace": "ml"}}
    spec = api.parse(resource({"uri": "models:/iris@champion"},
                              registry={"writeBack": {"enabled": True}}))
    current = {"resolved": [_entry(trackingUri="http://127.0.0.1:9")]}
    settings = OperatorSettings(mlflow_timeout_seconds=2)
    first, events = registry_sync.write_back(settings, spec, body, state, None, current, 0.0)
    assert first["writeBack"]["state"] == "Pending"
    assert [event.reason for event in events] == ["RegistryWriteBackFailed"]
    second, events = registry_sync.write_back(settings, spec, body, state, None, first, 1.0)
    assert (second["writeBack"]["attempts"], events) == (2, ())


class _Refusing(http.server.BaseHTTPRequestHandler):
    """A tracking server that records the Authorization header and answers 503."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_the_token_is_sent_as_a_bearer_and_never_in_a_message() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        source = api.parse(resource({"uri": "models:/iris/7"})).model
        with pytest.raises(registry.RegistryError) as raised:
            registry.resolve(source, url, "s3cret-token", 5)
    finally:
        server.shutdown()
    assert _Refusing.seen == ["Bearer s3cret-token"]
    assert raised.value.reason == "RegistryUnavailable"
    assert "s3cret" not in raised.value.message
