"""Status conditions, and the three that tools read: Ready, Reconciling and Stalled.

`phase` is for people; these three are for tools. They follow the Kubernetes API conventions
(each condition has a status, a CamelCase reason, a message, the generation it reflects and
the time its status last changed, kept while the status stays the same) and kstatus, the
reading Flux (`wait`, `healthChecks`), `kubectl wait` and cli-utils use:

- `Reconciling` True: modelgate is working towards the declared model on its own (deploying,
  a canary step, promoting); the reason names the step.
- `Stalled` True: nothing will change without a person or a commit (rolled back, an invalid
  spec, a name taken by someone else's object, held for a person); the reason says which.
- `Ready` True only when the declared model serves every pod's worth of traffic and nothing is
  pending (phase Healthy with its stable pods ready).

They are a function of the tick's outcome alone (`summarize`), so the phase, these conditions,
the printer columns and the Argo CD health check cannot disagree (tests/unit/test_health_table.py
drives every phase through all of them).
"""

from __future__ import annotations

from modelgate.core.state import Condition
from modelgate.core.types import Phase

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"

ORDER = {READY: 0, RECONCILING: 1, STALLED: 2, "Progressing": 3, "Promoted": 4,
         "RolledBack": 5, "SpecValid": 6, "NamesAvailable": 7}
"""The order conditions are written in (kstatus reads the first of Reconciling and Stalled
that is True; modelgate never sets both)."""

RECONCILING_PHASES = frozenset({Phase.PENDING, Phase.PROGRESSING})
STALLED_PHASES = frozenset({Phase.PAUSED, Phase.ROLLED_BACK, Phase.DEGRADED})


def set_condition(conditions: tuple[Condition, ...], kind: str, status: bool, reason: str,
                  message: str, now: float, generation: int | None) -> tuple[Condition, ...]:
    """`conditions` with `kind` set; its lastTransitionTime moves only when its status does."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.type == kind), None)
    since = previous.last_transition if previous is not None and previous.status == value \
        else now
    updated = Condition(type=kind, status=value, reason=reason, message=message,
                        last_transition=since, observed_generation=generation)
    others = tuple(c for c in conditions if c.type != kind)
    return tuple(sorted((*others, updated), key=lambda c: ORDER.get(c.type, 99)))


def summarize(conditions: tuple[Condition, ...], phase: Phase, reason: str, message: str,
              available: tuple[int, int], now: float,
              generation: int | None) -> tuple[Condition, ...]:
    """Ready, Reconciling and Stalled for a tick that ended in `phase` for `reason` (CamelCase),
    with `available` = (ready, wanted) stable pods."""
    ready, wanted = available
    if phase is Phase.HEALTHY and ready >= wanted:
        is_ready, ready_reason = True, "Available"
        ready_message = f"{message}; {ready} of {wanted} stable pods ready"
    elif phase is Phase.HEALTHY:
        is_ready, ready_reason = False, "StableUnavailable"
        ready_message = f"{ready} of {wanted} stable pods ready"
    else:
        is_ready, ready_reason, ready_message = False, reason, message
    reconciling = phase in RECONCILING_PHASES
    stalled = phase in STALLED_PHASES
    settled = "Available" if is_ready else ready_reason
    conditions = set_condition(conditions, READY, is_ready, ready_reason, ready_message, now,
                               generation)
    conditions = set_condition(conditions, RECONCILING, reconciling,
                               reason if reconciling else settled, message, now, generation)
    return set_condition(conditions, STALLED, stalled, reason if stalled else settled,
                         message, now, generation)


def status_of(conditions: tuple[Condition, ...], kind: str) -> Condition | None:
    return next((c for c in conditions if c.type == kind), None)
