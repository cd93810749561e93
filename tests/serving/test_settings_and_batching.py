"""Settings from flags and environment; the batching predictor against a counting model."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from modelgate_serving.batching import BatchingPredictor
from modelgate_serving.runtime import Runtime
from modelgate_serving.settings import (
    BatchingMode,
    ModelFormat,
    SettingsError,
    env_name,
    field_docs,
    load,
    parse_seconds,
)

# one xdist worker runs every serving test, so the session's servers start once
pytestmark = pytest.mark.xdist_group("serving")


def test_flags_fall_back_to_environment_and_win_over_it() -> None:
    environ = {"MODELGATE_MODEL_URI": "file:///m.skops", "MODELGATE_PORT": "9000",
               "MODELGATE_WORKERS": "3", "MODELGATE_MAX_WAIT": "5ms",
               "MODELGATE_TRUSTED_TYPES": "a.B, c.D", "MODELGATE_BATCHING": "ON"}
    settings = load(["--port", "9100"], environ)
    assert settings.model_uri == "file:///m.skops"
    assert settings.port == 9100
    assert settings.workers == 3
    assert settings.max_wait == pytest.approx(0.005)
    assert settings.trusted_types == ("a.B", "c.D")
    assert settings.batching is BatchingMode.ON
    assert settings.model_format is ModelFormat.SKOPS


def test_contract_flags_exist_with_their_environment_names() -> None:
    for flag in ("--model-uri", "--model-name", "--model-version", "--sha256", "--port",
                 "--host", "--workers"):
        assert env_name(flag).startswith("MODELGATE_")
    settings = load(["--model-uri", "file:///m", "--model-name", "iris", "--model-version",
                     "7", "--sha256", "A" * 64, "--host", "127.0.0.1", "--workers", "2"], {})
    assert (settings.model_name, settings.model_version, settings.sha256, settings.host,
            settings.workers) == ("iris", "7", "a" * 64, "127.0.0.1", 2)


@pytest.mark.parametrize(("argv", "words"), [
    ([], "--model-uri (or MODELGATE_MODEL_URI) is required"),
    (["--model-uri", "file:///m", "--port", "70000"], "--port: 70000 is not a port"),
    (["--model-uri", "file:///m", "--workers", "0"], "--workers: 0 must be at least 1"),
    (["--model-uri", "file:///m", "--sha256", "abc"], "--sha256: 'abc' is not a SHA-256"),
    (["--model-uri", "file:///m", "--batching", "maybe"], "is not one of auto, on, off"),
    (["--model-uri", "file:///m", "--max-wait", "soon"], "is not a duration"),
    (["--model-uri", "file:///m", "--max-wait", "-1"], "is not a duration"),
    (["--model-uri", "file:///m", "--shutdown-timeout", "inf"], "is not a duration"),
    (["--model-uri", "file:///m", "--trusted", "perhaps"], "is not a boolean"),
    (["--model-uri", "file:///m", "--model-format", "joblib"], "--trusted true"),
])
def test_bad_settings_are_explained(argv: list[str], words: str) -> None:
    with pytest.raises(SettingsError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load(argv, {})


def test_every_setting_is_documented() -> None:
    docs = field_docs()
    assert "model_uri" in docs
    assert all(docs.values())
    assert parse_seconds("2ms") == pytest.approx(0.002)
    assert parse_seconds("1m") == 60
    assert parse_seconds("1m30s") == 90
    assert parse_seconds("0.25") == pytest.approx(0.25)


class CountingModel:
    """predict returns the first feature; remembers the size of every call."""

    n_features_in_ = 2

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, rows: Any) -> Any:
        rows = np.asarray(rows, dtype=float)
        self.calls.append(len(rows))
        if (rows[:, 1] < 0).any():
            raise ValueError("negative second feature")
        return rows[:, 0]


def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    model = CountingModel()

    async def run() -> list[Any]:
        predictor = BatchingPredictor(Runtime(model, "x"), max_batch_size=32, max_wait=0.05,
                                      adaptive=False)
        rows = [np.array([[float(i), 1.0]] * (1 + i % 2)) for i in range(10)]
        try:
            return await asyncio.gather(*(predictor.predict(r, False) for r in rows))
        finally:
            await predictor.close()

    results = asyncio.run(run())
    assert [r.predict.tolist() for r in results] == [[float(i)] * (1 + i % 2) for i in range(10)]
    assert model.calls == [15]


def test_a_rejected_request_does_not_fail_its_batch() -> None:
    model = CountingModel()

    async def run() -> list[Any]:
        predictor = BatchingPredictor(Runtime(model, "x"), max_batch_size=32, max_wait=0.05,
                                      adaptive=False)
        rows = [np.array([[1.0, 1.0]]), np.array([[2.0, -1.0]]), np.array([[3.0, 1.0]])]
        try:
            return await asyncio.gather(*(predictor.predict(r, False) for r in rows),
                                        return_exceptions=True)
        finally:
            await predictor.close()

    good, bad, also_good = asyncio.run(run())
    assert good.predict.tolist() == [1.0]
    assert also_good.predict.tolist() == [3.0]
    assert "negative second feature" in str(bad)


def test_batches_never_exceed_the_maximum_rows() -> None:
    model = CountingModel()

    async def run() -> None:
        predictor = BatchingPredictor(Runtime(model, "x"), max_batch_size=4, max_wait=0.01,
                                      adaptive=False)
        try:
            await asyncio.gather(*(predictor.predict(np.ones((1, 2)), False)
                                   for _ in range(10)))
        finally:
            await predictor.close()

    asyncio.run(run())
    assert model.calls == [4, 4, 2]


def test_adaptive_batches_do_not_wait_for_a_lone_client() -> None:
    model = CountingModel()

    async def run() -> float:
        predictor = BatchingPredictor(Runtime(model, "x"), max_batch_size=32, max_wait=1.0,
                                      adaptive=True)
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            for _ in range(5):
                await predictor.predict(np.ones((1, 2)), False)
            return loop.time() - started
        finally:
            await predictor.close()

    assert asyncio.run(run()) < 0.5  # waiting max_wait once would take a second
    assert model.calls == [1] * 5
