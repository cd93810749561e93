"""Model files for the sandbox: a good model, a retrained good one, and four bad ones.

Each bad model is bad in one way the analysis must catch: `FaultyClassifier` fails a share of
requests (5xx), `SlowClassifier` answers late, and a constant classifier shifts the predicted
classes; a crashing one kills the server that loads it (its pods never become ready). The
faulty, slow and crashing ones are our own types, so the ModelDeployment must list them in
trustedTypes (skops refuses unknown types) and the serving processes must be able to import
this module (the kubelet stand-in puts tests/ on their PYTHONPATH).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import skops.io
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

FAULTY_TYPE = "sandbox.models.FaultyClassifier"
SLOW_TYPE = "sandbox.models.SlowClassifier"
CRASH_TYPE = "sandbox.models.CrashingClassifier"


class FaultyClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Fails (raises) on a fixed share of rows, chosen by a hash of the row."""

    def __init__(self, inner: Any = None, failure_share: float = 0.3) -> None:
        self.inner = inner
        self.failure_share = failure_share

    def fit(self, x: Any, y: Any) -> FaultyClassifier:
        self.inner.fit(x, y)
        self.classes_ = self.inner.classes_
        return self

    def _check(self, x: Any) -> None:
        for row in np.asarray(x, dtype=float):
            digest = hashlib.sha256(row.tobytes()).digest()
            if digest[0] / 256 < self.failure_share:
                raise RuntimeError("this model version is broken for some inputs")

    def predict(self, x: Any) -> Any:
        self._check(x)
        return self.inner.predict(x)

    def predict_proba(self, x: Any) -> Any:
        self._check(x)
        return self.inner.predict_proba(x)


class SlowClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Answers correctly, `delay` seconds late per call."""

    def __init__(self, inner: Any = None, delay: float = 0.03) -> None:
        self.inner = inner
        self.delay = delay

    def fit(self, x: Any, y: Any) -> SlowClassifier:
        self.inner.fit(x, y)
        self.classes_ = self.inner.classes_
        return self

    def predict(self, x: Any) -> Any:
        time.sleep(self.delay)
        return self.inner.predict(x)

    def predict_proba(self, x: Any) -> Any:
        time.sleep(self.delay)
        return self.inner.predict_proba(x)


@dataclass(frozen=True)
class ModelFile:
    version: str
    path: Path
    sha256: str
    trusted_types: tuple[str, ...] = ()

    @property
    def uri(self) -> str:
        return self.path.as_uri()

    def model_spec(self) -> dict[str, Any]:
        """The spec.model section that declares this file."""
        spec: dict[str, Any] = {"version": self.version, "uri": self.uri, "sha256": self.sha256}
        if self.trusted_types:
            spec["trustedTypes"] = list(self.trusted_types)
        return spec


class CrashingClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Kills the server that loads it, as a model whose native code crashes would: loading
    it (skops restores it through __setstate__) writes one line to stderr and exits 3."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner

    def fit(self, x: Any, y: Any) -> CrashingClassifier:
        self.inner.fit(x, y)
        self.classes_ = self.inner.classes_
        return self

    def __setstate__(self, state: dict[str, Any]) -> None:
        sys.stderr.write("fatal: CrashingClassifier cannot run in this process "
                         "(the sandbox's crashing model)\n")
        sys.stderr.flush()
        os._exit(3)


def iris_rows() -> Any:
    return load_iris().data


def build(directory: Path) -> dict[str, ModelFile]:
    """Write every sandbox model under `directory`; name -> file."""
    x, y = load_iris(return_X_y=True)
    models: dict[str, tuple[Any, tuple[str, ...]]] = {
        "v1": (LogisticRegression(max_iter=500, C=1.0).fit(x, y), ()),
        "v2": (LogisticRegression(max_iter=500, C=0.8).fit(x, y), ()),
        "v4": (LogisticRegression(max_iter=500, C=0.6).fit(x, y), ()),
        "v3": (FaultyClassifier(LogisticRegression(max_iter=500)).fit(x, y),
                   (FAULTY_TYPE,)),
        # 100 ms late per call: tested at low traffic (tests/operator/test_rollouts.py), since
        # the sleep holds the server's event loop
        "v3-slow": (SlowClassifier(LogisticRegression(max_iter=500), delay=0.1).fit(x, y),
                    (SLOW_TYPE,)),
        "v3-shifted": (DummyClassifier(strategy="constant", constant=0).fit(x, y), ()),
        # exits as the server loads it: its pods crash-loop and never become ready
        "v3-crash": (CrashingClassifier(LogisticRegression(max_iter=500)).fit(x, y),
                     (CRASH_TYPE,)),
    }
    files = {}
    for name, (model, trusted) in models.items():
        path = directory / name / "model.skops"
        path.parent.mkdir(parents=True, exist_ok=True)
        skops.io.dump(model, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        files[name] = ModelFile(version=name, path=path, sha256=digest, trusted_types=trusted)
    return files
