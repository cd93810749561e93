"""The operator's own Prometheus metrics (served on settings.metrics_port; the handlers start
the server, reconcile counts)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROLLOUTS_STARTED = Counter("modelgate_operator_rollouts_started",
                           "Canary rollouts started.", ["namespace", "name"])
ROLLOUTS_PROMOTED = Counter("modelgate_operator_rollouts_promoted",
                            "Canary rollouts that ended in promotion.", ["namespace", "name"])
ROLLOUTS_ROLLED_BACK = Counter("modelgate_operator_rollouts_rolled_back",
                               "Canary rollouts rolled back (by the analysis or by a person).",
                               ["namespace", "name"])
DRIFT_CORRECTED = Counter("modelgate_operator_drift_corrected",
                          "Children written back because someone else changed fields the "
                          "operator owns (one per DriftCorrected Event).", ["namespace", "name"])
ANALYSIS_SECONDS = Histogram("modelgate_operator_analysis_seconds",
                             "Time to scrape both arms and judge them, in seconds.",
                             buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
TICK_SECONDS = Histogram("modelgate_operator_tick_seconds",
                         "Time of one reconciliation tick, in seconds.",
                         buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
API_ERRORS = Counter("modelgate_operator_api_errors",
                     "Kubernetes API calls that failed, by verb.", ["verb"])

PHASE = Gauge("modelgate_operator_rollout_phase",
              "1 for the phase each ModelDeployment is in, 0 for the others.",
              ["namespace", "name", "phase"])
LAST_ANALYSIS = Gauge("modelgate_operator_last_analysis_timestamp_seconds",
                      "When each ModelDeployment's canary was last judged (Unix time).",
                      ["namespace", "name"])

EVENT_COUNTERS = {
    "RolloutStarted": ROLLOUTS_STARTED,
    "Promoted": ROLLOUTS_PROMOTED,
    "RolledBack": ROLLOUTS_ROLLED_BACK,
    "DriftCorrected": DRIFT_CORRECTED,
}
"""Event reason -> the counter it bumps."""
