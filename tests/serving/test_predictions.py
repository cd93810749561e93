"""Predictions over V1 and V2 equal scikit-learn's own, for every kind of model served."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest
from support.serving import Served

# one xdist worker runs every serving test, so the session's servers start once
pytestmark = pytest.mark.xdist_group("serving")

KINDS = ["classifier", "regressor", "pipeline", "forest"]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> tuple[str, Served]:
    return request.param, request.getfixturevalue(request.param)


def _v2_body(rows: np.ndarray, *outputs: str, datatype: str = "FP64") -> dict:
    body = {"inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": datatype,
                        "data": rows.reshape(-1).tolist()}]}
    if outputs:
        body["outputs"] = [{"name": name} for name in outputs]
    return body


def _output(response_json: dict, name: str) -> np.ndarray:
    (output,) = [o for o in response_json["outputs"] if o["name"] == name]
    return np.asarray(output["data"]).reshape(output["shape"])


def test_v2_predict_equals_sklearn(kind, models) -> None:
    name, served = kind
    model = models[name]
    rows = model.X[:40]
    response = served.infer(_v2_body(rows))
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Version"] == "1"
    expected = model.estimator.predict(rows)
    got = _output(response.json(), "predict")
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    else:
        assert got.tolist() == expected.tolist()


def test_v1_predict_equals_sklearn(kind, models) -> None:
    name, served = kind
    model = models[name]
    rows = model.X[::7]
    response = served.predict_v1(rows.tolist())
    assert response.status_code == 200, response.text
    expected = model.estimator.predict(rows)
    got = np.asarray(response.json()["predictions"])
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    else:
        assert got.tolist() == expected.tolist()


@pytest.mark.parametrize("name", ["classifier", "pipeline", "forest"])
def test_v2_predict_proba_equals_sklearn(name, models, request) -> None:
    served = request.getfixturevalue(name)
    model = models[name]
    rows = model.X[5:25]
    response = served.infer(_v2_body(rows, "predict", "predict_proba"))
    assert response.status_code == 200, response.text
    proba = _output(response.json(), "predict_proba")
    np.testing.assert_allclose(proba, model.estimator.predict_proba(rows), rtol=1e-12)
    assert _output(response.json(), "predict").tolist() == model.estimator.predict(rows).tolist()


def test_string_classes_are_sent_as_bytes(pipeline, models) -> None:
    response = pipeline.infer(_v2_body(models["pipeline"].X[:3]))
    (output,) = response.json()["outputs"]
    assert output["datatype"] == "BYTES"
    assert set(output["data"]) <= {"class_0", "class_1", "class_2"}


def test_fp32_input_is_cast_like_numpy_would(classifier, models) -> None:
    rows = models["classifier"].X[:10]
    response = classifier.infer(_v2_body(rows, datatype="FP32"))
    expected = models["classifier"].estimator.predict(rows.astype(np.float32))
    assert _output(response.json(), "predict").tolist() == expected.tolist()


def test_inputs_as_columns_are_stacked_in_order(classifier, models) -> None:
    rows = models["classifier"].X[:6]
    body = {"inputs": [{"name": f"f{i}", "shape": [6], "datatype": "FP64",
                        "data": rows[:, i].tolist()} for i in range(4)]}
    response = classifier.infer(body)
    assert response.status_code == 200, response.text
    expected = models["classifier"].estimator.predict(rows)
    assert _output(response.json(), "predict").tolist() == expected.tolist()


def test_nested_data_equals_flat_data(classifier, models) -> None:
    rows = models["classifier"].X[:4]
    body = {"inputs": [{"name": "x", "shape": [4, 4], "datatype": "FP64",
                        "data": rows.tolist()}]}
    flat = classifier.infer(_v2_body(rows)).json()["outputs"]
    assert classifier.infer(body).json()["outputs"] == flat


def test_id_is_echoed_and_ignored_parameters_are_listed(classifier, models) -> None:
    body = _v2_body(models["classifier"].X[:1])
    body["id"] = "req-42"
    body["parameters"] = {"content_type": "np"}
    answer = classifier.infer(body).json()
    assert answer["id"] == "req-42"
    assert answer["parameters"]["ignored"] == ["parameters.content_type"]
    assert answer["model_name"] == "iris"
    assert answer["model_version"] == "1"


def test_versioned_path_serves_the_served_version(classifier, models) -> None:
    assert classifier.infer(_v2_body(models["classifier"].X[:1]), version="1").status_code == 200


def test_concurrent_requests_each_get_their_own_rows(pipeline, models) -> None:
    """Batched together, split apart: every answer matches its own request."""
    model = models["pipeline"]

    def ask(index: int) -> tuple[int, list]:
        rows = model.X[index:index + 1 + index % 3]
        answer = pipeline.infer(_v2_body(rows)).json()
        return index, _output(answer, "predict").tolist()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(ask, range(120)))
    for index, got in results:
        assert got == model.estimator.predict(model.X[index:index + 1 + index % 3]).tolist()
    assert "modelgate_batch_rows" in pipeline.metrics()


def test_metadata_describes_the_model(classifier, models) -> None:
    meta = classifier.get("/v2/models/iris").json()
    assert meta["name"] == "iris"
    assert meta["versions"] == ["1"]
    assert meta["inputs"][0]["shape"] == [-1, 4]
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    assert meta["parameters"]["sha256"] == models["classifier"].sha256
    assert classifier.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
    assert classifier.get("/v2").json()["name"] == "modelgate-serve"
