"""The rollout as a pure function: decide(spec, state, observed, now) -> Decision.

One tick: read what people asked for (annotations), what the cluster shows and, when an
analysis is due, this tick's scrape; return the whole new status, the Deployments that should
exist, and the Events that tell the story. Nothing here waits: a step that cannot finish yet
is simply decided again at the next tick, from status and the cluster, which is also how a
restarted operator continues.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from modelgate.core import conditions as summary
from modelgate.core import steps as program
from modelgate.core.analysis import (
    AnalysisDecision,
    AnalysisRecord,
    PodScrape,
    Role,
    Verdict,
    final_decision,
    judge,
)
from modelgate.core.analysis.checks import duration_words
from modelgate.core.analysis.observations import MODEL_INFO, REQUESTS, custom_values
from modelgate.core.durations import format_seconds
from modelgate.core.manifests import model_hash, serving_changes, serving_hash
from modelgate.core.state import (
    ArmPlan,
    CanaryState,
    Decision,
    Event,
    HistoryEntry,
    Observed,
    Outcome,
    Rejection,
    RolloutState,
    StableState,
)
from modelgate.core.types import (
    AnalysisGate,
    ModelDeploymentSpec,
    ModelSource,
    OnFailure,
    Pause,
    Phase,
    Promotion,
    ServingSpec,
    SetWeight,
    Step,
)

HISTORY_LIMIT = 10
REJECTED_LIMIT = 10


def wants_scrape(spec: ModelDeploymentSpec, state: RolloutState, now: float) -> bool:
    """Whether this tick should scrape both arms: a canary takes traffic and an analysis
    interval has passed since the last one."""
    canary = state.canary
    if canary is None or canary.promoting or canary.weight <= 0:
        return False
    last = canary.last_analysis_at
    return last is None or now - last >= spec.analysis.interval_seconds - 1e-6


def decide_invalid(state: RolloutState, observed: Observed, problems: list[str],
                   now: float) -> Decision:
    """A spec modelgate cannot act on: say so, and leave what is serving as it is."""
    message = "the spec cannot be acted on: " + "; ".join(problems)
    events = () if state.phase is Phase.DEGRADED and state.message == message else (
        Event("InvalidSpec", message, warning=True),)
    conditions = _set_condition(state.conditions, "SpecValid", False, "InvalidSpec", message,
                                now, observed.generation)
    conditions = summary.summarize(conditions, Phase.DEGRADED, "InvalidSpec", message, (0, 0),
                                   now, observed.generation)
    new_state = replace(state, phase=Phase.DEGRADED, message=message,
                        observed_generation=observed.generation, spec_hash=observed.spec_hash,
                        conditions=conditions)
    return Decision(state=new_state, stable=None, canary=None, events=events,
                        keep_children=True)


REGISTRY_CONDITION = "ModelResolved"
"""False while a models:/ URI of the spec cannot be resolved (reason says why)."""
REGISTRY_REASONS = ("RegistryNotConfigured", "RegistryUnavailable", "ModelNotFound",
                    "AliasNotFound", "PickleNotTrusted", "NoModelFile", "DigestMismatch",
                    "UnsupportedArtifactStore", "ModelTooLarge")
"""The reasons decide_unresolved is called with (modelgate.registry's)."""


def decide_unresolved(state: RolloutState, observed: Observed, reason: str, message: str,
                      now: float) -> Decision:
    """A models:/ URI of the spec cannot be resolved now (an unknown model, version or alias,
    an untrusted pickle, a digest mismatch, the registry down): say which and why, and leave
    what is serving as it is. The next tick tries again, so it resumes when fixed."""
    message = "the model cannot be resolved: " + message
    events = () if state.phase is Phase.DEGRADED and state.message == message else (
        Event(reason, message, warning=True),)
    conditions = _set_condition(state.conditions, REGISTRY_CONDITION, False, reason, message,
                                now, observed.generation)
    conditions = summary.summarize(conditions, Phase.DEGRADED, reason, message, (0, 0),
                                   now, observed.generation)
    new_state = replace(state, phase=Phase.DEGRADED, message=message,
                        observed_generation=observed.generation, conditions=conditions)
    return Decision(state=new_state, stable=None, canary=None, events=events,
                    keep_children=True)


def decide_conflict(state: RolloutState, observed: Observed, conflicts: list[str],
                    now: float) -> Decision:
    """Children's names are taken by objects modelgate does not control: touch nothing, hold
    the rollout where it is, and say which names (a NameConflict condition and Event). Nothing
    moves until a person frees the names: phase Degraded, Stalled."""
    message = "; ".join(conflicts)
    events = () if state.message == message else (Event("NameConflict", message, warning=True),)
    conditions = _set_condition(state.conditions, "NamesAvailable", False, "NameConflict",
                                message, now, observed.generation)
    conditions = summary.summarize(conditions, Phase.DEGRADED, "NameConflict", message, (0, 0),
                                   now, observed.generation)
    new_state = replace(state, phase=Phase.DEGRADED, message=message, conditions=conditions,
                        observed_generation=observed.generation)
    return Decision(state=new_state, stable=None, canary=None, events=events,
                    keep_children=True)


def note_refused_writes(decision: Decision, refusals: list[str], now: float,
                        generation: int) -> Decision:
    """The children's writes the API server refused this tick (each naming the object, the
    verb and the server's message), in a WritesAccepted condition and a Warning Event per new
    refusal; the decision stands, since its other writes went ahead. A tick with none sets
    WritesAccepted True again (with an Event if it was False)."""
    state = decision.state
    previous = summary.status_of(state.conditions, "WritesAccepted")
    before = previous.message if previous is not None and previous.status == "False" else ""
    if refusals:
        message = "; ".join(refusals)
        events = tuple(Event("WriteRefused", refusal, warning=True)
                       for refusal in refusals if refusal not in before)
        conditions = _set_condition(state.conditions, "WritesAccepted", False, "WriteRefused",
                                    message, now, generation)
    elif previous is None or previous.status == "True":
        return decision
    else:
        events = (Event("WritesAccepted", "the API server accepts the children's writes "
                        "again"),)
        conditions = _set_condition(state.conditions, "WritesAccepted", True, "Accepted",
                                    "every write to the children was accepted", now,
                                    generation)
    return replace(decision, state=replace(state, conditions=conditions),
                   events=(*decision.events, *events))


def decide(spec: ModelDeploymentSpec, state: RolloutState, observed: Observed,
           now: float) -> Decision:
    """One tick of the rollout of a valid spec."""
    tick = _Tick(spec, state, observed, now)
    tick.run()
    return tick.finish()


class _Tick:
    """The working state of one decide() call; every method changes `self.state`."""

    def __init__(self, spec: ModelDeploymentSpec, state: RolloutState, observed: Observed,
                 now: float) -> None:
        self.spec = spec
        self.state = state
        self.observed = observed
        self.now = now
        self.events: list[Event] = []
        self.record: AnalysisRecord | None = None
        self.total = spec.serving.replicas
        self.reason = "Deploying"
        """Why the tick ended in its phase (CamelCase): the reason of Ready, Reconciling and
        Stalled (core.conditions)."""

    # --- helpers ---------------------------------------------------------------------------

    def emit(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append(Event(reason, message, warning))

    def report(self, phase: Phase, message: str, reason: str) -> None:
        self.state = replace(self.state, phase=phase, message=message)
        self.reason = reason

    def previous_stalled_reason(self, default: str, allowed: tuple[str, ...] = ()) -> str:
        """The reason the rollout was held for at an earlier tick (kept in status), when the
        hold goes on; `default` when there is none (or it is not one of `allowed`)."""
        stalled = summary.status_of(self.state.conditions, summary.STALLED)
        if stalled is None or stalled.status != "True" or stalled.reason in (
                "InvalidSpec", "NameConflict", *REGISTRY_REASONS) or (
                allowed and stalled.reason not in allowed):
            return default
        return stalled.reason

    def put_canary(self, canary: CanaryState | None) -> None:
        self.state = replace(self.state, canary=canary)

    def running_canary(self) -> CanaryState:
        canary = self.state.canary
        assert canary is not None, "called only while a canary is in flight"
        return canary

    def condition(self, kind: str, status: bool, reason: str, message: str) -> None:
        conditions = _set_condition(self.state.conditions, kind, status, reason, message,
                                    self.now, self.observed.generation)
        self.state = replace(self.state, conditions=conditions)

    def new_request(self, kind: str) -> str | None:
        """A control token not yet acted on, marked as handled."""
        token = getattr(self.observed.controls, kind)
        if not token or token == getattr(self.state.controls, kind):
            return None
        self.state = replace(self.state, controls=replace(self.state.controls, **{kind: token}))
        return str(token)

    def history(self, version: str, outcome: Outcome, reason: str) -> None:
        entry = HistoryEntry(version=version, outcome=outcome, reason=reason, at=self.now)
        self.state = replace(self.state, history=(*self.state.history, entry)[-HISTORY_LIMIT:])

    # --- the tick ---------------------------------------------------------------------------

    def run(self) -> None:
        if any(c.type == "SpecValid" and c.status == "False" for c in self.state.conditions):
            self.emit("SpecValid", "the spec is valid again")
        self.condition("SpecValid", True, "Valid", "the spec is valid")
        if any(c.type == REGISTRY_CONDITION and c.status == "False"
               for c in self.state.conditions):
            self.emit("ModelResolved", "the model's registry URI resolves again")
            self.condition(REGISTRY_CONDITION, True, "Resolved",
                           "every models:/ URI of the spec is resolved")
        if any(c.type == "NamesAvailable" and c.status == "False"
               for c in self.state.conditions):
            self.emit("NameConflictResolved", "the children's names are free or ours again")
            self.condition("NamesAvailable", True, "Available",
                           "every child's name is free or controlled by this ModelDeployment")
        self.state = replace(self.state, observed_generation=self.observed.generation,
                             spec_hash=self.observed.spec_hash)
        self.adopt_serving()
        if self.state.stable is None:
            self.first_deploy()
            if self.state.stable is None:
                return
        target = self.spec.model
        canary = self.state.canary
        if canary is not None and not self.is_target(canary.model, canary.serving):
            self.supersede(target)
        if self.state.canary is None:
            self.without_canary(target)
        if self.state.canary is not None:
            self.with_canary()

    def adopt_serving(self) -> None:
        """A status written before serving changes were canaried records no serving section:
        both arms were built from spec.serving, so that is what they run."""
        stable, canary = self.state.stable, self.state.canary
        if stable is not None and stable.serving is None:
            self.state = replace(self.state, stable=replace(stable, serving=self.spec.serving))
        if canary is not None and canary.serving is None:
            self.put_canary(replace(canary, serving=self.spec.serving))

    def is_target(self, model: ModelSource, serving: ServingSpec | None) -> bool:
        """Whether `model` served as `serving` is what the spec declares (replicas aside)."""
        return model_hash(model) == model_hash(self.spec.model) and serving is not None and \
            serving_hash(serving) == serving_hash(self.spec.serving)

    def what(self, model: ModelSource, serving: ServingSpec | None) -> str:
        """A canary in words: its version, and the serving fields it changes from stable."""
        stable = self.state.stable
        changed = serving_changes(stable.serving, serving) \
            if stable is not None and stable.serving is not None and serving is not None else []
        if not changed:
            return f"version {model.version}"
        fields = ", ".join(f"serving.{name}" for name in changed)
        if stable is not None and model_hash(stable.model) == model_hash(model):
            return f"the serving change of version {model.version} ({fields})"
        return f"version {model.version} with a serving change ({fields})"

    def first_deploy(self) -> None:
        """Nothing serving yet: deploy the declared model, or the baseline when one is
        declared (and then canary the model against it)."""
        initial = self.spec.baseline or self.spec.model
        observed = self.observed.stable
        if observed is not None and observed.model_hash == model_hash(initial) and (
                observed.serving_hash == serving_hash(self.spec.serving)) and (
                observed.settled and observed.ready >= min(self.total, 1)):
            self.state = replace(self.state, stable=StableState(
                model=initial, since=self.now, serving=self.spec.serving))
            how = ("as the declared baseline" if self.spec.baseline
                   else "directly: nothing served before")
            self.emit("Deployed", f"version {initial.version} deployed {how}")
            return
        ready = observed.ready if observed is not None else 0
        self.report(Phase.PENDING,
                    f"deploying version {initial.version}: {ready}/{self.total} pods ready",
                    "Deploying")
        self.condition("Progressing", True, "Deploying", self.state.message)

    def supersede(self, target: ModelSource) -> None:
        canary = self.state.canary
        assert canary is not None
        declared = self.what(target, self.spec.serving)
        reason = (f"the spec now declares {declared}, so the canary of "
                  f"{self.what(canary.model, canary.serving)} was removed before a decision")
        self.history(canary.model.version, Outcome.SUPERSEDED, reason)
        self.emit("Superseded", reason)
        self.put_canary(None)

    def without_canary(self, target: ModelSource) -> None:
        stable = self.state.stable
        assert stable is not None
        target_hash = model_hash(target)
        target_serving = serving_hash(self.spec.serving)
        retry = self.new_request("retry")
        self.new_request("promote")  # nothing to promote: the token is spent
        self.new_request("abort")
        if self.is_target(stable.model, stable.serving):
            self.healthy()
            return
        rejection = next((r for r in self.state.rejected if r.model_hash == target_hash and
                          r.serving_hash in (None, target_serving)), None)
        if rejection is not None and retry is None:
            self.report(Phase.ROLLED_BACK, (
                f"{self.what(target, self.spec.serving)} was rolled back ({rejection.reason}); "
                f"version {stable.model.version} serves all traffic. Change spec.model (or "
                f"spec.serving) or run "
                f"`modelgate retry {self.spec.name}` to try it again"),
                self.previous_stalled_reason("RolledBack", ("RolledBack", "Aborted")))
            return
        if rejection is not None:
            self.state = replace(self.state, rejected=tuple(
                r for r in self.state.rejected if r is not rejection))
            self.emit("Retry", f"retrying {self.what(target, self.spec.serving)}, as a person "
                      "asked")
        self.start_canary(target)

    def healthy(self) -> None:
        stable = self.state.stable
        assert stable is not None
        self.report(Phase.HEALTHY, f"version {stable.model.version} serves all traffic",
                    "Available")
        self.condition("Progressing", False, "Stable", self.state.message)

    def stable_available(self) -> tuple[int, int]:
        """(ready, wanted) stable pods."""
        arm = self.observed.stable
        ready = arm.ready if arm is not None else 0
        wanted = max(program.replica_split(self.total, self._desired_weight()).stable, 1) \
            if self.total > 0 else 0
        return ready, wanted

    def _desired_weight(self) -> int:
        return self.state.canary.desired_weight if self.state.canary is not None else 0

    def start_canary(self, target: ModelSource) -> None:
        stable = self.state.stable
        assert stable is not None
        self.put_canary(CanaryState(model=target, started_at=self.now, step_index=0,
                                    step_started_at=self.now, serving=self.spec.serving))
        message = (f"canary rollout of {self.what(target, self.spec.serving)} started against "
                   f"stable {stable.model.version}")
        self.emit("RolloutStarted", message)
        self.condition("Progressing", True, "RolloutStarted", message)

    # --- a canary in flight -----------------------------------------------------------------

    def with_canary(self) -> None:
        """A canary in flight: each step either ends this tick's work (True) or passes on."""
        self.observe_weight()
        if self.running_canary().promoting:
            self.finish_promotion()
            return
        if self.abort_requested() or self.promote_requested():
            return
        self.new_request("retry")  # nothing rejected to retry while a canary runs
        if self.analyse() or self.paused_by_person() or self.still_held():
            return
        self.advance()

    def abort_requested(self) -> bool:
        if self.new_request("abort") is None:
            return False
        self.roll_back("aborted by a person (modelgate.dev/abort)", Outcome.ABORTED)
        return True

    def promote_requested(self) -> bool:
        if self.new_request("promote") is None:
            return False
        self.begin_promotion("promoted by a person (modelgate.dev/promote), skipping the "
                             "remaining steps")
        return True

    def paused_by_person(self) -> bool:
        """Hold while the pause annotation is set; note when it is set and when removed."""
        canary = self.running_canary()
        if self.observed.controls.paused:
            if not canary.paused:
                self.emit("Paused", "paused by a person (modelgate.dev/paused)")
                self.put_canary(replace(canary, paused=True))
            self.hold_message("paused by a person (modelgate.dev/paused); "
                              f"`modelgate resume {self.spec.name}` continues", "PausedByPerson")
            return True
        if canary.paused:
            self.emit("Resumed", "resumed by a person")
            self.put_canary(replace(canary, paused=False))
        return False

    def still_held(self) -> bool:
        held = self.running_canary().held
        if held is None:
            return False
        self.hold_message(held, self.previous_stalled_reason("Held"))
        return True

    def observe_weight(self) -> None:
        stable = self.observed.stable
        canary_arm = self.observed.canary
        weight = program.achieved_weight(stable.ready if stable else 0,
                                         canary_arm.ready if canary_arm else 0)
        self.put_canary(replace(self.running_canary(), weight=weight))

    def analyse(self) -> bool:
        """Fold this tick's scrape into the window and judge; True if the rollout ended or
        was held by the result."""
        canary = self.state.canary
        stable = self.state.stable
        scrape = self.observed.scrape
        # a scrape taken for a canary this tick replaced belongs to the old one
        if canary is None or stable is None or scrape is None or canary.started_at >= self.now:
            return False
        t = self.now - canary.started_at
        window = canary.window
        errors = canary.provider_errors
        if scrape.error is None:
            # Pods of the other version (still rolling out of an arm's Deployment) are not part
            # of this comparison.
            expected = {Role.STABLE: stable.model.version, Role.CANARY: canary.model.version}
            window = window.add(t, [s for s in scrape.scrapes
                                    if _serves(s, expected[s.role])])
            errors = 0
        else:
            errors += 1
        self.put_canary(replace(canary, window=window, provider_errors=errors,
                                last_analysis_at=self.now))
        step = self.spec.rollout.steps[canary.step_index] \
            if canary.step_index < len(self.spec.rollout.steps) else None
        gate_deadline = None
        if isinstance(step, AnalysisGate) and step.max_duration_seconds is not None:
            # a gate's own limit counts from when the gate began
            gate_deadline = (canary.step_started_at - canary.started_at
                             + step.max_duration_seconds)
        record = judge(self.spec.analysis,
                       window.observation(t) if scrape.error is None else None, t,
                       max_duration_seconds=gate_deadline, provider_error=scrape.error,
                       consecutive_provider_errors=errors,
                       custom_values=None if scrape.error is not None
                       else custom_values(self.spec.analysis, scrape.custom_values),
                       custom_errors=None if scrape.error is not None
                       else scrape.custom_errors,
                       stable_values=None if scrape.error is not None
                       else scrape.stable_values,
                       passed=canary.passed)
        self.record = record
        if scrape.error is None:
            self.report_query_errors(scrape.custom_errors)
        if record.passed != canary.passed:
            self.put_canary(replace(self.running_canary(), passed=record.passed))
        if record.decision is AnalysisDecision.ROLLBACK:
            if self.spec.rollout.on_failure is OnFailure.PAUSE:
                self.hold(f"held for a person (onFailure: pause): {record.reason}",
                          "AnalysisFailed")
                return True
            self.roll_back(record.reason, Outcome.ROLLED_BACK)
            return True
        if record.decision is AnalysisDecision.INCONCLUSIVE:
            # the spec's onInconclusive policy, as the judge's final_decision applies it
            policy = self.spec.analysis.on_inconclusive.value
            why = f"the analysis is inconclusive: {record.reason}"
            decision = final_decision(record, self.spec.analysis.on_inconclusive)
            if decision is AnalysisDecision.ROLLBACK:
                self.roll_back(f"{why} (onInconclusive: {policy})", Outcome.ROLLED_BACK)
            elif decision is AnalysisDecision.PROMOTE:
                self.begin_promotion(f"{why} (onInconclusive: {policy})")
            else:
                self.hold(f"held for a person (onInconclusive: {policy}): {record.reason}",
                          "AnalysisInconclusive")
            return True
        return False

    def report_query_errors(self, errors: Mapping[str, str]) -> None:
        """A Warning Event for each metric whose query cannot be used, once per new reason
        (the last record in status says what was already reported)."""
        before = {str(m.get("name")): m.get("reason")
                  for m in (self.state.analysis or {}).get("metrics", [])
                  if isinstance(m, Mapping)}
        for name, why in errors.items():
            if before.get(name) != why:
                self.emit("MetricQueryFailed", f"{why}; the metric holds the rollout (never a "
                          "rollback) until its query is fixed", warning=True)

    def hold(self, why: str, reason: str) -> None:
        canary = self.state.canary
        assert canary is not None
        if canary.held is None:
            self.emit("Held", why, warning=True)
        self.put_canary(replace(canary, held=why))
        self.hold_message(why, reason)

    def hold_message(self, why: str, reason: str) -> None:
        canary = self.state.canary
        assert canary is not None
        self.report(Phase.PAUSED, f"canary {canary.model.version} at {canary.weight}%: {why}",
                    reason)
        self.condition("Progressing", True, "Paused", self.state.message)

    def advance(self) -> None:
        """Run the step program as far as it can go this tick."""
        steps = self.spec.rollout.steps
        while (canary := self.running_canary()).step_index < len(steps):
            index = canary.step_index
            step = steps[index]
            if isinstance(step, SetWeight) and canary.desired_weight != step.weight:
                canary = replace(canary, desired_weight=step.weight)
                self.put_canary(canary)
            check = step_check(step, canary, self.observed, self.record, self.total, self.now,
                               self.spec.name)
            if not check.done:
                if isinstance(step, SetWeight) and self.past_deadline(canary):
                    self.step_failed(self.not_ready(
                        f"canary {canary.model.version}'s pods were not ready", "canary"))
                    return
                self.progress_message(index, step, check.waiting)
                return
            if isinstance(step, AnalysisGate) and self.record is not None:
                self.emit("AnalysisPassed", self.record.reason)
            self.put_canary(replace(canary, step_index=index + 1, step_started_at=self.now))
            self.emit("StepCompleted", f"step {index + 1}/{len(steps)} "
                      f"({program.describe(step)}) done")
        self.every_step_done()

    def past_deadline(self, canary: CanaryState) -> bool:
        """The current step (or promotion) has waited for pods longer than progressDeadline."""
        return self.now - canary.step_started_at > self.spec.rollout.progress_deadline_seconds

    def not_ready(self, what: str, role: str) -> str:
        """Why a step failed its progress deadline, with the cause its pods show."""
        deadline = format_seconds(self.spec.rollout.progress_deadline_seconds)
        cause = self.observed.pod_problems.get(role)
        return (f"{what} within the progress deadline ({deadline}): "
                f"{cause or 'no pod reports why'}")

    def step_failed(self, reason: str) -> None:
        """A step that cannot succeed: rolled back, or held under onFailure: pause."""
        if self.spec.rollout.on_failure is OnFailure.PAUSE:
            self.hold(f"held for a person (onFailure: pause): {reason}", "ProgressDeadlineExceeded")
            return
        self.roll_back(reason, Outcome.ROLLED_BACK)

    def every_step_done(self) -> None:
        canary = self.running_canary()
        if self.spec.rollout.promotion is Promotion.MANUAL:
            why = (f"every step is done; waiting for a person to promote "
                   f"(`modelgate promote {self.spec.name}`)")
            if canary.held != why:
                self.emit("AwaitingPromotion", why)
            self.put_canary(replace(canary, held=why))
            self.hold_message(why, "AwaitingPromotion")
            return
        self.begin_promotion("every step passed")

    def progress_message(self, index: int, step: Step, waiting: str) -> None:
        canary = self.state.canary
        assert canary is not None
        analysis = self._analysis_summary()
        indefinite = isinstance(step, Pause) and step.duration_seconds is None
        self.report(Phase.PAUSED if indefinite else Phase.PROGRESSING,
                    f"canary {canary.model.version} at {canary.weight}% (step {index + 1}/"
                    f"{len(self.spec.rollout.steps)}: {program.describe(step)}): "
                    f"{waiting}{analysis}", _STEP_REASONS[type(step)] if not indefinite
                    else "AwaitingPromotion")
        self.condition("Progressing", True, "Paused" if indefinite else "RolloutInProgress",
                       self.state.message)

    def _analysis_summary(self) -> str:
        """The last analysis in a few words (this tick's, or the one kept in status)."""
        if self.record is not None:
            metrics = [(m.name, m.verdict.value, m.required_samples, m.canary.samples,
                        m.seconds_to_decision) for m in self.record.metrics]
        elif self.state.analysis and self.state.canary is not None and \
                self.state.canary.last_analysis_at is not None:
            metrics = [(str(m.get("name")), str(m.get("verdict")), m.get("requiredSamples"),
                        (m.get("canary") or {}).get("samples", 0), m.get("secondsToDecision"))
                       for m in self.state.analysis.get("metrics", [])]
        else:
            return ""
        waiting = [m for m in metrics if m[1] != Verdict.PASS.value]
        if not waiting:
            return "; every metric passes"
        return "; " + "; ".join(_needs(*m) for m in waiting[:3])

    def begin_promotion(self, why: str) -> None:
        canary = self.state.canary
        assert canary is not None
        # the promotion's own clock, for its progress deadline
        self.put_canary(replace(canary, promoting=True, held=None, step_started_at=self.now))
        message = f"promoting version {canary.model.version}: {why}"
        self.emit("Promoting", message)
        self.report(Phase.PROGRESSING, message, "Promoting")
        self.condition("Progressing", True, "Promoting", message)

    def finish_promotion(self) -> None:
        canary = self.state.canary
        assert canary is not None
        arm = self.observed.stable
        if arm is not None and arm.model_hash == model_hash(canary.model) and arm.settled \
                and arm.serving_hash == serving_hash(canary.serving or self.spec.serving) \
                and arm.replicas == self.total and arm.ready >= self.total:
            reason = "promoted: stable now serves it after a rolling update"
            promoted = self.what(canary.model, canary.serving)
            if promoted != f"version {canary.model.version}":
                reason = f"promoted {promoted}: stable now serves it after a rolling update"
            self.state = replace(self.state, stable=StableState(
                model=canary.model, since=self.now, serving=canary.serving), canary=None)
            self.history(canary.model.version, Outcome.PROMOTED, reason)
            self.emit("Promoted", f"version {canary.model.version} is stable and serves all "
                      "traffic")
            self.condition("Promoted", True, "Promoted", f"version {canary.model.version} "
                           "promoted")
            self.condition("RolledBack", False, "Promoted", f"version {canary.model.version} "
                           "promoted")
            self.healthy()
            return
        if self.past_deadline(canary):
            # a held promotion would leave stable half rolled: this one always rolls back
            self.roll_back(self.not_ready(f"stable's rolling update to version "
                                          f"{canary.model.version} was not done", "stable"),
                           Outcome.ROLLED_BACK)
            return
        updated = arm.updated if arm is not None else 0
        message = (f"promoting version {canary.model.version}: stable rolling update, "
                   f"{updated}/{self.total} pods updated")
        self.report(Phase.PROGRESSING, message, "Promoting")
        self.condition("Progressing", True, "Promoting", message)

    def roll_back(self, reason: str, outcome: Outcome) -> None:
        canary = self.state.canary
        stable = self.state.stable
        assert canary is not None
        assert stable is not None
        rejected_serving = serving_hash(canary.serving or self.spec.serving)
        rejection = Rejection(model_hash=model_hash(canary.model), version=canary.model.version,
                              sha256=canary.model.sha256, reason=reason, at=self.now,
                              serving_hash=rejected_serving)
        rejected = tuple(r for r in self.state.rejected
                         if (r.model_hash, r.serving_hash) != (rejection.model_hash,
                                                               rejected_serving))
        self.state = replace(self.state, canary=None,
                             rejected=(*rejected, rejection)[-REJECTED_LIMIT:])
        self.history(canary.model.version, outcome, reason)
        what = self.what(canary.model, canary.serving)
        message = (f"{what} rolled back: {reason}; version "
                   f"{stable.model.version} serves all traffic")
        self.emit("RolledBack", message, warning=True)
        self.report(Phase.ROLLED_BACK, message, outcome.value)
        self.condition("RolledBack", True, outcome.value, message)
        self.condition("Promoted", False, outcome.value, message)
        self.condition("Progressing", False, outcome.value, message)

    # --- result -----------------------------------------------------------------------------

    def plans(self) -> tuple[ArmPlan | None, ArmPlan | None]:
        state = self.state
        # Each arm runs the serving configuration it was started with (status keeps both);
        # only the replica count comes from the current spec.
        if state.stable is None:
            initial = self.spec.baseline or self.spec.model
            return ArmPlan(initial, self.total, self.spec.serving), None
        stable_serving = state.stable.serving or self.spec.serving
        canary = state.canary
        if canary is None:
            return ArmPlan(state.stable.model, self.total, stable_serving), None
        canary_serving = canary.serving or self.spec.serving
        split = program.replica_split(self.total, canary.desired_weight)
        if canary.promoting:
            # Stable rolls to the canary's model and serving while the canary keeps serving.
            return (ArmPlan(canary.model, self.total, canary_serving),
                    ArmPlan(canary.model, split.canary, canary_serving))
        return (ArmPlan(state.stable.model, split.stable, stable_serving),
                ArmPlan(canary.model, split.canary, canary_serving))

    def finish(self) -> Decision:
        self.state = replace(self.state, conditions=summary.summarize(
            self.state.conditions, self.state.phase, self.reason, self.state.message,
            self.stable_available(), self.now, self.observed.generation))
        stable, canary = self.plans()
        return Decision(state=self.state, stable=stable, canary=canary,
                            events=tuple(self.events), record=self.record)


@dataclass(frozen=True)
class StepCheck:
    """Whether the current step is done, and if not, what it waits for."""

    done: bool
    waiting: str = ""
    """For the status message while not done."""


def step_check(step: Step, canary: CanaryState, observed: Observed,
               record: AnalysisRecord | None, total: int, now: float, name: str) -> StepCheck:
    """Whether `step` is complete, from status, the cluster and this tick's analysis alone.

    A predicate: it changes nothing and emits nothing (the caller records the step's end),
    so it can be asked at any moment and gives the same answer for the same inputs.
    """
    if isinstance(step, SetWeight):
        split = program.replica_split(total, step.weight)
        arm, stable = observed.canary, observed.stable
        settled = split.canary == 0 or (
            arm is not None and arm.settled and arm.replicas == split.canary
            and arm.ready >= split.canary
            and (split.stable == 0 or (stable is not None and stable.replicas == split.stable
                                       and stable.current == split.stable)))
        return StepCheck(settled, f"waiting for {split.canary} canary and {split.stable} "
                         "stable pods to be ready")
    if isinstance(step, Pause):
        if step.duration_seconds is None:
            return StepCheck(False, f"paused until a person promotes (`modelgate promote "
                             f"{name}`)")
        left = step.duration_seconds - (now - canary.step_started_at)
        return StepCheck(left <= 0, f"pausing, {format_seconds(max(left, 0.0))} left")
    assert isinstance(step, AnalysisGate)
    last = canary.last_analysis_at
    passed = (record is not None and record.decision is AnalysisDecision.PROMOTE
              and last is not None and last >= canary.step_started_at)
    return StepCheck(passed, "" if passed else "waiting for the analysis to pass")


def _serves(scrape: PodScrape, version: str) -> bool:
    """Whether a scrape comes from a pod serving `version` (by its model_info, else by the
    version its requests were counted under)."""
    for names in ((MODEL_INFO,), (REQUESTS,)):
        versions = {sample.label("version") for sample in scrape.samples if sample.name in names}
        versions.discard(None)
        if versions:
            return versions == {version}
    return True


def _needs(name: str, verdict: str, required: int | None, samples: int,
           seconds: float | None) -> str:
    if required and seconds is not None:
        return (f"{name}: {verdict}, needs about {required} more canary samples (has "
                f"{samples}): a verdict in about {duration_words(seconds)} at the current "
                "traffic")
    if required:
        return f"{name}: {verdict}, needs about {required} more canary samples (has {samples})"
    return f"{name}: {verdict}"


_set_condition = summary.set_condition

_STEP_REASONS: dict[type, str] = {SetWeight: "SetWeight", Pause: "Pause",
                                  AnalysisGate: "Analysis"}
"""The reason of Reconciling while a step runs: the step's kind."""
