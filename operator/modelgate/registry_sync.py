"""A tick's dealings with MLflow's registry, recorded in `status.registry`.

`resolve_models` swaps each models:/ URI of the spec for the file it resolved to. A URI is
resolved once and the answer kept in status (`resolved`), so an alias is followed when it is
first seen, not at every tick: what serves changes only when git changes the spec (its URI,
version label, sha256 or trust). `write_back` tells the registry of the tick's last decision,
once: `status.registry.writeBack` records what was written (a key of the decision), so a
retried tick or a restarted operator does not write it again, and a registry that is down
leaves it pending for the next tick without touching the decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from modelgate import registry
from modelgate.core.analysis import AnalysisRecord
from modelgate.core.state import Event, Outcome, RolloutState
from modelgate.core.types import ModelDeploymentSpec, ModelFormat, ModelSource, registry_model
from modelgate.settings import OperatorSettings
from modelgate.status import to_time

RESOLVED_LIMIT = 10
"""Resolutions kept in status: the current model and baseline, and enough past ones that a
decision about a model the spec no longer names still finds its registry version."""


def tracking_uri(settings: OperatorSettings, spec: ModelDeploymentSpec) -> str:
    uri = spec.registry.tracking_uri or settings.mlflow_tracking_uri
    if not uri:
        raise registry.RegistryError(
            "RegistryNotConfigured", "spec.model.uri names an MLflow model (models:/) but no "
            "tracking server is known: set spec.registry.trackingUri or the operator's "
            "MODELGATE_OPERATOR_MLFLOW_TRACKING_URI")
    return uri.rstrip("/")


def token(settings: OperatorSettings, uri: str) -> str | None:
    """The operator's MLflow token, for the addresses it may be sent to only."""
    if not settings.mlflow_token_file:
        return None
    allowed = settings.mlflow_token_addresses or (settings.mlflow_tracking_uri,)
    if uri.rstrip("/") not in {address.rstrip("/") for address in allowed if address}:
        return None
    try:
        return Path(settings.mlflow_token_file).read_text().strip() or None
    except OSError:
        raise registry.RegistryError(
            "RegistryUnavailable", "the MLflow token file (MODELGATE_OPERATOR_MLFLOW_TOKEN_FILE) "
            "cannot be read") from None


def _status(body: Mapping[str, Any]) -> dict[str, Any]:
    current = (body.get("status") or {}).get("registry")
    return dict(current) if isinstance(current, Mapping) else {}


def _matches(entry: Mapping[str, Any], source: ModelSource, tracking: str) -> bool:
    return (entry.get("uri") == source.uri and entry.get("trackingUri") == tracking
            and entry.get("label") == source.version
            and (source.sha256 is None or entry.get("sha256") == source.sha256)
            and (entry.get("format") != ModelFormat.JOBLIB.value or source.trusted))


def resolve_models(settings: OperatorSettings, spec: ModelDeploymentSpec,
                   body: Mapping[str, Any], now: float
                   ) -> tuple[ModelDeploymentSpec, dict[str, Any], tuple[Event, ...]]:
    """The spec with every models:/ URI resolved, status.registry, and Events of new
    resolutions. Raises registry.RegistryError when one cannot be resolved now."""
    current = _status(body)
    resolved = [entry for entry in current.get("resolved") or [] if isinstance(entry, Mapping)]
    events: list[Event] = []
    sources: dict[str, ModelSource | None] = {"model": spec.model, "baseline": spec.baseline}
    for role, source in sources.items():
        if source is None or registry_model(source.uri) is None:
            continue
        tracking = tracking_uri(settings, spec)
        entry = next((entry for entry in reversed(resolved)
                      if _matches(entry, source, tracking)), None)
        if entry is not None:
            resolution = registry.Resolution.from_status(entry)
        else:
            resolution = registry.resolve(source, tracking, token(settings, tracking),
                                          settings.mlflow_timeout_seconds)
            resolved = [*resolved, resolution.to_status(source.version, to_time(now))]
            alias = f" (alias {resolution.alias})" if resolution.alias else ""
            events.append(Event("ModelResolved", f"spec.{role}: {source.uri}{alias} is "
                                f"version {resolution.version} of {resolution.name}, file "
                                f"{resolution.file}, sha256 {resolution.sha256}"))
            if resolution.format is ModelFormat.JOBLIB:
                events.append(Event("PickleModelTrusted", f"spec.{role}: {source.uri} is "
                                    f"served from a pickle file ({resolution.file}), which runs "
                                    "code when loaded; the spec marks it trusted",
                                    warning=True))
        sources[role] = resolution.source(source)
    if not resolved:
        return spec, current, ()
    model = sources["model"]
    assert model is not None
    new_spec = replace(spec, model=model, baseline=sources["baseline"])
    return new_spec, {**current, "resolved": resolved[-RESOLVED_LIMIT:]}, tuple(events)


def write_back(settings: OperatorSettings, spec: ModelDeploymentSpec, body: Mapping[str, Any],
               state: RolloutState, record: AnalysisRecord | None,
               registry_status: Mapping[str, Any], now: float
               ) -> tuple[dict[str, Any], tuple[Event, ...]]:
    """Tell the registry of the last promotion or rollback, once (see the module's doc)."""
    current = dict(registry_status)
    if not spec.registry.write_back.enabled or not state.history:
        return current, ()
    last = state.history[-1]
    if last.outcome not in (Outcome.PROMOTED, Outcome.ROLLED_BACK):
        return current, ()
    key = f"{last.version}/{last.outcome.value}/{to_time(last.at)}"
    previous = current.get("writeBack") if isinstance(current.get("writeBack"), Mapping) else {}
    assert isinstance(previous, Mapping)
    if previous.get("key") == key and previous.get("state") == "Written":
        return current, ()
    entry = next((entry for entry in reversed(current.get("resolved") or [])
                  if isinstance(entry, Mapping) and entry.get("label") == last.version), None)
    if entry is None:  # not a registry model
        return current, ()
    metadata = body.get("metadata") or {}
    deployment = f"{metadata.get('namespace') or 'default'}/{metadata.get('name')}"
    promoted = last.outcome is Outcome.PROMOTED
    said = "promoted" if promoted else "rolled back"
    tags = [("modelgate.deployment", deployment),
            ("modelgate.decision", "promoted" if promoted else "rolled_back"),
            ("modelgate.decided_at", to_time(last.at)),
            ("modelgate.reason", last.reason)]
    if not promoted:
        tags.append(("modelgate.summary", _summary(record, last.reason)))
    alias = spec.registry.write_back.alias if promoted else None
    job = registry.WriteBack(name=str(entry["name"]), version=str(entry["version"]),
                             alias=alias, tags=tuple(tags))
    attempts = int(previous.get("attempts") or 0) + 1 if previous.get("key") == key else 1
    done = {"key": key, "name": job.name, "version": job.version,
            "decision": "promoted" if promoted else "rolled_back", "alias": alias,
            "attempts": attempts}
    try:
        registry.write_back(str(entry["trackingUri"]), token(settings, str(entry["trackingUri"])),
                            settings.mlflow_timeout_seconds, job)
    except registry.RegistryError as exc:
        current["writeBack"] = {**done, "state": "Pending", "error": exc.message}
        event = () if previous.get("key") == key else (Event(
            "RegistryWriteBackFailed", f"MLflow was not told that {job.name} version "
            f"{job.version} was {said}: {exc.message}; retried "
            "at every tick (the decision stands)", warning=True),)
        return current, event
    current["writeBack"] = {**done, "state": "Written", "at": to_time(now)}
    moved = f"; alias {alias} now points to it" if alias else ""
    return current, (Event("RegistryUpdated", f"MLflow: {job.name} version {job.version} "
                           f"tagged {said}{moved}"),)


def _summary(record: AnalysisRecord | None, reason: str) -> str:
    """The decision record in one line: the decision, its reason, each metric's verdict."""
    if record is None:
        return reason
    metrics = "; ".join(f"{metric.name}: {metric.verdict.value} ({metric.reason})"
                        for metric in record.metrics)
    return f"{record.decision.value}: {record.reason}" + (f" | {metrics}" if metrics else "")
