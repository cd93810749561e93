"""The rollout as a pure function: decide(spec, state, observed, now) -> Decision.

One tick: read what people asked for (annotations), what the cluster shows and, when an
analysis is due, this tick's scrape; return the whole new status, the Deployments that should
exist, and the Events that tell the story. Nothing here waits: a step that cannot finish yet
is simply decided again at the next tick, from status and the cluster, which is also how a
restarted operator continues.
"""

from __future__ import annotations

from dataclasses import replace

from modelgate.core import steps as program
from modelgate.core.analysis import AnalysisRecord, Decision, PodScrape, Role, Verdict, judge
from modelgate.core.analysis.checks import duration_words
from modelgate.core.analysis.observations import MODEL_INFO, REQUESTS
from modelgate.core.manifests import model_hash
from modelgate.core.state import (
    ArmPlan,
    CanaryState,
    Condition,
    Event,
    HistoryEntry,
    Observed,
    Outcome,
    Rejection,
    RolloutState,
    StableState,
)
from modelgate.core.state import Decision as TickDecision
from modelgate.core.types import (
    AnalysisGate,
    ModelDeploymentSpec,
    ModelSource,
    OnFailure,
    OnInconclusive,
    Pause,
    Phase,
    Promotion,
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
                   now: float) -> TickDecision:
    """A spec modelgate cannot act on: say so, and leave what is serving as it is."""
    message = "the spec cannot be acted on: " + "; ".join(problems)
    events = () if state.phase is Phase.DEGRADED and state.message == message else (
        Event("InvalidSpec", message, warning=True),)
    conditions = _set_condition(state.conditions, "SpecValid", False, "InvalidSpec", message,
                                now, observed.generation)
    new_state = replace(state, phase=Phase.DEGRADED, message=message,
                        observed_generation=observed.generation, spec_hash=observed.spec_hash,
                        conditions=conditions)
    return TickDecision(state=new_state, stable=None, canary=None, events=events,
                        keep_children=True)


def decide(spec: ModelDeploymentSpec, state: RolloutState, observed: Observed,
           now: float) -> TickDecision:
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

    # --- helpers ---------------------------------------------------------------------------

    def emit(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append(Event(reason, message, warning))

    def set(self, **changes: object) -> None:
        self.state = replace(self.state, **changes)  # type: ignore[arg-type]

    def set_canary(self, **changes: object) -> None:
        assert self.state.canary is not None
        self.set(canary=replace(self.state.canary, **changes))  # type: ignore[arg-type]

    def condition(self, kind: str, status: bool, reason: str, message: str) -> None:
        self.set(conditions=_set_condition(self.state.conditions, kind, status, reason, message,
                                           self.now, self.observed.generation))

    def new_request(self, kind: str) -> str | None:
        """A control token not yet acted on, marked as handled."""
        token = getattr(self.observed.controls, kind)
        if not token or token == getattr(self.state.controls, kind):
            return None
        self.set(controls=replace(self.state.controls, **{kind: token}))
        return str(token)

    def history(self, version: str, outcome: Outcome, reason: str) -> None:
        entry = HistoryEntry(version=version, outcome=outcome, reason=reason, at=self.now)
        self.set(history=(*self.state.history, entry)[-HISTORY_LIMIT:])

    # --- the tick ---------------------------------------------------------------------------

    def run(self) -> None:
        if self.state.phase is Phase.DEGRADED:
            self.emit("SpecValid", "the spec is valid again")
        self.condition("SpecValid", True, "Valid", "the spec is valid")
        self.set(observed_generation=self.observed.generation,
                 spec_hash=self.observed.spec_hash)
        if self.state.stable is None:
            self.first_deploy()
            if self.state.stable is None:
                return
        target = self.spec.model
        canary = self.state.canary
        if canary is not None and model_hash(canary.model) != model_hash(target):
            self.supersede(target)
        if self.state.canary is None:
            self.without_canary(target)
        if self.state.canary is not None:
            self.with_canary()

    def first_deploy(self) -> None:
        """Nothing serving yet: deploy the declared model, or the baseline when one is
        declared (and then canary the model against it)."""
        initial = self.spec.baseline or self.spec.model
        observed = self.observed.stable
        if observed is not None and observed.model_hash == model_hash(initial) and (
                observed.settled and observed.ready >= min(self.total, 1)):
            self.set(stable=StableState(model=initial, since=self.now))
            how = ("as the declared baseline" if self.spec.baseline
                   else "directly: nothing served before")
            self.emit("Deployed", f"version {initial.version} deployed {how}")
            return
        ready = observed.ready if observed is not None else 0
        self.set(phase=Phase.PENDING,
                 message=f"deploying version {initial.version}: {ready}/{self.total} pods ready")
        self.condition("Ready", False, "Deploying", self.state.message)
        self.condition("Progressing", True, "Deploying", self.state.message)

    def supersede(self, target: ModelSource) -> None:
        canary = self.state.canary
        assert canary is not None
        reason = (f"the spec now declares version {target.version}, so canary "
                  f"{canary.model.version} was removed before a decision")
        self.history(canary.model.version, Outcome.SUPERSEDED, reason)
        self.emit("Superseded", reason)
        self.set(canary=None)

    def without_canary(self, target: ModelSource) -> None:
        stable = self.state.stable
        assert stable is not None
        target_hash = model_hash(target)
        retry = self.new_request("retry")
        self.new_request("promote")  # nothing to promote: the token is spent
        self.new_request("abort")
        if target_hash == model_hash(stable.model):
            self.healthy()
            return
        rejection = next((r for r in self.state.rejected if r.model_hash == target_hash), None)
        if rejection is not None and retry is None:
            self.set(phase=Phase.ROLLED_BACK, message=(
                f"version {target.version} was rolled back ({rejection.reason}); version "
                f"{stable.model.version} serves all traffic. Change spec.model or run "
                f"`modelgate retry {self.spec.name}` to try it again"))
            self.ready_condition()
            return
        if rejection is not None:
            self.set(rejected=tuple(r for r in self.state.rejected if r is not rejection))
            self.emit("Retry", f"retrying version {target.version}, as a person asked")
        self.start_canary(target)

    def healthy(self) -> None:
        stable = self.state.stable
        assert stable is not None
        self.set(phase=Phase.HEALTHY,
                 message=f"version {stable.model.version} serves all traffic")
        self.ready_condition()
        self.condition("Progressing", False, "Stable", self.state.message)

    def ready_condition(self) -> None:
        arm = self.observed.stable
        ready = arm.ready if arm is not None else 0
        wanted = max(program.replica_split(self.total, self._desired_weight()).stable, 1) \
            if self.total > 0 else 0
        if ready >= wanted:
            self.condition("Ready", True, "Available", f"{ready} stable pods ready")
        else:
            self.condition("Ready", False, "Unavailable",
                           f"{ready} of {wanted} stable pods ready")

    def _desired_weight(self) -> int:
        return self.state.canary.desired_weight if self.state.canary is not None else 0

    def start_canary(self, target: ModelSource) -> None:
        stable = self.state.stable
        assert stable is not None
        self.set(canary=CanaryState(model=target, started_at=self.now, step_index=0,
                                    step_started_at=self.now))
        message = (f"canary rollout of version {target.version} started against stable "
                   f"{stable.model.version}")
        self.emit("RolloutStarted", message)
        self.condition("Progressing", True, "RolloutStarted", message)

    # --- a canary in flight -----------------------------------------------------------------

    def with_canary(self) -> None:
        self.observe_weight()
        if self.state.canary is not None and self.state.canary.promoting:
            self.finish_promotion()
            return
        if self.new_request("abort") is not None:
            self.roll_back("aborted by a person (modelgate.dev/abort)", Outcome.ABORTED)
            return
        if self.new_request("promote") is not None:
            self.begin_promotion("promoted by a person (modelgate.dev/promote), skipping the "
                                 "remaining steps")
            return
        self.new_request("retry")  # nothing rejected to retry while a canary runs
        if self.analyse():
            return
        canary = self.state.canary
        assert canary is not None
        if self.observed.controls.paused:
            if not canary.paused:
                self.emit("Paused", "paused by a person (modelgate.dev/paused)")
                self.set_canary(paused=True)
            self.hold_message("paused by a person (modelgate.dev/paused); "
                              f"`modelgate resume {self.spec.name}` continues")
            return
        if canary.paused:
            self.emit("Resumed", "resumed by a person")
            self.set_canary(paused=False)
        if canary.held is not None:
            self.hold_message(canary.held)
            return
        self.advance()

    def observe_weight(self) -> None:
        stable = self.observed.stable
        canary_arm = self.observed.canary
        weight = program.achieved_weight(stable.ready if stable else 0,
                                         canary_arm.ready if canary_arm else 0)
        self.set_canary(weight=weight)

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
        self.set_canary(window=window, provider_errors=errors, last_analysis_at=self.now)
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
                       custom_values=None, passed=canary.passed)
        self.record = record
        if record.passed != canary.passed:
            self.set_canary(passed=record.passed)
        if record.decision is Decision.ROLLBACK:
            if self.spec.rollout.on_failure is OnFailure.PAUSE:
                self.hold(f"held for a person (onFailure: pause): {record.reason}")
                return True
            self.roll_back(record.reason, Outcome.ROLLED_BACK)
            return True
        if record.decision is Decision.INCONCLUSIVE:
            policy = self.spec.analysis.on_inconclusive
            why = f"the analysis is inconclusive: {record.reason}"
            if policy is OnInconclusive.ROLLBACK and not record.starved:
                self.roll_back(f"{why} (onInconclusive: rollback)", Outcome.ROLLED_BACK)
                return True
            if policy is OnInconclusive.PROMOTE:
                self.begin_promotion(f"{why} (onInconclusive: promote)")
                return True
            self.hold(f"held for a person (onInconclusive: pause): {record.reason}")
            return True
        return False

    def hold(self, why: str) -> None:
        canary = self.state.canary
        assert canary is not None
        if canary.held is None:
            self.emit("Held", why, warning=True)
        self.set_canary(held=why)
        self.hold_message(why)

    def hold_message(self, why: str) -> None:
        canary = self.state.canary
        assert canary is not None
        self.set(phase=Phase.PAUSED, message=f"canary {canary.model.version} at "
                 f"{canary.weight}%: {why}")
        self.condition("Progressing", True, "Paused", self.state.message)
        self.ready_condition()

    def advance(self) -> None:
        """Run the step program as far as it can go this tick."""
        steps = self.spec.rollout.steps
        for _ in range(len(steps) + 1):
            canary = self.state.canary
            assert canary is not None
            index = canary.step_index
            if index >= len(steps):
                if self.spec.rollout.promotion is Promotion.MANUAL:
                    why = (f"every step is done; waiting for a person to promote "
                           f"(`modelgate promote {self.spec.name}`)")
                    if canary.held != why:
                        self.emit("AwaitingPromotion", why)
                    self.set_canary(held=why)
                    self.hold_message(why)
                    return
                self.begin_promotion("every step passed")
                return
            step = steps[index]
            done, waiting = self.step_done(step, canary)
            if not done:
                self.progress_message(index, step, waiting)
                return
            self.set_canary(step_index=index + 1, step_started_at=self.now)
            self.emit("StepCompleted", f"step {index + 1}/{len(steps)} "
                      f"({program.describe(step)}) done")

    def step_done(self, step: Step, canary: CanaryState) -> tuple[bool, str]:
        if isinstance(step, SetWeight):
            split = program.replica_split(self.total, step.weight)
            if canary.desired_weight != step.weight:
                self.set_canary(desired_weight=step.weight)
            stable = self.observed.stable
            arm = self.observed.canary
            settled = (arm is not None and arm.settled and arm.replicas == split.canary
                       and arm.ready >= split.canary
                       and (split.stable == 0 or (stable is not None and stable.replicas
                                                  == split.stable and stable.current
                                                  == split.stable)))
            if split.canary == 0:
                settled = True
            return settled, (f"waiting for {split.canary} canary and {split.stable} stable "
                             "pods to be ready")
        if isinstance(step, Pause):
            if step.duration_seconds is None:
                why = (f"paused until a person promotes (`modelgate promote "
                       f"{self.spec.name}`)")
                return False, why
            left = step.duration_seconds - (self.now - canary.step_started_at)
            return left <= 0, f"pausing, {program.format_seconds(max(left, 0.0))} left"
        assert isinstance(step, AnalysisGate)
        last = canary.last_analysis_at
        if self.record is not None and self.record.decision is Decision.PROMOTE and (
                last is not None and last >= canary.step_started_at):
            self.emit("AnalysisPassed", self.record.reason)
            return True, ""
        return False, "waiting for the analysis to pass"

    def progress_message(self, index: int, step: Step, waiting: str) -> None:
        canary = self.state.canary
        assert canary is not None
        analysis = self._analysis_summary()
        indefinite = isinstance(step, Pause) and step.duration_seconds is None
        self.set(phase=Phase.PAUSED if indefinite else Phase.PROGRESSING,
                 message=(f"canary {canary.model.version} at {canary.weight}% (step "
                          f"{index + 1}/{len(self.spec.rollout.steps)}: "
                          f"{program.describe(step)}): {waiting}{analysis}"))
        self.condition("Progressing", True, "Paused" if indefinite else "RolloutInProgress",
                       self.state.message)
        self.ready_condition()

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
        self.set_canary(promoting=True, held=None)
        message = f"promoting version {canary.model.version}: {why}"
        self.emit("Promoting", message)
        self.set(phase=Phase.PROGRESSING, message=message)
        self.condition("Progressing", True, "Promoting", message)

    def finish_promotion(self) -> None:
        canary = self.state.canary
        assert canary is not None
        arm = self.observed.stable
        if arm is not None and arm.model_hash == model_hash(canary.model) and arm.settled \
                and arm.replicas == self.total and arm.ready >= self.total:
            reason = "promoted: stable now serves it after a rolling update"
            self.set(stable=StableState(model=canary.model, since=self.now), canary=None)
            self.history(canary.model.version, Outcome.PROMOTED, reason)
            self.emit("Promoted", f"version {canary.model.version} is stable and serves all "
                      "traffic")
            self.condition("Promoted", True, "Promoted", f"version {canary.model.version} "
                           "promoted")
            self.condition("RolledBack", False, "Promoted", f"version {canary.model.version} "
                           "promoted")
            self.healthy()
            return
        updated = arm.updated if arm is not None else 0
        message = (f"promoting version {canary.model.version}: stable rolling update, "
                   f"{updated}/{self.total} pods updated")
        self.set(phase=Phase.PROGRESSING, message=message)
        self.condition("Progressing", True, "Promoting", message)

    def roll_back(self, reason: str, outcome: Outcome) -> None:
        canary = self.state.canary
        stable = self.state.stable
        assert canary is not None
        assert stable is not None
        rejection = Rejection(model_hash=model_hash(canary.model), version=canary.model.version,
                              sha256=canary.model.sha256, reason=reason, at=self.now)
        rejected = tuple(r for r in self.state.rejected if r.model_hash != rejection.model_hash)
        self.set(canary=None, rejected=(*rejected, rejection)[-REJECTED_LIMIT:])
        self.history(canary.model.version, outcome, reason)
        message = (f"version {canary.model.version} rolled back: {reason}; version "
                   f"{stable.model.version} serves all traffic")
        self.emit("RolledBack", message, warning=True)
        self.set(phase=Phase.ROLLED_BACK, message=message)
        self.condition("RolledBack", True, outcome.value, message)
        self.condition("Promoted", False, outcome.value, message)
        self.condition("Progressing", False, outcome.value, message)
        self.ready_condition()

    # --- result -----------------------------------------------------------------------------

    def plans(self) -> tuple[ArmPlan | None, ArmPlan | None]:
        state = self.state
        if state.stable is None:
            initial = self.spec.baseline or self.spec.model
            return ArmPlan(initial, self.total), None
        canary = state.canary
        if canary is None:
            return ArmPlan(state.stable.model, self.total), None
        if canary.promoting:
            # Stable rolls to the canary's model while the canary keeps serving.
            split = program.replica_split(self.total, canary.desired_weight)
            return ArmPlan(canary.model, self.total), ArmPlan(canary.model, split.canary)
        split = program.replica_split(self.total, canary.desired_weight)
        return ArmPlan(state.stable.model, split.stable), ArmPlan(canary.model, split.canary)

    def finish(self) -> TickDecision:
        stable, canary = self.plans()
        return TickDecision(state=self.state, stable=stable, canary=canary,
                            events=tuple(self.events), record=self.record)


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


def _set_condition(conditions: tuple[Condition, ...], kind: str, status: bool, reason: str,
                   message: str, now: float, generation: int | None) -> tuple[Condition, ...]:
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.type == kind), None)
    since = previous.last_transition if previous is not None and previous.status == value \
        else now
    updated = Condition(type=kind, status=value, reason=reason, message=message,
                        last_transition=since, observed_generation=generation)
    others = tuple(c for c in conditions if c.type != kind)
    return tuple(sorted((*others, updated), key=lambda c: _CONDITION_ORDER.get(c.type, 99)))


_CONDITION_ORDER = {"Ready": 0, "Progressing": 1, "Promoted": 2, "RolledBack": 3,
                    "SpecValid": 4}
