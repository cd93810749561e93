"""Fuzzing V1 and V2 bodies against a real server: no client input yields a 5xx or a traceback.

Bodies are drawn by hypothesis from the shapes a client can get wrong: tensors with any
shape (empty, zero-sized, negative, huge, ragged), any datatype (and made-up ones), data of
any JSON kind and nesting, several inputs taken as columns, junk `outputs`, `parameters` and
`id`; V1 `instances` of any JSON. Derandomized, so every run sends the same bodies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.serving import Served, serving

# the hardening tests share one xdist worker (and its session servers), beside the others
pytestmark = pytest.mark.xdist_group("serving-hardening")

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES", "FLOAT", "", "fp64"]

scalars = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e6, max_value=1e6),
    st.booleans(),
    st.text(max_size=4),
    st.none(),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=20)
dimensions = st.one_of(st.integers(min_value=0, max_value=6),
                       st.sampled_from([-1, 10_001, 2**40, 2**64]), st.floats(0, 4),
                       st.text(max_size=2))
rows_of_four = st.lists(st.lists(st.one_of(st.floats(-10, 10), st.integers(-5, 300)),
                                 min_size=0, max_size=5), max_size=6)


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, Any]:
    shape = draw(st.one_of(st.lists(dimensions, max_size=4), json_values))
    data = draw(st.one_of(
        st.lists(scalars, max_size=24), rows_of_four, json_values,
        # data that matches a plausible shape, so decoding goes deep
        st.lists(st.floats(-10, 10), min_size=4, max_size=4).map(lambda row: [row])))
    tensor = {"name": draw(st.text(max_size=3)), "shape": shape,
              "datatype": draw(st.sampled_from(DATATYPES)), "data": data}
    for key in draw(st.sets(st.sampled_from(["name", "shape", "datatype", "data"]),
                            max_size=1)):
        del tensor[key]
    if draw(st.booleans()):
        tensor["parameters"] = draw(json_values)
    return tensor


@st.composite
def consistent_tensors(draw: st.DrawFn) -> dict[str, Any]:
    """Shape and data agree, so the body passes the first checks and reaches numpy and the
    model: degenerate sizes (zero rows, zero columns), odd ranks, every datatype."""
    rank = draw(st.sampled_from([1, 2, 2, 2, 0, 3]))
    shape = draw(st.lists(st.sampled_from([0, 1, 2, 4]), min_size=rank, max_size=rank))
    size = 1
    for dimension in shape:
        size *= dimension
    value = draw(st.sampled_from([st.floats(-1e40, 1e40), st.integers(-(2**63), 2**64 - 1),
                                  st.booleans(), st.text(max_size=2)]))
    data = draw(st.lists(value, min_size=size, max_size=size))
    return {"name": "x", "shape": shape, "datatype": draw(st.sampled_from(DATATYPES[:13])),
            "data": data}


@st.composite
def v2_bodies(draw: st.DrawFn) -> Any:
    inputs = st.one_of(st.lists(consistent_tensors(), min_size=1, max_size=4),
                       st.lists(tensors(), max_size=4), json_values)
    body: dict[str, Any] = {"inputs": draw(inputs)}
    if draw(st.booleans()):
        body["outputs"] = draw(st.one_of(
            st.lists(st.fixed_dictionaries({"name": st.sampled_from(
                ["predict", "predict_proba", "x", ""])}), max_size=3), json_values))
    if draw(st.booleans()):
        body["parameters"] = draw(json_values)
    if draw(st.booleans()):
        body["id"] = draw(json_values)
    return draw(st.one_of(st.just(body), json_values))


v1_bodies = st.one_of(
    st.fixed_dictionaries({"instances": st.one_of(rows_of_four, json_values)}),
    st.fixed_dictionaries({"instances": rows_of_four, "parameters": json_values}),
    json_values)


@pytest.fixture(scope="module")
def target(models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    logs: Path = tmp_path_factory.mktemp("fuzz")
    model = models["classifier"]
    with serving(model.uri, logs, name="iris", args=["--sha256", model.sha256]) as served:
        yield served
        assert "Traceback" not in served.log(), served.log()
        assert 'code="5' not in served.metrics()


def _check(served: Served, path: str, body: Any) -> None:
    response = served.session.post(served.url + path, data=json.dumps(body),
                                   headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code < 500, (body, response.status_code, response.text)
    if response.status_code >= 400:
        assert response.json()["error"], body


FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(body=v2_bodies())
def test_no_v2_body_yields_a_server_error(target: Served, body: Any) -> None:
    _check(target, "/v2/models/iris/infer", body)


@FUZZ
@given(body=v1_bodies)
def test_no_v1_body_yields_a_server_error(target: Served, body: Any) -> None:
    _check(target, "/v1/models/iris:predict", body)


@FUZZ
@given(body=json_values)
def test_no_feedback_body_yields_a_server_error(target: Served, body: Any) -> None:
    _check(target, "/v2/models/iris/feedback", body)


def test_the_fuzzed_server_logged_no_traceback(target: Served) -> None:
    """Checked again after the fuzzing above (the fixture checks at teardown too)."""
    assert "Traceback" not in target.log(), target.log()
    assert 'code="5' not in target.metrics()
