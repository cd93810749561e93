"""Server settings: one frozen dataclass, read from flags with environment fallbacks.

Every flag also reads `MODELGATE_<NAME>` (for example `--model-uri` and `MODELGATE_MODEL_URI`),
so a Deployment can configure the server through `env` as well as `args` (docs/architecture.md,
contract 3). A flag given on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

ENV_PREFIX = "MODELGATE_"


class ModelFormat(str, Enum):
    """How the model file is serialised."""

    SKOPS = "skops"
    """skops: loads only types known safe, plus those listed as trusted. The default."""
    JOBLIB = "joblib"
    """joblib (pickle): runs code from the file; served only when the model is marked trusted."""


class BatchingMode(str, Enum):
    """Whether concurrent requests are predicted together."""

    AUTO = "auto"
    """Measure the model at load time; batch when one call costs enough that sharing it helps."""
    ON = "on"
    """Always batch concurrent requests, waiting up to max_wait to fill a batch."""
    OFF = "off"
    """Predict every request on its own."""


class SettingsError(ValueError):
    """A flag or environment variable has a value the server cannot use."""


@dataclass(frozen=True)
class Settings:
    """What one `modelgate-serve` process needs to know."""

    model_uri: str
    """Where the model file is: `file:///path`, `http://...` or `https://...`. Required."""
    model_name: str = "model"
    """The name in the inference paths (`/v2/models/{name}/infer`) and the `model` label."""
    model_version: str = "0"
    """The version reported in `X-Model-Version`, metadata and the `version` label."""
    sha256: str | None = None
    """Expected SHA-256 of the model file (64 hex digits); checked before deserialising."""
    model_format: ModelFormat = ModelFormat.SKOPS
    """`skops` (default) or `joblib`."""
    trusted: bool = False
    """The file comes from a trusted source: allows joblib (pickle). Default false."""
    trusted_types: tuple[str, ...] = ()
    """Extra fully qualified type names a skops file may contain. Default none."""
    host: str = "0.0.0.0"
    """Address to listen on. Default all addresses."""
    port: int = 8080
    """Port for inference, health and /metrics. Default 8080."""
    workers: int = 1
    """Worker processes sharing the port (SO_REUSEPORT). Default 1."""
    batching: BatchingMode = BatchingMode.AUTO
    """Micro-batching of concurrent requests: auto (default), on or off."""
    max_batch_size: int = 32
    """Most rows predicted in one call when batching. Default 32."""
    max_wait: float = 0.002
    """Longest a batch waits for company (e.g. 2ms, 0.5s): for a full batch when batching is
    on, for as many requests as recent batches held when auto. Default 2ms."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Largest request body accepted, bytes; larger gets 413. Default 16 MiB."""
    max_model_bytes: int = 1024 * 1024 * 1024
    """Largest model file fetched, bytes. Default 1 GiB."""
    download_timeout: float = 60.0
    """Seconds to wait for a model server to connect or send data. Default 60."""
    download_retries: int = 3
    """Retries of a failed model download (connection errors, 429 and 5xx). Default 3."""
    download_token: str | None = field(default=None, repr=False)
    """Bearer token sent with an http(s) model download (from a Secret; the operator sets it
    from spec.registry.tokenSecretRef for models:/ URIs); never logged. Default none."""
    shutdown_timeout: float = 25.0
    """Seconds in-flight requests may take to finish after SIGTERM. Default 25 (under
    Kubernetes' default grace period of 30)."""
    max_rows: int = 10_000
    """Most rows in one inference request; more gets 413 (bounds the work and the weight one
    request has). Default 10000."""
    feedback_key: str | None = field(default=None, repr=False)
    """Secret that signs prediction ids; give every pod of a model the same one (from a
    Secret) so any pod takes feedback for any prediction. Default: random per server, so only
    the server that answered takes its feedback."""
    feedback_token: str | None = field(default=None, repr=False)
    """When set, feedback must carry `Authorization: Bearer <token>` (from a Secret); without
    it any client holding a prediction id may send feedback for it. Default none."""
    feedback_window: float = 3600.0
    """How long after a prediction its feedback is taken (e.g. 30m, 2h). Default 1h."""
    feedback_capacity: int = 100_000
    """Most outcomes remembered as counted (about 150 bytes each) until their window ends;
    when full, feedback gets 429. Default 100000."""
    log_level: str = "INFO"
    """Python logging level. Default INFO."""


# The ModelDeployment's duration form, copied from the operator's modelgate.core.durations
# because this image does not depend on the operator; tests/unit/test_one_of_each.py keeps the
# two equal.
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")


def parse_seconds(text: str) -> float:
    """`2ms`, `0.5s`, `1m30s` (the ModelDeployment's duration form) or bare seconds."""
    stripped = text.strip()
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", stripped):
        return float(stripped)
    if not _DURATION.match(stripped):
        raise SettingsError(f"{text!r} is not a duration; use e.g. 2ms, 0.5s or 1m30s")
    return sum(float(number) * DURATION_UNITS[unit]
               for number, unit in _DURATION_PART.findall(stripped))


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{text!r} is not a boolean; use true or false")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise SettingsError(f"{value} must be at least 1")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise SettingsError(f"{value} is not a port (1-65535)")
    return value


def _sha256(text: str) -> str | None:
    digest = text.strip().lower()
    if not digest:
        return None
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise SettingsError(f"{text!r} is not a SHA-256 digest (64 hexadecimal digits)")
    return digest


def _types(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _choice(enum: type[Enum]) -> object:
    def convert(text: str) -> Enum:
        try:
            return enum(text.strip().lower())
        except ValueError:
            allowed = ", ".join(str(member.value) for member in enum)
            raise SettingsError(f"{text!r} is not one of {allowed}") from None
    return convert


# flag -> (settings field, converter); the environment variable is derived from the flag
FLAGS: dict[str, tuple[str, object]] = {
    "--model-uri": ("model_uri", str),
    "--model-name": ("model_name", str),
    "--model-version": ("model_version", str),
    "--sha256": ("sha256", _sha256),
    "--model-format": ("model_format", _choice(ModelFormat)),
    "--trusted": ("trusted", _boolean),
    "--trusted-types": ("trusted_types", _types),
    "--host": ("host", str),
    "--port": ("port", _port),
    "--workers": ("workers", _positive_int),
    "--batching": ("batching", _choice(BatchingMode)),
    "--max-batch-size": ("max_batch_size", _positive_int),
    "--max-wait": ("max_wait", parse_seconds),
    "--max-body-bytes": ("max_body_bytes", _positive_int),
    "--max-model-bytes": ("max_model_bytes", _positive_int),
    "--download-timeout": ("download_timeout", parse_seconds),
    "--download-retries": ("download_retries", int),
    "--download-token": ("download_token", str),
    "--shutdown-timeout": ("shutdown_timeout", parse_seconds),
    "--max-rows": ("max_rows", _positive_int),
    "--feedback-key": ("feedback_key", str),
    "--feedback-token": ("feedback_token", str),
    "--feedback-window": ("feedback_window", parse_seconds),
    "--feedback-capacity": ("feedback_capacity", _positive_int),
    "--log-level": ("log_level", str.upper),
}


def env_name(flag: str) -> str:
    """`--model-uri` -> `MODELGATE_MODEL_URI`."""
    return ENV_PREFIX + flag.removeprefix("--").replace("-", "_").upper()


def load(argv: Sequence[str] | None = None,
         environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags, then the environment, then the defaults above."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="modelgate-serve",
        description="Serve one scikit-learn model over Open Inference Protocol V2 and V1, "
                    "with the Prometheus metrics modelgate's canary analysis reads.")
    docs = field_docs()
    for flag, (name, _) in FLAGS.items():
        parser.add_argument(flag, dest=name, metavar=name.upper(),
                            help=f"{docs.get(name, '')} [env {env_name(flag)}]")
    namespace = parser.parse_args(argv)
    values: dict[str, object] = {}
    for flag, (name, convert) in FLAGS.items():
        raw = getattr(namespace, name)
        source = flag
        if raw is None and env_name(flag) in environ:
            raw, source = environ[env_name(flag)], env_name(flag)
        if raw is None:
            continue
        try:
            values[name] = convert(raw)  # type: ignore[operator]
        except (SettingsError, ValueError) as error:
            raise SettingsError(f"{source}: {error}") from None
    if not values.get("model_uri"):
        raise SettingsError("--model-uri (or MODELGATE_MODEL_URI) is required, "
                            "e.g. file:///models/iris.skops")
    settings = Settings(**values)  # type: ignore[arg-type]
    if settings.model_format is ModelFormat.JOBLIB and not settings.trusted:
        raise SettingsError("--model-format joblib: joblib files run code when loaded; "
                            "serve them only with --trusted true (model.trusted in the "
                            "ModelDeployment), or convert the model to skops")
    return settings


@functools.cache
def field_docs() -> dict[str, str]:
    """Each Settings field's docstring, for --help: the one place a setting is documented."""
    return attribute_docs(Settings)


def attribute_docs(cls: type) -> dict[str, str]:
    """Each annotated class attribute's docstring (the string right below it), by name.

    A copy of the operator's modelgate.settings.attribute_docs, as this image does not depend
    on the operator; tests/unit/test_one_of_each.py keeps the two equal.
    """
    body = ast.parse(inspect.getsource(cls)).body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body.body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)):
            docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs
