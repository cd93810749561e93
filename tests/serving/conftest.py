"""Models and running servers shared by the serving tests (started once per session)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris, load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from support.serving import Served, save_skops, serving


@dataclass(frozen=True)
class Model:
    estimator: Any
    path: Path
    sha256: str
    X: np.ndarray

    @property
    def uri(self) -> str:
        return self.path.as_uri()


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Model]:
    directory = tmp_path_factory.mktemp("models")
    iris_x, iris_y = load_iris(return_X_y=True)
    diabetes_x, diabetes_y = load_diabetes(return_X_y=True)
    wine = load_wine()
    wine_y = np.asarray(wine.target_names)[wine.target]  # string class labels
    estimators = {
        "classifier": (LogisticRegression(max_iter=1000).fit(iris_x, iris_y), iris_x),
        "regressor": (Ridge().fit(diabetes_x, diabetes_y), diabetes_x),
        "pipeline": (make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
                     .fit(wine.data, wine_y), wine.data),
        "forest": (RandomForestClassifier(n_estimators=10, random_state=0)
                   .fit(iris_x, iris_y), iris_x),
    }
    built = {}
    for name, (estimator, features) in estimators.items():
        path = directory / f"{name}.skops"
        built[name] = Model(estimator, path, save_skops(estimator, path), features)
    return built


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


def _serve(model: Model, logs: Path, name: str, *args: str) -> Iterator[Served]:
    with serving(model.uri, logs, name=name, args=["--sha256", model.sha256, *args]) as served:
        yield served


@pytest.fixture(scope="session")
def classifier(models: dict[str, Model], logs: Path) -> Iterator[Served]:
    yield from _serve(models["classifier"], logs, "iris")


@pytest.fixture(scope="session")
def regressor(models: dict[str, Model], logs: Path) -> Iterator[Served]:
    yield from _serve(models["regressor"], logs, "diabetes", "--batching", "off")


@pytest.fixture(scope="session")
def pipeline(models: dict[str, Model], logs: Path) -> Iterator[Served]:
    yield from _serve(models["pipeline"], logs, "wine", "--batching", "on", "--max-wait", "1ms")


@pytest.fixture(scope="session")
def forest(models: dict[str, Model], logs: Path) -> Iterator[Served]:
    yield from _serve(models["forest"], logs, "forest", "--trusted-types",
                      "sklearn.tree._tree.Tree", "--workers", "2")
