"""ModelDeployment custom resource (a dict) -> validated, defaulted core types.

The API server already applies the CRD's schema, defaults and CEL rules, but the operator must
not trust that alone: an object may predate a schema change, come from an emulator, or break a
rule the schema cannot express. So this module checks everything again, applies the same
defaults as the CRD (a test holds them equal), and adds the cross-field rules that need
arithmetic on durations or quantities. Every problem is reported, not only the first, each as
`<field>: <value> <what is wrong>; <what would be right>`.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, InvalidOperation
from enum import Enum
from typing import Any, TypeVar

from modelgate.core.durations import DURATION_RE, kubernetes_seconds, parse_duration  # noqa: F401 (re-exported)
from modelgate.core.types import (
    DEFAULT_LATENCY_QUANTILE,
    DEFAULT_REGISTRY_ALIAS,
    DEFAULT_TOLERANCES,
    AnalysisGate,
    AnalysisSpec,
    Batching,
    BatchingMode,
    EnvVar,
    KeyRef,
    MetricSpec,
    MetricType,
    ModelDeploymentSpec,
    ModelFormat,
    ModelSource,
    NotificationsSpec,
    OnFailure,
    OnInconclusive,
    Pause,
    Promotion,
    ProviderSpec,
    ProviderType,
    RegistrySpec,
    Resources,
    RolloutSpec,
    RouterSpec,
    RouterType,
    ServingSpec,
    SetWeight,
    Step,
    ThresholdRange,
    WebhookFormat,
    WebhookSpec,
    WriteBackSpec,
)
from modelgate.core.webhooks import TRANSITIONS

MAX_NAME_LENGTH = 52
"""Children are named <name>-stable / <name>-canary and must fit a 63-character label."""

NAME_PATTERN = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
"""A DNS-1035 label: the Service is named after the ModelDeployment, and a Service name must
be one (the API server refuses `iris.v2` or `2iris` for a Service though it takes them for a
ModelDeployment); the CRD has the same rule, so such a name is refused at apply."""

DEFAULT_STEP_WEIGHT = 20
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600.0
"""spec.rollout.progressDeadline's default, "10m" (a Deployment's progressDeadlineSeconds)."""
DEFAULT_MAX_WEIGHT = 60
RESERVED_ENV_PREFIX = "MODELGATE_"
"""The operator configures the server through MODELGATE_* variables; users may not override them."""

QUERY_VARIABLES = frozenset({"name", "namespace", "version", "interval"})

_MODEL_FIELDS = ("version", "uri", "sha256", "format", "trusted", "trustedTypes")
_KEY_REF_FIELDS = ("name", "key")
FIELDS: dict[str, tuple[str, ...]] = {
    "spec": ("model", "baseline", "registry", "notifications", "serving", "rollout",
             "analysis", "trafficRouter"),
    "spec.notifications": ("webhooks",),
    "spec.notifications.webhooks[*]": ("name", "url", "format", "body", "transitions"),
    "spec.registry": ("trackingUri", "tokenSecretRef", "writeBack"),
    "spec.registry.tokenSecretRef": _KEY_REF_FIELDS,
    "spec.registry.writeBack": ("enabled", "alias"),
    "spec.model": ("name", *_MODEL_FIELDS),
    "spec.baseline": _MODEL_FIELDS,
    "spec.serving": ("image", "imagePullPolicy", "replicas", "port", "workers", "resources",
                     "env", "batching"),
    "spec.serving.resources": ("requests", "limits"),
    "spec.serving.env[*]": ("name", "value", "valueFrom"),
    "spec.serving.env[*].valueFrom": ("secretKeyRef", "configMapKeyRef"),
    "spec.serving.env[*].valueFrom.secretKeyRef": _KEY_REF_FIELDS,
    "spec.serving.env[*].valueFrom.configMapKeyRef": _KEY_REF_FIELDS,
    "spec.serving.batching": ("mode", "maxBatchSize", "maxWait"),
    "spec.rollout": ("steps", "stepWeight", "maxWeight", "interval", "promotion", "onFailure",
                     "progressDeadline"),
    "spec.rollout.steps[*]": ("setWeight", "pause", "analysis"),
    "spec.rollout.steps[*].pause": ("duration",),
    "spec.rollout.steps[*].analysis": ("maxDuration",),
    "spec.analysis": ("interval", "alpha", "beta", "minSamples", "maxDuration", "onInconclusive",
                      "providerErrorLimit", "provider", "metrics"),
    "spec.analysis.provider": ("type", "address", "timeout"),
    "spec.analysis.metrics[*]": ("name", "type", "tolerance", "quantile", "minSamples", "query",
                                 "thresholdRange"),
    "spec.analysis.metrics[*].thresholdRange": ("min", "max"),
    "spec.trafficRouter": ("type",),
}
"""The fields of every spec object, keyed by schema path ([*] for list items). A test holds
them equal to the CRD's properties."""

VERSION_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
MODEL_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
METRIC_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
REGISTRY_URI_PATTERN = (r"models:/[A-Za-z0-9][-A-Za-z0-9_.]{0,127}"
                        r"(/[1-9][0-9]{0,9}|@[A-Za-z][-A-Za-z0-9_]{0,127})")
"""`models:/<name>/<version>` or `models:/<name>@<alias>` (MLflow's model registry)."""
URI_RE = re.compile(rf"^((file|https?)://\S+|{REGISTRY_URI_PATTERN})$")
TRACKING_URI_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s?#@]*)?$")
"""An MLflow tracking server's base URL: no credentials, query or fragment."""
ALIAS_RE = re.compile(r"^[A-Za-z][-A-Za-z0-9_]{0,127}$")
USERINFO_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]*@")
"""A URI with credentials before the host (`https://user:password@host/...`)."""
HTTP_URL_RE = re.compile(r"^https?://\S+$")
SHA256_RE = re.compile(r"^[a-f0-9]{64}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
QUANTITY_RE = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUERY_VARIABLE_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

_E = TypeVar("_E", bound=Enum)


class SpecError(ValueError):
    """A ModelDeployment that cannot be acted on. `problems` holds one message per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


_QUANTITY_SUFFIX = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}  # fmt: skip
_QUANTITY_CAP = Decimal((1 << 63) - 1)
_EXACT = Context(prec=4000, Emax=MAX_EMAX, Emin=MIN_EMIN)


def parse_quantity(text: str) -> Decimal:
    """The value of a Kubernetes resource quantity such as "500m", "1.5Gi" or "2e3"."""
    if not QUANTITY_RE.match(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity such as 500m, 256Mi or 2")
    match = re.match(r"^([+-]?[0-9.]+)(.*)$", text)
    assert match is not None  # QUANTITY_RE guarantees a leading number
    number, suffix = match.groups()
    try:
        if suffix in _QUANTITY_SUFFIX:
            value = _EXACT.multiply(Decimal(number), _QUANTITY_SUFFIX[suffix])
        else:  # decimal exponent, e.g. 2e3; a fractional one (1e1.5) is no quantity
            value = Decimal(number).scaleb(int(suffix[1:]), _EXACT)
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"{text!r} is not a Kubernetes quantity") from exc
    return max(-_QUANTITY_CAP, min(_QUANTITY_CAP, value))  # capped, as Kubernetes caps it


class _Reader:
    """Reads typed fields out of nested dicts, recording problems with their full path.

    Each accessor returns a usable value even when the input is wrong (the default, or None),
    so one pass finds every problem in the object.
    """

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def mapping(self, obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.fail(f"{path}.{key}", f"{_show(value)} is not an object")
            return None
        return value

    def integer(
        self, obj: Mapping[str, Any], key: str, path: str, *,
        default: int | None = None, minimum: int | None = None, maximum: int | None = None,
    ) -> int | None:  # fmt: skip
        value = obj.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{path}.{key}", f"{_show(value)} is not an integer")
            return default
        if minimum is not None and value < minimum:
            self.fail(f"{path}.{key}", f"{value} is below {minimum}")
            return default
        if maximum is not None and value > maximum:
            self.fail(f"{path}.{key}", f"{value} is above {maximum}")
            return default
        return value

    def number(
        self, obj: Mapping[str, Any], key: str, path: str, *,
        default: float | None = None, minimum: float | None = None,
        maximum: float | None = None, exclusive_minimum: bool = False,
        exclusive_maximum: bool = False,
    ) -> float | None:  # fmt: skip
        value = obj.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            self.fail(f"{path}.{key}", f"{_show(value)} is not a number")
            return default
        if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
            self.fail(f"{path}.{key}", f"{value} is below {minimum}" if value < minimum
                      else f"{value} must be above {minimum}")
            return default
        if maximum is not None and (value >= maximum if exclusive_maximum else value > maximum):
            self.fail(f"{path}.{key}", f"{value} is above {maximum}" if value > maximum
                      else f"{value} must be below {maximum}")
            return default
        return float(value)

    def only(self, obj: Mapping[str, Any], path: str, schema_path: str) -> None:
        """Report fields the API does not have, as the API server's strict field validation
        does: a misspelt field would otherwise be silently ignored."""
        known = FIELDS[schema_path]
        for key in obj:
            if key not in known:
                self.fail(f"{path}.{key}" if path else str(key),
                          f"is not a field of this object; known fields are {', '.join(known)}")

    def boolean(self, obj: Mapping[str, Any], key: str, path: str, *, default: bool) -> bool:
        value = obj.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", f"{_show(value)} is not true or false")
            return default
        return value

    def string(
        self, obj: Mapping[str, Any], key: str, path: str, *,
        default: str | None = None, pattern: re.Pattern[str] | None = None,
        hint: str = "", max_length: int | None = None, required: bool = False,
    ) -> str | None:  # fmt: skip
        value = obj.get(key)
        if value is None:
            if required:
                self.fail(f"{path}.{key}", f"is required{'; ' + hint if hint else ''}")
            return default
        if not isinstance(value, str):
            self.fail(f"{path}.{key}", f"{_show(value)} is not a string")
            return default
        if max_length is not None and len(value) > max_length:
            self.fail(f"{path}.{key}", f"is {len(value)} characters long; at most {max_length}")
            return default
        if pattern is not None and not pattern.match(value):
            self.fail(f"{path}.{key}", f"{_show(value)} is not valid{'; ' + hint if hint else ''}")
            return default
        return value

    def choice(
        self, obj: Mapping[str, Any], key: str, path: str, enum: type[_E], default: _E
    ) -> _E:
        value = obj.get(key)
        if value is None:
            return default
        allowed = [str(member.value) for member in enum]
        if value not in allowed:
            self.fail(f"{path}.{key}", f"{_show(value)} is not one of {', '.join(allowed)}")
            return default
        return enum(value)

    def duration(
        self, obj: Mapping[str, Any], key: str, path: str, *,
        default: float | None = None, positive: bool = False,
    ) -> float | None:  # fmt: skip
        text = self.string(obj, key, path, pattern=DURATION_RE,
                           hint="use a duration such as 30s, 5m or 1h30m")
        if text is None:
            return default
        try:  # as the API server's CEL rules read it, so both judge the same duration
            seconds = kubernetes_seconds(text)
        except ValueError:
            self.fail(f"{path}.{key}", f"{_show(text)} is longer than Kubernetes durations "
                      "allow (about 292 years)")
            return default
        if positive and seconds <= 0:
            self.fail(f"{path}.{key}", f"{_show(text)} is zero; it must be longer than 0s")
            return default
        return seconds

    def items(self, obj: Mapping[str, Any], key: str, path: str, *,
              max_items: int) -> list[tuple[str, Any]]:
        value = obj.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(f"{path}.{key}", f"{_show(value)} is not a list")
            return []
        if len(value) > max_items:
            self.fail(f"{path}.{key}", f"has {len(value)} items; at most {max_items}")
            return []
        return [(f"{path}.{key}[{index}]", item) for index, item in enumerate(value)]

    def each_mapping(self, obj: Mapping[str, Any], key: str, path: str, *,
                     max_items: int) -> list[tuple[str, Mapping[str, Any]]]:
        result = []
        for item_path, item in self.items(obj, key, path, max_items=max_items):
            if isinstance(item, Mapping):
                result.append((item_path, item))
            else:
                self.fail(item_path, f"{_show(item)} is not an object")
        return result


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse(resource: Mapping[str, Any]) -> ModelDeploymentSpec:
    """Validate a ModelDeployment custom resource and return its spec with defaults applied.

    Raises SpecError listing every problem found.
    """
    reader = _Reader()
    name, namespace = _metadata(reader, resource)
    spec = reader.mapping(resource, "spec", "")
    if spec is None:
        raise SpecError([*reader.problems, "spec: is required"])
    spec_path = "spec"
    reader.only(spec, spec_path, "spec")
    model, model_name, baseline = _models(reader, spec, name)
    registry = _registry(reader, reader.mapping(spec, "registry", spec_path) or {},
                         "spec.registry")
    notifications = _notifications(reader, reader.mapping(spec, "notifications", spec_path)
                                   or {}, "spec.notifications")
    serving = _serving(reader, reader.mapping(spec, "serving", spec_path) or {}, "spec.serving")
    analysis = _analysis(reader, reader.mapping(spec, "analysis", spec_path) or {},
                         "spec.analysis")
    rollout = _rollout(reader, reader.mapping(spec, "rollout", spec_path) or {},
                       "spec.rollout", analysis)
    router_obj = reader.mapping(spec, "trafficRouter", spec_path) or {}
    reader.only(router_obj, "spec.trafficRouter", "spec.trafficRouter")
    router = RouterSpec(type=reader.choice(router_obj, "type", "spec.trafficRouter",
                                           RouterType, RouterType.REPLICAS))

    if reader.problems:
        raise SpecError(reader.problems)
    return ModelDeploymentSpec(
        name=name, namespace=namespace, model_name=model_name or name, model=model,
        baseline=baseline, serving=serving, rollout=rollout, analysis=analysis, router=router,
        registry=registry, notifications=notifications,
    )


def _registry(reader: _Reader, obj: Mapping[str, Any], path: str) -> RegistrySpec:
    reader.only(obj, path, "spec.registry")
    tracking_uri = reader.string(obj, "trackingUri", path, pattern=TRACKING_URI_RE,
                                 max_length=2048,
                                 hint="the http:// or https:// base URL of the MLflow tracking "
                                      "server, without credentials, query or fragment")
    token_ref = None
    ref_obj = reader.mapping(obj, "tokenSecretRef", path)
    if ref_obj is not None:
        ref_path = f"{path}.tokenSecretRef"
        reader.only(ref_obj, ref_path, "spec.registry.tokenSecretRef")
        ref_name = reader.string(ref_obj, "name", ref_path, required=True, max_length=253)
        ref_key = reader.string(ref_obj, "key", ref_path, required=True, max_length=253)
        if ref_name and ref_key:
            token_ref = KeyRef(kind="secret", name=ref_name, key=ref_key)
    write_obj = reader.mapping(obj, "writeBack", path) or {}
    write_path = f"{path}.writeBack"
    reader.only(write_obj, write_path, "spec.registry.writeBack")
    write_back = WriteBackSpec(
        enabled=reader.boolean(write_obj, "enabled", write_path, default=False),
        alias=reader.string(write_obj, "alias", write_path, default=DEFAULT_REGISTRY_ALIAS,
                            pattern=ALIAS_RE, max_length=128,
                            hint="a letter, then letters, digits, '-' and '_'")
        or DEFAULT_REGISTRY_ALIAS)
    return RegistrySpec(tracking_uri=tracking_uri, token_secret_ref=token_ref,
                        write_back=write_back)


WEBHOOK_URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s#@]*)?$")
WEBHOOK_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _notifications(reader: _Reader, obj: Mapping[str, Any], path: str) -> NotificationsSpec:
    reader.only(obj, path, "spec.notifications")
    webhooks: list[WebhookSpec] = []
    for item_path, item in reader.each_mapping(obj, "webhooks", path, max_items=8):
        reader.only(item, item_path, "spec.notifications.webhooks[*]")
        name = reader.string(item, "name", item_path, required=True, pattern=WEBHOOK_NAME_RE,
                             max_length=63, hint="lowercase letters, digits and '-'")
        url = reader.string(item, "url", item_path, required=True, pattern=WEBHOOK_URL_RE,
                            max_length=2048, hint="an http:// or https:// URL without "
                            "credentials or fragment")
        form = reader.choice(item, "format", item_path, WebhookFormat, WebhookFormat.JSON)
        template = reader.string(item, "body", item_path, max_length=16384)
        # A template's variables and JSON are checked when a delivery is made (the CRD
        # cannot check them, and a bad template must not hold the rollout): the delivery
        # fails with the reason, in status and a warning Event.
        if template is not None and form is WebhookFormat.SLACK:
            reader.fail(f"{item_path}.body", "a body template is for format json; format "
                        "slack sends its own message")
        transitions: list[str] = []
        for transition_path, transition in reader.items(item, "transitions", item_path,
                                                        max_items=16):
            if transition not in TRANSITIONS:
                reader.fail(transition_path, f"{_show(transition)} is not one of "
                            f"{', '.join(TRANSITIONS)}")
            else:
                transitions.append(transition)
        if name and any(webhook.name == name for webhook in webhooks):
            reader.fail(f"{item_path}.name", f"{_show(name)} names another webhook too")
        elif name and url:
            webhooks.append(WebhookSpec(name=name, url=url, format=form, body=template,
                                        transitions=tuple(transitions)))
    return NotificationsSpec(webhooks=tuple(webhooks))


def _metadata(reader: _Reader, resource: Mapping[str, Any]) -> tuple[str, str | None]:
    """The object's name (checked: children's names must fit) and namespace."""
    metadata = resource.get("metadata") if isinstance(resource.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    name = reader.string(metadata, "name", "metadata", required=True) or ""
    if len(name) > MAX_NAME_LENGTH:
        reader.fail("metadata.name", f"{_show(name)} is {len(name)} characters long; at most "
                    f"{MAX_NAME_LENGTH}, because children are named <name>-stable and "
                    "<name>-canary")
    elif name and not NAME_PATTERN.fullmatch(name):
        reader.fail("metadata.name", f"{_show(name)} is not a DNS-1035 label (lowercase "
                    "letters, digits and '-', starting with a letter, ending with a letter or "
                    "digit; no '.'): the Service is named after the ModelDeployment")
    namespace = metadata.get("namespace") if isinstance(metadata.get("namespace"), str) else None
    return name, namespace


def _models(reader: _Reader, spec: Mapping[str, Any],
            name: str) -> tuple[ModelSource, str | None, ModelSource | None]:
    """spec.model, the name it is served under, and spec.baseline if declared."""
    model_obj = reader.mapping(spec, "model", "spec")
    if model_obj is None:
        reader.fail("spec.model", "is required; give at least version and uri")
        model_obj = {}
    model = _model_source(reader, model_obj, "spec.model")
    model_name = reader.string(model_obj, "name", "spec.model", default=name,
                               pattern=MODEL_NAME_RE, max_length=63,
                               hint="lowercase letters, digits, '-', '_' and '.'")
    baseline_obj = reader.mapping(spec, "baseline", "spec")
    baseline = _model_source(reader, baseline_obj, "spec.baseline") if baseline_obj else None
    if baseline is not None:
        _check_baseline(reader, model, baseline)
    return model, model_name, baseline


def _model_source(reader: _Reader, obj: Mapping[str, Any], path: str) -> ModelSource:
    reader.only(obj, path, path)
    version = reader.string(obj, "version", path, required=True, pattern=VERSION_RE,
                            max_length=63,
                            hint="letters, digits, '-', '_' and '.', starting and ending "
                                 "with a letter or digit") or ""
    if isinstance(obj.get("uri"), str) and USERINFO_RE.match(obj["uri"]):
        # The value is not repeated: this message goes to status and Events.
        reader.fail(f"{path}.uri", "holds credentials (user:password@host); they would be "
                    "copied into status, the pods' environment and Events, so modelgate "
                    "refuses them: serve the file from a location that needs none (a "
                    "cluster-internal URL, a volume) and pin it with sha256")
        uri = ""
    else:
        uri = reader.string(obj, "uri", path, required=True, pattern=URI_RE, max_length=2048,
                            hint="use file://, http://, https:// or models:/<name>/<version> "
                                 "(models:/<name>@<alias>)") or ""
    sha256 = reader.string(obj, "sha256", path, pattern=SHA256_RE,
                           hint="64 lowercase hex characters")
    model_format = reader.choice(obj, "format", path, ModelFormat, ModelFormat.SKOPS)
    trusted = reader.boolean(obj, "trusted", path, default=False)
    trusted_types = tuple(
        item for item_path, item in reader.items(obj, "trustedTypes", path, max_items=64)
        if _is_string(reader, item_path, item)
    )
    if uri.startswith(("http://", "https://")) and sha256 is None and obj.get("sha256") is None:
        reader.fail(f"{path}.sha256", "is required when uri is http:// or https://: a downloaded "
                    "model is only served when its digest matches")
    if model_format is ModelFormat.JOBLIB and not trusted:
        reader.fail(f"{path}.trusted", "format joblib runs arbitrary code when loaded: set "
                    "trusted: true to accept that, or use skops")
    return ModelSource(version=version, uri=uri, sha256=sha256, format=model_format,
                       trusted=trusted, trusted_types=trusted_types)


def _is_string(reader: _Reader, path: str, value: Any) -> bool:
    if isinstance(value, str):
        return True
    reader.fail(path, f"{_show(value)} is not a string")
    return False


def _check_baseline(reader: _Reader, model: ModelSource, baseline: ModelSource) -> None:
    if baseline.version == model.version:
        reader.fail("spec.baseline.version", f"{_show(baseline.version)} equals "
                    "spec.model.version; the baseline must be a different, known-good version")
    elif baseline.sha256 is not None and baseline.sha256 == model.sha256:
        reader.fail("spec.baseline.sha256", "equals spec.model.sha256: baseline and model are "
                    "the same file, so the canary would be compared with itself")
    elif baseline.uri == model.uri and baseline.sha256 is None and model.sha256 is None:
        reader.fail("spec.baseline.uri", f"{_show(baseline.uri)} equals spec.model.uri with no "
                    "digest to tell them apart; point the baseline at the known-good file")


def _serving(reader: _Reader, obj: Mapping[str, Any], path: str) -> ServingSpec:
    defaults = ServingSpec()
    reader.only(obj, path, "spec.serving")
    resources_obj = reader.mapping(obj, "resources", path) or {}
    reader.only(resources_obj, f"{path}.resources", "spec.serving.resources")
    requests = _quantities(reader, resources_obj, "requests", f"{path}.resources")
    limits = _quantities(reader, resources_obj, "limits", f"{path}.resources")
    for resource_name, limit in limits.items():
        request = requests.get(resource_name)
        if request is not None and request > limit:
            reader.fail(f"{path}.resources.limits.{resource_name}",
                        f"{_show(resources_obj['limits'][resource_name])} is below the request "
                        f"{_show(resources_obj['requests'][resource_name])}; a limit must be at "
                        "least the request")
    env = []
    for env_path, env_obj in reader.each_mapping(obj, "env", path, max_items=64):
        env_var = _env_var(reader, env_obj, env_path)
        if env_var is not None:
            env.append(env_var)
    batching_obj = reader.mapping(obj, "batching", path) or {}
    batching_path = f"{path}.batching"
    reader.only(batching_obj, batching_path, "spec.serving.batching")
    batching = Batching(
        mode=reader.choice(batching_obj, "mode", batching_path, BatchingMode, BatchingMode.AUTO),
        max_batch_size=_int(reader.integer(batching_obj, "maxBatchSize", batching_path,
                                           default=32, minimum=1, maximum=1024)),
        max_wait_seconds=_float(reader.duration(batching_obj, "maxWait", batching_path,
                                                default=0.002)),
    )
    return ServingSpec(
        image=reader.string(obj, "image", path, default=defaults.image, max_length=512)
        or defaults.image,
        image_pull_policy=reader.string(
            obj, "imagePullPolicy", path, default="IfNotPresent",
            pattern=re.compile(r"^(Always|IfNotPresent|Never)$"),
            hint="use Always, IfNotPresent or Never") or "IfNotPresent",
        replicas=_int(reader.integer(obj, "replicas", path, default=2, minimum=0, maximum=1000)),
        port=_int(reader.integer(obj, "port", path, default=8080, minimum=1024, maximum=65535)),
        workers=_int(reader.integer(obj, "workers", path, default=1, minimum=1, maximum=64)),
        resources=Resources(
            requests=tuple(sorted((k, str(resources_obj["requests"][k])) for k in requests)),
            limits=tuple(sorted((k, str(resources_obj["limits"][k])) for k in limits)),
        ),
        env=tuple(env),
        batching=batching,
    )


def parse_serving(obj: Mapping[str, Any], path: str = "spec.serving") -> ServingSpec:
    """A serving section on its own (as status keeps the one each arm runs with), checked as
    spec.serving is; raises SpecError listing every problem found."""
    reader = _Reader()
    serving = _serving(reader, obj, path)
    if reader.problems:
        raise SpecError(reader.problems)
    return serving


def _quantities(reader: _Reader, obj: Mapping[str, Any], key: str,
                path: str) -> dict[str, Decimal]:
    mapping = reader.mapping(obj, key, path) or {}
    result = {}
    for resource_name, raw in mapping.items():
        try:
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise ValueError(f"{_show(raw)} is not a Kubernetes quantity such as 500m, "
                                 "256Mi or 2")
            result[resource_name] = parse_quantity(str(raw))
        except ValueError as exc:
            reader.fail(f"{path}.{key}.{resource_name}", str(exc))
    return result


def _env_var(reader: _Reader, obj: Mapping[str, Any], path: str) -> EnvVar | None:
    reader.only(obj, path, "spec.serving.env[*]")
    name = reader.string(obj, "name", path, required=True, pattern=ENV_NAME_RE, max_length=128,
                         hint="letters, digits and '_', not starting with a digit")
    if name is not None and name.upper().startswith(RESERVED_ENV_PREFIX):
        reader.fail(f"{path}.name", f"{_show(name)} is reserved: the operator sets "
                    f"{RESERVED_ENV_PREFIX}* variables itself from spec.model and spec.serving")
    value = reader.string(obj, "value", path, max_length=4096)
    value_from_obj = reader.mapping(obj, "valueFrom", path)
    value_from = None
    if value is not None and value_from_obj is not None:
        reader.fail(path, "sets both value and valueFrom; set one")
    if value_from_obj is not None:
        reader.only(value_from_obj, f"{path}.valueFrom", "spec.serving.env[*].valueFrom")
        refs = [(kind, reader.mapping(value_from_obj, f"{kind}KeyRef", f"{path}.valueFrom"))
                for kind in ("secret", "configMap")]
        present = [(kind, ref) for kind, ref in refs if ref is not None]
        if len(present) != 1:
            reader.fail(f"{path}.valueFrom", "set exactly one of secretKeyRef or configMapKeyRef")
        else:
            kind, ref = present[0]
            ref_path = f"{path}.valueFrom.{kind}KeyRef"
            reader.only(ref, ref_path, f"spec.serving.env[*].valueFrom.{kind}KeyRef")
            ref_name = reader.string(ref, "name", ref_path, required=True, max_length=253)
            ref_key = reader.string(ref, "key", ref_path, required=True, max_length=253)
            if ref_name and ref_key:
                value_from = KeyRef(kind=kind, name=ref_name, key=ref_key)
    if name is None:
        return None
    return EnvVar(name=name, value=value, value_from=value_from)


def _analysis(reader: _Reader, obj: Mapping[str, Any], path: str) -> AnalysisSpec:
    defaults = AnalysisSpec(metrics=())
    reader.only(obj, path, "spec.analysis")
    interval = _float(reader.duration(obj, "interval", path, default=defaults.interval_seconds,
                                      positive=True))
    max_duration = _float(reader.duration(obj, "maxDuration", path,
                                          default=defaults.max_duration_seconds, positive=True))
    if max_duration < interval:
        reader.fail(f"{path}.maxDuration", f"{_show(obj.get('maxDuration'))} is shorter than "
                    f"analysis.interval {_show(obj.get('interval', '30s'))}; it must allow at "
                    "least one interval")
    min_samples = _int(reader.integer(obj, "minSamples", path, default=defaults.min_samples,
                                      minimum=1, maximum=1_000_000))
    given = reader.mapping(obj, "provider", path)
    provider = _provider(reader, given or {}, f"{path}.provider")
    # a provider that is not a mapping is already refused: no timeout of its own to compare
    if provider.timeout_seconds >= interval and (given or obj.get("provider") is None):
        timeout_text = _show((given or {}).get("timeout", "5s"))
        reader.fail(f"{path}.provider.timeout", f"{timeout_text} is not "
                    f"shorter than analysis.interval; a scrape must end before the next begins")
    metrics = _metrics(reader, obj, path, min_samples, provider)
    defaulted = not metrics and not obj.get("metrics")
    return AnalysisSpec(
        metrics=default_metrics(min_samples) if defaulted else tuple(metrics),
        metrics_defaulted=defaulted,
        interval_seconds=interval,
        alpha=_float(reader.number(obj, "alpha", path, default=defaults.alpha, minimum=0.0,
                                   maximum=0.2, exclusive_minimum=True)),
        beta=_float(reader.number(obj, "beta", path, default=defaults.beta, minimum=0.0,
                                  maximum=0.5, exclusive_minimum=True)),
        min_samples=min_samples,
        max_duration_seconds=max_duration,
        on_inconclusive=reader.choice(obj, "onInconclusive", path, OnInconclusive,
                                      OnInconclusive.PAUSE),
        provider_error_limit=_int(reader.integer(obj, "providerErrorLimit", path,
                                                 default=defaults.provider_error_limit,
                                                 minimum=1, maximum=1000)),
        provider=provider,
    )


def _metrics(reader: _Reader, obj: Mapping[str, Any], path: str, min_samples: int,
             provider: ProviderSpec) -> list[MetricSpec]:
    """spec.analysis.metrics: each valid, names unique, each runnable by the provider."""
    metrics: list[MetricSpec] = []
    seen: set[str] = set()
    for metric_path, metric_obj in reader.each_mapping(obj, "metrics", path, max_items=20):
        metric = _metric(reader, metric_obj, metric_path, min_samples)
        if metric is None:
            continue
        if metric.name in seen:
            reader.fail(f"{metric_path}.name", f"{_show(metric.name)} is used twice; metric "
                        "names must be unique")
        seen.add(metric.name)
        if metric.type is MetricType.PROMETHEUS and provider.type is not ProviderType.PROMETHEUS:
            reader.fail(f"{path}.provider.type", f"{_show(provider.type.value)} cannot run "
                        f"prometheus metric {_show(metric.name)}; set provider.type: "
                        "prometheus and provider.address")
        metrics.append(metric)
    return metrics


def default_metrics(min_samples: int) -> tuple[MetricSpec, ...]:
    """The checks used when a spec lists none (docs/architecture.md, contract 5)."""
    return (
        MetricSpec(name="error-rate", type=MetricType.ERROR_RATE,
                   tolerance=DEFAULT_TOLERANCES[MetricType.ERROR_RATE], min_samples=min_samples),
        MetricSpec(name="latency-p99", type=MetricType.LATENCY,
                   tolerance=DEFAULT_TOLERANCES[MetricType.LATENCY], min_samples=min_samples,
                   quantile=DEFAULT_LATENCY_QUANTILE),
        MetricSpec(name="prediction-distribution", type=MetricType.PREDICTION_DISTRIBUTION,
                   tolerance=DEFAULT_TOLERANCES[MetricType.PREDICTION_DISTRIBUTION],
                   min_samples=min_samples),
    )


def _provider(reader: _Reader, obj: Mapping[str, Any], path: str) -> ProviderSpec:
    reader.only(obj, path, "spec.analysis.provider")
    provider_type = reader.choice(obj, "type", path, ProviderType, ProviderType.POD_SCRAPE)
    address = reader.string(obj, "address", path, pattern=HTTP_URL_RE, max_length=2048,
                            hint="use the http:// or https:// base URL of the Prometheus server")
    if provider_type is ProviderType.PROMETHEUS and address is None and "address" not in obj:
        reader.fail(f"{path}.address", "is required for type prometheus; give the base URL of "
                    "the Prometheus server")
    if address is not None:
        problem = _address_problem(address)
        if problem:
            shown = "the address" if "@" in address else _show(address)  # never credentials
            reader.fail(f"{path}.address", f"{shown} {problem}")
            address = None
    timeout = _float(reader.duration(obj, "timeout", path, default=5.0, positive=True))
    return ProviderSpec(type=provider_type, address=address, timeout_seconds=timeout)


def _address_problem(address: str) -> str | None:
    """Why a Prometheus base URL cannot be used, or None. Credentials in the URL are refused:
    the address is shown in status and Events (the token comes from the operator's
    settings)."""
    try:
        parts = urllib.parse.urlsplit(address)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc}); use for example http://prometheus.monitoring:9090"
    if "@" in parts.netloc:
        return ("carries credentials; remove them (the operator's bearer token setting "
                "authenticates to Prometheus)")
    if not parts.hostname:
        return "names no host; use for example http://prometheus.monitoring:9090"
    if port == 0:
        return "names port 0; use the port Prometheus listens on"
    if parts.query or parts.fragment:
        return "has a query or fragment; give the base URL only"
    return None


def _metric(reader: _Reader, obj: Mapping[str, Any], path: str,
            analysis_min_samples: int) -> MetricSpec | None:
    reader.only(obj, path, "spec.analysis.metrics[*]")
    name = reader.string(obj, "name", path, required=True, pattern=METRIC_NAME_RE,
                         max_length=63, hint="lowercase letters, digits and '-'")
    metric_type_raw = obj.get("type")
    if metric_type_raw is None:
        reader.fail(f"{path}.type", "is required; use one of "
                    + ", ".join(member.value for member in MetricType))
        return None
    metric_type = reader.choice(obj, "type", path, MetricType, MetricType.ERROR_RATE)
    if metric_type.value != metric_type_raw:
        return None
    tolerance = reader.number(obj, "tolerance", path, minimum=0.0)
    quantile = reader.number(obj, "quantile", path, minimum=0.0, maximum=1.0,
                             exclusive_minimum=True, exclusive_maximum=True)
    min_samples = _int(reader.integer(obj, "minSamples", path, default=analysis_min_samples,
                                      minimum=1, maximum=1_000_000))
    query = reader.string(obj, "query", path, max_length=4096)
    threshold = _threshold_range(reader, obj, path)
    tolerance = _type_fields(reader, obj, path, metric_type, query, threshold, tolerance,
                             name)
    if metric_type is MetricType.LATENCY:
        quantile = quantile if quantile is not None else DEFAULT_LATENCY_QUANTILE
    elif "quantile" in obj:
        reader.fail(f"{path}.quantile", "applies to type latency only")
        quantile = None
    if name is None:
        return None
    return MetricSpec(name=name, type=metric_type, tolerance=tolerance,
                      min_samples=min_samples, quantile=quantile, query=query,
                      threshold=threshold)


def _threshold_range(reader: _Reader, obj: Mapping[str, Any],
                     path: str) -> ThresholdRange | None:
    threshold_obj = reader.mapping(obj, "thresholdRange", path)
    if threshold_obj is None:
        return None
    reader.only(threshold_obj, f"{path}.thresholdRange",
                "spec.analysis.metrics[*].thresholdRange")
    threshold = ThresholdRange(
        minimum=reader.number(threshold_obj, "min", f"{path}.thresholdRange"),
        maximum=reader.number(threshold_obj, "max", f"{path}.thresholdRange"),
    )
    if threshold.minimum is None and threshold.maximum is None:
        reader.fail(f"{path}.thresholdRange", "needs min, max or both")
    elif (threshold.minimum is not None and threshold.maximum is not None
          and threshold.minimum > threshold.maximum):
        reader.fail(f"{path}.thresholdRange", f"min {threshold.minimum} exceeds max "
                    f"{threshold.maximum}")
    return threshold


def _type_fields(reader: _Reader, obj: Mapping[str, Any], path: str, metric_type: MetricType,
                 query: str | None, threshold: ThresholdRange | None,
                 tolerance: float | None, name: str | None = None) -> float | None:
    """A prometheus metric needs query and thresholdRange and takes no tolerance; the others
    take neither and get their default tolerance. Returns the tolerance."""
    if metric_type is MetricType.PROMETHEUS:
        if query is None:
            reader.fail(f"{path}.query", "is required for type prometheus")
        else:
            unknown = sorted(set(_QUERY_VARIABLE_RE.findall(query)) - QUERY_VARIABLES)
            if unknown:
                reader.fail(f"{path}.query", f"of metric {_show(name)} uses unknown variable "
                            f"{{{{{unknown[0]}}}}}; known are "
                            + ", ".join(f"{{{{{v}}}}}" for v in sorted(QUERY_VARIABLES)))
        if threshold is None and tolerance is None:
            reader.fail(f"{path}.thresholdRange", "is required for type prometheus, or "
                        "tolerance to compare the canary's value with stable's")
        if threshold is not None and tolerance is not None:
            reader.fail(f"{path}.tolerance", "and thresholdRange are both set; give "
                        "thresholdRange (an absolute range) or tolerance (how much higher "
                        "than stable's the canary's value may be), not both")
    else:
        for key in ("query", "thresholdRange"):
            if key in obj:
                reader.fail(f"{path}.{key}", "is allowed for type prometheus only")
        if tolerance is None:
            tolerance = DEFAULT_TOLERANCES[metric_type]
        elif metric_type in (MetricType.ERROR_RATE, MetricType.ACCURACY) and tolerance >= 1:
            reader.fail(f"{path}.tolerance", f"{tolerance} is a share of requests and must be "
                        "below 1, for example 0.01 for one percentage point")
    return tolerance


def _rollout(reader: _Reader, obj: Mapping[str, Any], path: str,
             analysis: AnalysisSpec) -> RolloutSpec:
    reader.only(obj, path, "spec.rollout")
    promotion = reader.choice(obj, "promotion", path, Promotion, Promotion.AUTOMATIC)
    on_failure = reader.choice(obj, "onFailure", path, OnFailure, OnFailure.ROLLBACK)
    shorthand = [key for key in ("stepWeight", "maxWeight", "interval") if key in obj]
    if "steps" in obj and shorthand:
        reader.fail(path, f"sets steps and {', '.join(shorthand)}; use either steps or the "
                    "stepWeight/maxWeight/interval shorthand, not both")
    if "steps" in obj:
        steps = _steps(reader, obj, path, analysis)
    else:
        steps = _shorthand_steps(reader, obj, path, analysis)
    deadline = reader.duration(obj, "progressDeadline", path, positive=True,
                               default=DEFAULT_PROGRESS_DEADLINE_SECONDS)
    return RolloutSpec(steps=steps, promotion=promotion, on_failure=on_failure,
                       progress_deadline_seconds=deadline or DEFAULT_PROGRESS_DEADLINE_SECONDS)


def _steps(reader: _Reader, obj: Mapping[str, Any], path: str,
           analysis: AnalysisSpec) -> tuple[Step, ...]:
    items = reader.each_mapping(obj, "steps", path, max_items=50)
    if not items and isinstance(obj.get("steps"), list):
        reader.fail(f"{path}.steps", "is empty; give at least one step, or leave steps out for "
                    "the default program")
    steps: list[Step] = []
    weight_so_far = 0
    for step_path, step_obj in items:
        reader.only(step_obj, step_path, "spec.rollout.steps[*]")
        kinds = [key for key in ("setWeight", "pause", "analysis") if key in step_obj]
        if len(kinds) != 1:
            reader.fail(step_path, "a step sets exactly one of setWeight, pause, analysis; this "
                        f"one sets {', '.join(kinds) or 'none'}")
            continue
        kind = kinds[0]
        if kind == "setWeight":
            weight = reader.integer(step_obj, "setWeight", step_path, minimum=0, maximum=100)
            if weight is None:
                continue
            if weight < weight_so_far:
                reader.fail(f"{step_path}.setWeight", f"{weight} is below the earlier weight "
                            f"{weight_so_far}; weights must not decrease (abort to roll back)")
            weight_so_far = max(weight_so_far, weight)
            steps.append(SetWeight(weight=weight))
        elif kind == "pause":
            pause_obj = reader.mapping(step_obj, "pause", step_path) or {}
            reader.only(pause_obj, f"{step_path}.pause", "spec.rollout.steps[*].pause")
            steps.append(Pause(duration_seconds=reader.duration(pause_obj, "duration",
                                                                f"{step_path}.pause")))
        else:
            gate_obj = reader.mapping(step_obj, "analysis", step_path) or {}
            reader.only(gate_obj, f"{step_path}.analysis", "spec.rollout.steps[*].analysis")
            gate_max = reader.duration(gate_obj, "maxDuration", f"{step_path}.analysis",
                                       positive=True)
            if gate_max is not None and gate_max < analysis.interval_seconds:
                reader.fail(f"{step_path}.analysis.maxDuration", f"{_show(gate_obj['maxDuration'])}"
                            " is shorter than analysis.interval; it must allow one interval")
            if weight_so_far == 0:
                reader.fail(f"{step_path}.analysis", "comes before any setWeight above 0, so the "
                            "canary has no traffic to analyse; add a setWeight step before it")
            steps.append(AnalysisGate(max_duration_seconds=gate_max))
    return tuple(steps)


def _shorthand_steps(reader: _Reader, obj: Mapping[str, Any], path: str,
                     analysis: AnalysisSpec) -> tuple[Step, ...]:
    """Expand stepWeight/maxWeight/interval: weights up to maxWeight with a pause between,
    then an analysis gate at maxWeight."""
    max_weight = _int(reader.integer(obj, "maxWeight", path, default=DEFAULT_MAX_WEIGHT,
                                     minimum=1, maximum=100))
    step_weight = _int(reader.integer(obj, "stepWeight", path,
                                      default=min(DEFAULT_STEP_WEIGHT, max_weight),
                                      minimum=1, maximum=100))
    if step_weight > max_weight:
        reader.fail(f"{path}.maxWeight", f"{max_weight} is below stepWeight {step_weight}; "
                    "maxWeight must be at least stepWeight")
        return ()
    interval = reader.duration(obj, "interval", path, default=analysis.interval_seconds,
                               positive=True)
    steps: list[Step] = []
    weights = [*list(range(step_weight, max_weight, step_weight)), max_weight]
    for weight in weights[:-1]:
        steps.extend((SetWeight(weight), Pause(duration_seconds=interval)))
    steps.extend((SetWeight(weights[-1]), AnalysisGate()))
    return tuple(steps)


def _int(value: int | None) -> int:
    """Narrow a reader result that had a default (so is never None) to int."""
    assert value is not None, "every caller passes a default"
    return value


def _float(value: float | None) -> float:
    """Narrow a reader result that had a default (so is never None) to float."""
    assert value is not None, "every caller passes a default"
    return value
