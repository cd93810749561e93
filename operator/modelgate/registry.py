"""MLflow's model registry, through its REST API (`requests`, never the mlflow package).

Two jobs. `resolve` turns a `models:/<name>/<version>` or `models:/<name>@<alias>` URI into
what a serving pod can load without MLflow: the http URL of one model file in the version's
artifacts (served by the tracking server's artifact proxy, `mlflow server --serve-artifacts`),
its SHA-256 (the operator reads the file once and hashes it, so the digest is known before any
pod runs and the pods check the very file that was resolved) and its format (a skops file;
a pickle file only when the spec marks the model trusted). `write_back` moves an alias and sets
tags after a decision. Every failure is a `RegistryError` with a reason (a CamelCase word for
conditions and Events) and one sentence; no message carries the token or a request header.
The REST endpoints are MLflow's documented 2.0 API
(https://mlflow.org/docs/latest/api_reference/rest-api.html).
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from modelgate.core.types import ModelFormat, ModelSource, registry_model

SKOPS_SUFFIXES = (".skops",)
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
MAX_MODEL_BYTES = 1024 * 1024 * 1024
"""The serving image's default --max-model-bytes: a larger file would not load anyway."""


class RegistryError(Exception):
    """A models:/ URI that cannot be resolved now, or a write the registry refused."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Resolution:
    """One models:/ URI as resolved: what serves, and where it came from."""

    uri: str
    tracking_uri: str
    name: str
    version: str
    alias: str | None
    artifact_uri: str
    download_uri: str
    file: str
    sha256: str
    format: ModelFormat

    def to_status(self, label: str, at: str) -> dict[str, Any]:
        return {"uri": self.uri, "trackingUri": self.tracking_uri, "label": label,
                "name": self.name, "version": self.version, "alias": self.alias,
                "artifactUri": self.artifact_uri, "downloadUri": self.download_uri,
                "file": self.file, "sha256": self.sha256, "format": self.format.value,
                "resolvedAt": at}

    @classmethod
    def from_status(cls, entry: Mapping[str, Any]) -> Resolution:
        return cls(uri=str(entry["uri"]), tracking_uri=str(entry["trackingUri"]),
                   name=str(entry["name"]), version=str(entry["version"]),
                   alias=entry.get("alias"), artifact_uri=str(entry.get("artifactUri", "")),
                   download_uri=str(entry["downloadUri"]), file=str(entry.get("file", "")),
                   sha256=str(entry["sha256"]), format=ModelFormat(entry["format"]))

    def source(self, declared: ModelSource) -> ModelSource:
        """The declared model with the registry's file in place of the models:/ URI."""
        return ModelSource(version=declared.version, uri=self.download_uri, sha256=self.sha256,
                           format=self.format, trusted=declared.trusted,
                           trusted_types=declared.trusted_types)


class Client:
    """One tracking server's REST API, with the operator's token when it may be sent there."""

    def __init__(self, tracking_uri: str, token: str | None, timeout: float) -> None:
        self.base = tracking_uri.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.session.close()

    def _call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
              body: Mapping[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        try:
            response = self.session.request(method, f"{self.base}{path}", params=params,
                                            json=body, timeout=self.timeout)
        except requests.RequestException as error:
            raise RegistryError("RegistryUnavailable", f"the MLflow tracking server {self.base} "
                                f"cannot be reached ({type(error).__name__})") from None
        if response.status_code >= 500 or response.status_code in (401, 403, 429):
            raise RegistryError("RegistryUnavailable", f"the MLflow tracking server {self.base} "
                                f"answered HTTP {response.status_code} to {path}")
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        return response.status_code, payload if isinstance(payload, dict) else {}

    def get(self, endpoint: str, **params: str) -> tuple[int, dict[str, Any]]:
        return self._call("GET", endpoint, params=params)

    def post(self, path: str, body: Mapping[str, Any]) -> None:
        status, payload = self._call("POST", path, body=body)
        if status != 200:
            raise RegistryError("RegistryRefused", f"{path}: HTTP {status} "
                                f"{_error_text(payload)}")

    # --- resolution --------------------------------------------------------------------

    def model_version(self, name: str, version: str | None, alias: str | None
                      ) -> dict[str, Any]:
        if alias is not None:
            status, payload = self.get("/api/2.0/mlflow/registered-models/alias",
                                       name=name, alias=alias)
            if status == 200 and isinstance(payload.get("model_version"), dict):
                return dict(payload["model_version"])
            self._require_model(name)
            raise RegistryError("AliasNotFound", f"model {name!r} of {self.base} has no alias "
                                f"{alias!r}: {_error_text(payload)}")
        status, payload = self.get("/api/2.0/mlflow/model-versions/get",
                                   name=name, version=str(version))
        if status == 200 and isinstance(payload.get("model_version"), dict):
            return dict(payload["model_version"])
        self._require_model(name)
        raise RegistryError("ModelNotFound", f"model {name!r} of {self.base} has no version "
                            f"{version}: {_error_text(payload)}")

    def _require_model(self, name: str) -> None:
        status, payload = self.get("/api/2.0/mlflow/registered-models/get", name=name)
        if status != 200:
            raise RegistryError("ModelNotFound", f"{self.base} has no registered model "
                                f"{name!r}: {_error_text(payload)}")

    def download_uri(self, name: str, version: str) -> str:
        status, payload = self.get("/api/2.0/mlflow/model-versions/get-download-uri",
                                   name=name, version=version)
        uri = payload.get("artifact_uri")
        if status != 200 or not isinstance(uri, str):
            raise RegistryError("ModelNotFound", f"model {name!r} version {version}: no "
                                f"artifact location ({_error_text(payload)})")
        return uri

    def artifact_path(self, artifact_uri: str) -> str:
        """The proxy path of an `mlflow-artifacts:` URI (the only store the pods can reach
        through the tracking server)."""
        parsed = urllib.parse.urlsplit(artifact_uri)
        if parsed.scheme != "mlflow-artifacts":
            raise RegistryError("UnsupportedArtifactStore", f"the artifacts are at "
                                f"{parsed.scheme}:// ; modelgate downloads models through the "
                                "tracking server's artifact proxy (mlflow server "
                                "--serve-artifacts, mlflow-artifacts:/ locations)")
        return parsed.path.strip("/")

    def list_files(self, path: str) -> list[tuple[str, int]]:
        status, payload = self.get("/api/2.0/mlflow-artifacts/artifacts", path=path)
        if status != 200:
            raise RegistryError("ModelNotFound", f"the artifacts at {path} cannot be listed: "
                                f"HTTP {status} {_error_text(payload)}")
        files = []
        for item in payload.get("files") or []:
            if isinstance(item, dict) and not item.get("is_dir"):
                files.append((str(item.get("path", "")).rsplit("/", 1)[-1],
                              int(item.get("file_size") or 0)))
        return files

    def file_url(self, path: str, file: str) -> str:
        quoted = urllib.parse.quote(f"{path}/{file}")
        return f"{self.base}/api/2.0/mlflow-artifacts/artifacts/{quoted}"

    def sha256(self, url: str) -> str:
        digest = hashlib.sha256()
        size = 0
        try:
            with self.session.get(url, stream=True, timeout=self.timeout) as response:
                if response.status_code != 200:
                    raise RegistryError("RegistryUnavailable" if response.status_code >= 500
                                        else "ModelNotFound",
                                        f"downloading the model file: HTTP "
                                        f"{response.status_code}")
                for chunk in response.iter_content(chunk_size=1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    if size > MAX_MODEL_BYTES:
                        raise RegistryError("ModelTooLarge", f"the model file is over "
                                            f"{MAX_MODEL_BYTES} bytes")
        except requests.RequestException as error:
            raise RegistryError("RegistryUnavailable", f"downloading the model file from "
                                f"{self.base} failed ({type(error).__name__})") from None
        return digest.hexdigest()


def resolve(source: ModelSource, tracking_uri: str, token: str | None,
            timeout: float) -> Resolution:
    """Resolve `source` (a models:/ URI) against the tracking server."""
    parsed = registry_model(source.uri)
    assert parsed is not None, "resolve() is for models:/ URIs"
    client = Client(tracking_uri, token, timeout)
    try:
        record = client.model_version(parsed.name, parsed.version, parsed.alias)
        version = str(record.get("version") or parsed.version)
        artifact_uri = client.download_uri(parsed.name, version)
        path = client.artifact_path(artifact_uri)
        names = sorted(name for name, _ in client.list_files(path))
        model_format, file = _choose(names, source, parsed.name, version)
        url = client.file_url(path, file)
        digest = client.sha256(url)
    finally:
        client.close()
    if source.sha256 is not None and digest != source.sha256:
        raise RegistryError("DigestMismatch", f"{source.uri} (version {version}, {file}) has "
                            f"SHA-256 {digest}; the spec pins {source.sha256}: refusing a file "
                            "that is not the declared model")
    return Resolution(uri=source.uri, tracking_uri=client.base, name=parsed.name,
                      version=version, alias=parsed.alias, artifact_uri=artifact_uri,
                      download_uri=url, file=file, sha256=digest, format=model_format)


def _choose(names: list[str], source: ModelSource, name: str,
            version: str) -> tuple[ModelFormat, str]:
    """The file to serve: a skops file; a pickle only when the spec trusts the model."""
    skops = [file for file in names if file.endswith(SKOPS_SUFFIXES)]
    if skops:
        return ModelFormat.SKOPS, "model.skops" if "model.skops" in skops else skops[0]
    pickles = [file for file in names if file.endswith(PICKLE_SUFFIXES)]
    if pickles:
        file = "model.pkl" if "model.pkl" in pickles else pickles[0]
        if not source.trusted:
            raise RegistryError("PickleNotTrusted", f"model {name!r} version {version} has "
                                f"only a pickle file ({file}), which runs code when loaded: "
                                "set trusted: true on the model to accept that, or log the "
                                "model with a .skops file")
        return ModelFormat.JOBLIB, file
    raise RegistryError("NoModelFile", f"model {name!r} version {version} has no .skops file "
                        "(nor a trusted pickle) among its artifacts "
                        f"({', '.join(names) or 'none'})")


@dataclass(frozen=True)
class WriteBack:
    """One decision to tell the registry."""

    name: str
    version: str
    alias: str | None
    """Moved to `version` (promotion); None for a rollback."""
    tags: tuple[tuple[str, str], ...]


def write_back(tracking_uri: str, token: str | None, timeout: float, job: WriteBack) -> None:
    """Move the alias (if any) and set the tags; each call is idempotent on the server."""
    client = Client(tracking_uri, token, timeout)
    try:
        if job.alias is not None:
            client.post("/api/2.0/mlflow/registered-models/alias",
                        {"name": job.name, "alias": job.alias, "version": job.version})
        for key, value in job.tags:
            client.post("/api/2.0/mlflow/model-versions/set-tag",
                        {"name": job.name, "version": job.version, "key": key,
                         "value": value[:5000]})
    finally:
        client.close()


def _error_text(payload: Mapping[str, Any]) -> str:
    code = payload.get("error_code")
    message = str(payload.get("message") or "")[:300]
    return f"{code}: {message}" if code else message or "no details"
