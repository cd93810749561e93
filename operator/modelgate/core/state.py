"""What the operator knows about one ModelDeployment between ticks (its status), what it saw
of the cluster this tick, and what it decided.

Everything a restarted operator needs to continue is in `RolloutState` (written to status
once per tick by `modelgate.status`), or can be seen again in the cluster (`Observed`). Times are
seconds since the epoch, always passed in; the core never reads a clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from modelgate.core.analysis import AnalysisRecord, PodScrape, Window
from modelgate.core.types import ModelSource, Phase, ServingSpec


class Outcome(str, Enum):
    """How a rollout ended (status.history[].outcome)."""

    PROMOTED = "Promoted"
    """The canary became stable."""
    ROLLED_BACK = "RolledBack"
    """The analysis rejected the canary."""
    ABORTED = "Aborted"
    """A person rolled the canary back."""
    SUPERSEDED = "Superseded"
    """The spec declared another model before this one finished."""


@dataclass(frozen=True)
class StableState:
    """The model serving all traffic outside a rollout."""

    model: ModelSource
    since: float
    serving: ServingSpec | None = None
    """How stable's pods serve it (spec.serving when it became stable; its replicas are not
    used). None only in a status written before serving changes were canaried: the tick then
    takes the current spec.serving, which is what stable was built from."""


@dataclass(frozen=True)
class CanaryState:
    """A rollout in flight."""

    model: ModelSource
    started_at: float
    step_index: int = 0
    step_started_at: float = 0.0
    desired_weight: int = 0
    weight: int = 0
    """Achieved: the share of ready pods that are canaries."""
    promoting: bool = False
    """Set once promotion is decided: stable is rolling to the canary's model."""
    held: str | None = None
    """Why the program is held for a person (manual promotion, an inconclusive analysis,
    onFailure: pause); None while it runs on its own."""
    paused: bool = False
    """A person paused the rollout (modelgate.dev/paused) and has not resumed it yet."""
    last_analysis_at: float | None = None
    provider_errors: int = 0
    window: Window = field(default_factory=Window)
    passed: tuple[str, ...] = ()
    """Metrics that passed at some look of this analysis (a pass stands; see judge)."""
    serving: ServingSpec | None = None
    """How the canary's pods serve the model (spec.serving when it started); None only in
    a status written before serving changes were canaried."""


@dataclass(frozen=True)
class Rejection:
    """A model that was rolled back and is not to be retried until the spec or a person says."""

    model_hash: str
    version: str
    sha256: str | None
    reason: str
    at: float
    serving_hash: str | None = None
    """The serving configuration it was rejected with (manifests.serving_hash); None in a
    status written before serving changes were canaried, and then any serving matches."""


@dataclass(frozen=True)
class HistoryEntry:
    version: str
    outcome: Outcome
    reason: str
    at: float


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    """"True", "False" or "Unknown"."""
    reason: str
    message: str
    last_transition: float
    observed_generation: int | None = None


@dataclass(frozen=True)
class Controls:
    """The last request token of each kind already acted on (the annotations are in
    modelgate.control_annotations)."""

    promote: str | None = None
    abort: str | None = None
    retry: str | None = None


@dataclass(frozen=True)
class RolloutState:
    """The whole status of a ModelDeployment, typed."""

    phase: Phase = Phase.PENDING
    message: str = ""
    observed_generation: int | None = None
    spec_hash: str | None = None
    stable: StableState | None = None
    canary: CanaryState | None = None
    rejected: tuple[Rejection, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    conditions: tuple[Condition, ...] = ()
    controls: Controls = Controls()
    analysis: Mapping[str, Any] | None = None
    """The last decision record, as written to status (kept as it was between analyses)."""


@dataclass(frozen=True)
class ArmObserved:
    """One arm's Deployment as the cluster shows it."""

    model_hash: str | None
    """The model the Deployment's pod template serves (from its annotation)."""
    replicas: int
    ready: int
    updated: int
    current: int
    """Pods of any template (old ones linger during a rolling update)."""
    settled: bool
    """The controller has seen the latest template and every pod runs it and is ready."""
    serving_hash: str | None = None
    """How its pods serve it (manifests.serving_hash, from its annotation)."""


@dataclass(frozen=True)
class ControlRequests:
    """What people asked for through annotations (tokens: any new value is a new request)."""

    promote: str | None = None
    abort: str | None = None
    retry: str | None = None
    paused: bool = False


@dataclass(frozen=True)
class ScrapeResult:
    """This tick's scrape of both arms, or why it failed."""

    scrapes: tuple[PodScrape, ...] = ()
    error: str | None = None
    custom_values: Mapping[str, float] = field(default_factory=dict)
    """The canary's value of each prometheus (threshold) metric the provider could read, by
    metric name; a provider that reads none leaves it empty (those metrics hold, no data)."""
    stable_values: Mapping[str, float] = field(default_factory=dict)
    """The same query's value for stable, for prometheus metrics compared with stable."""
    custom_errors: Mapping[str, str] = field(default_factory=dict)
    """Why a prometheus metric has no value this round (its query was refused, or returned
    several series, NaN or an infinity), by metric name; the message names the metric and
    its field. Such a metric reports an error and holds; it never rolls back."""


@dataclass(frozen=True)
class Observed:
    """Everything seen this tick."""

    generation: int
    spec_hash: str
    controls: ControlRequests = ControlRequests()
    stable: ArmObserved | None = None
    canary: ArmObserved | None = None
    scrape: ScrapeResult | None = None
    """Present when the machine asked for a scrape (see machine.wants_scrape)."""
    pod_problems: Mapping[str, str] = field(default_factory=dict)
    """Why an arm's pods are not ready, by role ("stable", "canary"), in the words of their
    status (ImagePullBackOff, CrashLoopBackOff and the last log line, Pending and the
    scheduler's reason); read while a canary is in flight and an arm waits for its pods."""


@dataclass(frozen=True)
class ArmPlan:
    """One arm's Deployment as it should be."""

    model: ModelSource
    replicas: int
    serving: ServingSpec | None = None
    """The arm's serving configuration; None: spec.serving."""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the ModelDeployment."""

    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Decision:
    """The outcome of one tick."""

    state: RolloutState
    stable: ArmPlan | None
    canary: ArmPlan | None
    """None: the arm's Deployment must not exist."""
    events: tuple[Event, ...] = ()
    record: AnalysisRecord | None = None
    """The analysis judged this tick, if any."""
    keep_children: bool = False
    """True when the spec cannot be acted on: leave every child exactly as it is."""
