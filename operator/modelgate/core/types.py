"""The ModelDeployment spec as frozen values, and the enums the rest of the core speaks.

Nothing here knows about Kubernetes dicts: `modelgate.api` turns a custom resource into these
types, applying the CRD's defaults. Durations are seconds as floats; absent optional values are
None, never a sentinel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Phase(str, Enum):
    """Where a ModelDeployment's rollout stands (status.phase)."""

    PENDING = "Pending"
    """Accepted, nothing serving yet: the first version is being deployed."""
    PROGRESSING = "Progressing"
    """A canary is taking traffic and being analysed."""
    PAUSED = "Paused"
    """A canary is held at its weight, waiting for a person (a pause step, manual promotion,
    an inconclusive analysis, or onFailure: pause)."""
    HEALTHY = "Healthy"
    """The declared version is stable and serving all traffic."""
    ROLLED_BACK = "RolledBack"
    """The declared version was rejected; the previous stable version serves all traffic."""
    DEGRADED = "Degraded"
    """The spec cannot be acted on (invalid) or the serving pods cannot run; what was serving
    stays as it was."""


class ModelFormat(str, Enum):
    """How a model file is serialised."""

    SKOPS = "skops"
    """skops: loads only types on an allow-list, so an untrusted file cannot run code."""
    JOBLIB = "joblib"
    """joblib (pickle): can run arbitrary code while loading; only for trusted files."""


class BatchingMode(str, Enum):
    """Whether the server groups concurrent requests into one predict call."""

    AUTO = "auto"
    """Batch only when one call's fixed cost dominates (measured at load time)."""
    ON = "on"
    """Always batch."""
    OFF = "off"
    """Never batch."""


class Promotion(str, Enum):
    """What happens when the step program ends."""

    AUTOMATIC = "automatic"
    """Promote the canary."""
    MANUAL = "manual"
    """Hold (phase Paused) until a person promotes."""


class OnFailure(str, Enum):
    """What happens when a metric fails."""

    ROLLBACK = "rollback"
    """Return all traffic to stable at once and remove the canary."""
    PAUSE = "pause"
    """Hold the canary where it is for a person to abort or promote."""


class OnInconclusive(str, Enum):
    """What happens when an analysis reaches its maximum duration without a verdict."""

    PAUSE = "pause"
    """Hold for a person."""
    PROMOTE = "promote"
    """Promote the canary."""
    ROLLBACK = "rollback"
    """Roll the canary back."""


class MetricType(str, Enum):
    """The kinds of check the judge knows."""

    ERROR_RATE = "errorRate"
    """Share of requests answered with a 5xx, two proportions compared."""
    LATENCY = "latency"
    """A quantile of request duration, from the latency histograms."""
    PREDICTION_DISTRIBUTION = "predictionDistribution"
    """Predicted classes (or binned prediction values) of canary against stable."""
    ACCURACY = "accuracy"
    """Share of correct predictions, from feedback with delayed labels."""
    PROMETHEUS = "prometheus"
    """A user's PromQL query for the canary, against an absolute threshold range."""


class ProviderType(str, Enum):
    """Where metrics come from."""

    POD_SCRAPE = "podScrape"
    """Read /metrics of every ready pod of both arms directly."""
    PROMETHEUS = "prometheus"
    """Query a Prometheus server."""


class RouterType(str, Enum):
    """How traffic is split."""

    REPLICAS = "replicas"
    """Split serving.replicas between stable and canary pods behind one Service."""


@dataclass(frozen=True)
class ModelSource:
    """One model file and how to load it."""

    version: str
    uri: str
    sha256: str | None = None
    format: ModelFormat = ModelFormat.SKOPS
    trusted: bool = False
    trusted_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeyRef:
    """A key of a Secret or ConfigMap in the object's namespace."""

    kind: str
    """"secret" or "configMap"."""
    name: str
    key: str


@dataclass(frozen=True)
class EnvVar:
    """An environment variable of the serving container: a literal value or a key reference."""

    name: str
    value: str | None = None
    value_from: KeyRef | None = None


@dataclass(frozen=True)
class Resources:
    """Compute resources; quantities are kept as the user wrote them (strings)."""

    requests: tuple[tuple[str, str], ...] = ()
    limits: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Batching:
    """Server-side micro-batching."""

    mode: BatchingMode = BatchingMode.AUTO
    max_batch_size: int = 32
    max_wait_seconds: float = 0.002


@dataclass(frozen=True)
class ServingSpec:
    """How the pods serve the model; each arm runs the one status records for it (a change
    of any field but replicas is canaried)."""

    image: str = "modelgate/serving:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    replicas: int = 2
    port: int = 8080
    workers: int = 1
    resources: Resources = Resources()
    env: tuple[EnvVar, ...] = ()
    batching: Batching = Batching()


@dataclass(frozen=True)
class SetWeight:
    """Step: send this percentage of traffic to the canary."""

    weight: int


@dataclass(frozen=True)
class Pause:
    """Step: wait for a duration in seconds, or, with None, until a person promotes."""

    duration_seconds: float | None = None


@dataclass(frozen=True)
class AnalysisGate:
    """Step: hold until every metric passes; None means analysis.maxDuration bounds it."""

    max_duration_seconds: float | None = None


Step = SetWeight | Pause | AnalysisGate


@dataclass(frozen=True)
class RolloutSpec:
    """The step program and what happens at its end or on failure."""

    steps: tuple[Step, ...]
    promotion: Promotion = Promotion.AUTOMATIC
    on_failure: OnFailure = OnFailure.ROLLBACK
    progress_deadline_seconds: float = 600.0
    """How long a setWeight step may wait for the canary's pods to be ready, and promotion
    for stable's rolling update, before the step has failed (spec.rollout.progressDeadline)."""


@dataclass(frozen=True)
class ThresholdRange:
    """Pass while a value stays within [minimum, maximum]; None leaves a side open."""

    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class MetricSpec:
    """One check of the canary against stable (or, for prometheus, against a threshold)."""

    name: str
    type: MetricType
    tolerance: float | None = None
    """Metric-specific: see DEFAULT_TOLERANCES; None only for prometheus metrics."""
    min_samples: int = 100
    quantile: float | None = None
    """Latency only: which quantile (0 < q < 1)."""
    query: str | None = None
    threshold: ThresholdRange | None = None


DEFAULT_TOLERANCES: dict[MetricType, float] = {
    MetricType.ERROR_RATE: 0.0025,
    MetricType.LATENCY: 0.10,
    MetricType.PREDICTION_DISTRIBUTION: 0.05,
    MetricType.ACCURACY: 0.02,
}
"""Tolerance of each comparative metric when the spec gives none. errorRate: absolute increase
of the error share; latency: relative increase of the quantile; predictionDistribution:
population stability index; accuracy: absolute decrease."""

DEFAULT_LATENCY_QUANTILE = 0.99


@dataclass(frozen=True)
class ProviderSpec:
    """Where metrics come from."""

    type: ProviderType = ProviderType.POD_SCRAPE
    address: str | None = None
    timeout_seconds: float = 5.0


@dataclass(frozen=True)
class AnalysisSpec:
    """How the canary is judged."""

    metrics: tuple[MetricSpec, ...]
    interval_seconds: float = 30.0
    alpha: float = 0.01
    """Largest chance of rolling back a canary as good as stable, over the whole analysis."""
    beta: float = 0.05
    """Largest chance of promoting a canary worse than stable by a metric's tolerance."""
    min_samples: int = 100
    max_duration_seconds: float = 1800.0
    on_inconclusive: OnInconclusive = OnInconclusive.PAUSE
    provider_error_limit: int = 10
    provider: ProviderSpec = ProviderSpec()
    metrics_defaulted: bool = False
    """True when the spec listed no metrics and the built-in defaults were used."""


DEFAULT_REGISTRY_ALIAS = "production"


@dataclass(frozen=True)
class WriteBackSpec:
    """What the model registry is told of rollout decisions (off by default)."""

    enabled: bool = False
    alias: str = DEFAULT_REGISTRY_ALIAS
    """The registry alias moved to each promoted version."""


@dataclass(frozen=True)
class RegistrySpec:
    """The MLflow tracking server that `models:/` URIs are resolved against."""

    tracking_uri: str | None = None
    """Base URL; None: the operator's MODELGATE_OPERATOR_MLFLOW_TRACKING_URI."""
    token_secret_ref: KeyRef | None = None
    """Secret key holding the bearer token the serving pods send with their download."""
    write_back: WriteBackSpec = WriteBackSpec()


class WebhookFormat(str, Enum):
    """The body a webhook is sent (spec.notifications.webhooks[].format)."""

    JSON = "json"
    """The payload as JSON, or the body template rendered from it."""
    SLACK = "slack"
    """A Slack incoming-webhook message ({"text": ...})."""


@dataclass(frozen=True)
class WebhookSpec:
    """One webhook called on rollout transitions."""

    name: str
    url: str
    format: WebhookFormat = WebhookFormat.JSON
    body: str | None = None
    """A string.Template rendered from the payload's fields; None: the payload itself."""
    transitions: tuple[str, ...] = ()
    """The transitions (Event reasons) it is called for; empty: every transition."""


@dataclass(frozen=True)
class NotificationsSpec:
    """Webhooks told of rollout transitions (none by default)."""

    webhooks: tuple[WebhookSpec, ...] = ()


@dataclass(frozen=True)
class RegistryModel:
    """A `models:/<name>/<version>` or `models:/<name>@<alias>` URI, parsed."""

    name: str
    version: str | None = None
    alias: str | None = None


REGISTRY_SCHEME = "models:/"


def registry_model(uri: str) -> RegistryModel | None:
    """The registry model a `models:/` URI names; None for a file or http(s) URI."""
    if not uri.startswith(REGISTRY_SCHEME):
        return None
    rest = uri[len(REGISTRY_SCHEME):]
    if "@" in rest:
        name, _, alias = rest.rpartition("@")
        return RegistryModel(name=name, alias=alias)
    name, _, version = rest.rpartition("/")
    return RegistryModel(name=name, version=version)


@dataclass(frozen=True)
class RouterSpec:
    """How traffic is split."""

    type: RouterType = RouterType.REPLICAS


@dataclass(frozen=True)
class ModelDeploymentSpec:
    """A whole, validated, defaulted ModelDeployment spec."""

    name: str
    """metadata.name of the object."""
    model_name: str
    """Name the server exposes the model under; metadata.name unless the spec says."""
    model: ModelSource
    rollout: RolloutSpec
    analysis: AnalysisSpec
    serving: ServingSpec = ServingSpec()
    router: RouterSpec = RouterSpec()
    baseline: ModelSource | None = None
    registry: RegistrySpec = RegistrySpec()
    notifications: NotificationsSpec = NotificationsSpec()
    namespace: str | None = field(default=None, compare=False)

