"""The model runtime: the only module that knows scikit-learn.

It wraps a loaded estimator (classifier, regressor or Pipeline), checks rows before they reach
it, predicts, and measures at load time whether predicting requests together is worth it.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"


class InputError(ValueError):
    """Rows the model cannot take; the message says what is wrong and what would be right."""


@dataclass(frozen=True)
class Prediction:
    """Outputs for a batch of rows, row-aligned with the input."""

    predict: npt.NDArray[Any]
    proba: npt.NDArray[np.float64] | None = None


@dataclass(frozen=True)
class Schema:
    """What a request's rows must look like for one model: small and picklable, so a body can
    be decoded and checked in another process (see `parsing`) without the estimator."""

    n_features: int | None
    allow_nan: bool
    has_proba: bool
    kind: str

    @property
    def outputs(self) -> tuple[str, ...]:
        """Output names a request may ask for."""
        return (PREDICT, PREDICT_PROBA) if self.has_proba else (PREDICT,)

    def check(self, rows: npt.NDArray[Any], where: str) -> None:
        """Raise InputError when `rows` cannot be predicted by this model."""
        if rows.ndim != 2:
            raise InputError(f"{where}: expected rows of features (2 dimensions), "
                             f"got {rows.ndim}")
        if rows.shape[0] == 0:
            raise InputError(f"{where}: the batch is empty; send at least one row")
        if self.n_features is not None and rows.shape[1] != self.n_features:
            raise InputError(f"{where}: {rows.shape[1]} features per row, the model takes "
                             f"{self.n_features}")
        if not self.allow_nan and rows.dtype.kind == "f" and not np.isfinite(rows).all():
            row = int(np.argwhere(~np.isfinite(rows))[0][0])
            raise InputError(f"{where}: row {row} holds NaN or infinity (a number too large "
                             f"for the datatype?), which this model does not accept")


class Runtime:
    """One loaded scikit-learn estimator and what the server needs to know about it."""

    def __init__(self, estimator: Any, sha256: str) -> None:
        if not callable(getattr(estimator, "predict", None)):
            raise InputError(f"the file holds a {type(estimator).__name__}, which has no "
                             f"predict(); serve a fitted estimator or Pipeline")
        self.estimator = estimator
        self.sha256 = sha256
        classes = getattr(estimator, "classes_", None)
        self.classes: npt.NDArray[Any] | None = (np.asarray(classes) if classes is not None
                                                 else None)
        self.has_proba = callable(getattr(estimator, PREDICT_PROBA, None))
        self.schema = Schema(
            n_features=_int_or_none(getattr(estimator, "n_features_in_", None)),
            allow_nan=_allows_nan(estimator), has_proba=self.has_proba,
            kind=type(estimator).__name__)
        self.n_features = self.schema.n_features

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None

    @property
    def outputs(self) -> tuple[str, ...]:
        """Output names a request may ask for."""
        return self.schema.outputs

    @property
    def kind(self) -> str:
        return self.schema.kind

    def predict(self, rows: npt.NDArray[Any], proba: bool = False) -> Prediction:
        """Predict checked rows; model-specific rejections become InputError."""
        try:
            predicted = np.asarray(self.estimator.predict(rows))
            probabilities = (np.asarray(self.estimator.predict_proba(rows), dtype=np.float64)
                             if proba and self.has_proba else None)
        except (ValueError, TypeError) as error:
            raise InputError(f"the model rejected the rows: {error}") from None
        return Prediction(predicted, probabilities)

    def measure(self, max_batch_size: int) -> BatchCost | None:
        """Seconds for one row and for a full batch, on zeros; None when it cannot be probed."""
        if self.n_features is None:
            return None
        one = np.zeros((1, self.n_features))
        full = np.zeros((max_batch_size, self.n_features))
        try:
            single = _median_seconds(lambda: self.estimator.predict(one), repeat=5)
            batch = _median_seconds(lambda: self.estimator.predict(full), repeat=3)
        except Exception:
            return None
        return BatchCost(rows=max_batch_size, single=single, batch=batch)


@dataclass(frozen=True)
class BatchCost:
    """What predicting costs this model, measured at load time."""

    rows: int
    single: float
    """Seconds for one row."""
    batch: float
    """Seconds for `rows` rows in one call."""

    @property
    def batching_helps(self) -> bool:
        """A full batch in one call costs well under that many single calls."""
        return self.batch <= 0.5 * self.rows * self.single

    def __str__(self) -> str:
        return (f"one row {self.single * 1e3:.2f} ms, {self.rows} rows "
                f"{self.batch * 1e3:.2f} ms")


def _median_seconds(call: Any, repeat: int) -> float:
    call()  # warm caches before timing
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | np.integer) else None


def _allows_nan(estimator: Any) -> bool:
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(estimator).input_tags.allow_nan)
    except Exception:
        return False  # unknown: refuse non-finite rows rather than risk a 500
