"""The serving metrics of docs/architecture.md, contract 4, labelled by model and version.

Only inference requests (V2 infer, V1 predict) count in requests and latency: probes, scrapes
and feedback would dilute a canary's error rate. Feedback is labelled with the version that
made the prediction, which the client read from `X-Model-Version`, so any pod counts feedback
for either arm and the analysis attributes it correctly.

With several worker processes the metrics go through prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by the supervisor) and every worker's /metrics shows the sum.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

# Exponential, each bound 10% above the one before, from 0.1 ms to about 11 s (122 bounds):
# the judge compares counts at bucket bounds only, and proves a quantile within a tolerance
# by finding a bound at most (1 + tolerance) times another, so 10% steps resolve the default
# +10% p99 tolerance exactly anywhere in the range (and any wider tolerance to within 10%).
# Rounded to 6 significant digits; the judge matches bounds with that slack.
LATENCY_GROWTH = 1.1
LATENCY_BUCKETS = tuple(float(f"{0.0001 * LATENCY_GROWTH ** k:.6g}") for k in range(122))
# Probabilities of the positive class of a binary classifier.
SCORE_BUCKETS = tuple(round(0.05 * step, 2) for step in range(1, 21))
# Regression outputs of unknown scale: 1-2.5-5 steps over seven decades, both signs.
_MAGNITUDES = tuple(m * 10.0 ** e for e in range(-2, 5) for m in (1.0, 2.5, 5.0))
VALUE_BUCKETS = (*sorted(-m for m in _MAGNITUDES), 0.0, *_MAGNITUDES)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """The server's metric objects, in their own registry (several apps may share a process)."""

    def __init__(self, model: str, version: str) -> None:
        self.model = model
        self.version = version
        self.registry = CollectorRegistry()
        labels = ["model", "version"]
        self.requests = Counter("modelgate_requests", "Inference requests by HTTP status code.",
                                [*labels, "code"], registry=self.registry)
        self.duration = Histogram("modelgate_request_duration_seconds",
                                  "Time to answer an inference request, seconds.", labels,
                                  buckets=LATENCY_BUCKETS,
                                  registry=self.registry).labels(model, version)
        self.predictions = Counter("modelgate_predictions", "Predicted classes (classifiers).",
                                   [*labels, "class"], registry=self.registry)
        self.values: Any = None  # buckets depend on the model: created when it has loaded
        self.feedback = Counter("modelgate_feedback",
                                "Feedback on predictions, labelled with the version that made "
                                "them.", [*labels, "outcome"], registry=self.registry)
        self.info = Gauge("modelgate_model_info", "The model this server serves; always 1.",
                          [*labels, "sha256"], registry=self.registry,
                          multiprocess_mode="max")
        self.batch_rows = Histogram("modelgate_batch_rows",
                                    "Rows per call of the model's predict.", labels,
                                    buckets=BATCH_BUCKETS,
                                    registry=self.registry).labels(model, version)
        self._codes: dict[int, Any] = {}
        self._classes: dict[str, Any] = {}

    def loaded(self, sha256: str, *, is_classifier: bool) -> None:
        self.values = Histogram("modelgate_prediction_value",
                                "Predicted values (regressors) or positive-class scores "
                                "(binary classifiers asked for predict_proba).",
                                ["model", "version"],
                                buckets=SCORE_BUCKETS if is_classifier else VALUE_BUCKETS,
                                registry=self.registry).labels(self.model, self.version)
        self.info.labels(self.model, self.version, sha256).set(1)

    def request(self, status: int, seconds: float | None) -> None:
        """Count an answer; its latency too when given (answered predictions only)."""
        counter = self._codes.get(status)
        if counter is None:
            counter = self._codes[status] = self.requests.labels(self.model, self.version,
                                                                 str(status))
        counter.inc()
        if seconds is not None:
            self.duration.observe(seconds)

    def predicted(self, predicted: npt.NDArray[Any], proba: npt.NDArray[np.float64] | None,
                  *, is_classifier: bool) -> None:
        """Count one request's predictions with a weight of one request, whatever its rows.

        The distribution check compares how canary and stable answer their requests. Counted
        per row, one client's 5,000-row request outweighed thousands of others and could move
        the check on its own. So each request weighs 1: its classes count rows/len(rows) each
        (the class shares of the request), and one of its rows, drawn at random, goes into the
        value histogram (a histogram takes whole observations). A one-row request counts as
        before. Shares of one request vary less than one categorical draw, so treating n
        requests as n draws keeps the check's error rate at or under its alpha.
        """
        rows = predicted.shape[0] if predicted.ndim else 1
        if rows == 0:
            return
        if is_classifier:
            names = predicted.astype(str)
            if names.size == 1:  # most requests: one row, one output; nothing to sort
                self._class(names.item()).inc(1.0)
            else:
                labels, counts = np.unique(names, return_counts=True)
                for label, count in zip(labels.tolist(), counts.tolist(), strict=True):
                    self._class(label).inc(count / rows)
            if proba is not None and proba.ndim == 2 and proba.shape[1] == 2:
                self.values.observe(float(proba[random.randrange(rows), 1]))
        elif predicted.dtype.kind in "iuf":
            values = predicted.reshape(rows, -1)
            self.values.observe(float(values[random.randrange(rows), 0]))

    def _class(self, label: str) -> Any:
        """The counter child of one predicted class (label lookups cost more than the count)."""
        counter = self._classes.get(label)
        if counter is None:
            counter = self._classes[label] = self.predictions.labels(self.model, self.version,
                                                                     label)
        return counter

    def feedback_counted(self, version: str, correct: int, incorrect: int) -> None:
        if correct:
            self.feedback.labels(self.model, version, "correct").inc(correct)
        if incorrect:
            self.feedback.labels(self.model, version, "incorrect").inc(incorrect)

    def exposition(self) -> bytes:
        """Prometheus text of every worker (multiprocess) or of this one."""
        if os.environ.get(MULTIPROCESS_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
