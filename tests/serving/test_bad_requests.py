"""Bad requests: each gets a 4xx with a message a client developer can act on, never a 5xx,
and the server keeps serving."""

from __future__ import annotations

import json

import pytest
from support.serving import Served

# one xdist worker runs every serving test, so the session's servers start once
pytestmark = pytest.mark.xdist_group("serving")

V2 = "/v2/models/iris/infer"
V1 = "/v1/models/iris:predict"
JSON = {"Content-Type": "application/json"}


def _tensor(shape: list, data: object, datatype: str = "FP64") -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                                   "data": data}]}).encode()


ROW = [5.1, 3.5, 1.4, 0.2]

# (case, method, path, headers, body, status, words the message must contain)
BAD_REQUESTS = [
    ("malformed JSON", "POST", V2, JSON, b'{"inputs": [', 400, "not valid JSON"),
    ("non-UTF-8 body", "POST", V2, JSON, b'{"inputs": "\xff\xfe"}', 400, "not valid JSON"),
    ("nesting deeper than the parser allows", "POST", V2, JSON, b"[" * 5000, 400,
     "not valid JSON"),
    ("empty body", "POST", V2, JSON, b"", 400, "body is empty"),
    ("body is a list, not an object", "POST", V2, JSON, b"[1, 2]", 400, "JSON object"),
    ("no inputs", "POST", V2, JSON, b"{}", 400, "inputs: must be a non-empty list"),
    ("empty inputs", "POST", V2, JSON, b'{"inputs": []}', 400, "non-empty list"),
    ("tensor is not an object", "POST", V2, JSON, b'{"inputs": [3]}', 400,
     "inputs[0]: must be an object"),
    ("shape and data disagree", "POST", V2, JSON, _tensor([1, 4], ROW[:3]), 400,
     "shape [1, 4] needs 4 values, data has 3"),
    ("wrong feature count", "POST", V2, JSON, _tensor([1, 3], ROW[:3]), 400,
     "3 features per row, the model takes 4"),
    ("unknown datatype", "POST", V2, JSON, _tensor([1, 4], ROW, "FLOAT"), 400,
     "'FLOAT' is not a V2 datatype"),
    ("strings sent as FP64", "POST", V2, JSON, _tensor([1, 4], ["a", "b", "c", "d"]), 400,
     "holds strings, not FP64"),
    ("decimals sent as INT32", "POST", V2, JSON, _tensor([1, 4], ROW, "INT32"), 400,
     "holds decimals, not INT32"),
    ("INT8 out of range", "POST", V2, JSON, _tensor([1, 4], [1, 2, 3, 300], "INT8"), 400,
     "outside INT8's range"),
    ("numbers sent as BOOL", "POST", V2, JSON, _tensor([1, 4], [1, 0, 1, 0], "BOOL"), 400,
     "not BOOL"),
    ("FP32 overflow becomes infinity", "POST", V2, JSON,
     _tensor([1, 4], [1e39, 1.0, 1.0, 1.0], "FP32"), 400, "NaN or infinity"),
    ("a number beyond double range", "POST", V2, JSON,
     b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", '
     b'"data": [1e400, 1, 1, 1]}]}', 400, "not valid JSON"),
    ("NaN literal", "POST", V2, JSON, b'{"inputs": [{"name": "x", "shape": [1, 4], '
     b'"datatype": "FP64", "data": [NaN, 1, 1, 1]}]}', 400, "not valid JSON"),
    ("empty batch", "POST", V2, JSON, _tensor([0, 4], []), 400, "the batch is empty"),
    ("ragged nested data", "POST", V2, JSON, _tensor([2, 4], [ROW, ROW[:2]]), 400,
     "differ in length"),
    ("negative shape", "POST", V2, JSON, _tensor([-1, 4], ROW), 400,
     "non-negative whole numbers"),
    ("three dimensions", "POST", V2, JSON, _tensor([1, 2, 2], ROW), 400, "2 dimensions"),
    ("unknown output", "POST", V2, JSON,
     json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROW}],
                 "outputs": [{"name": "predict_log_proba"}]}).encode(), 400,
     "predict_log_proba not available"),
    ("id is a number", "POST", V2, JSON,
     json.dumps({"id": 7, "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
                                      "data": ROW}]}).encode(), 400, "id: must be a string"),
    ("parameters is a list", "POST", V2, JSON,
     json.dumps({"parameters": [1], "inputs": [{"name": "x", "shape": [1, 4],
                                                "datatype": "FP64", "data": ROW}]}).encode(),
     400, "parameters: must be an object"),
    ("V1 without instances", "POST", V1, JSON, b'{"rows": []}', 400, '{"instances"'),
    ("V1 ragged instances", "POST", V1, JSON, b'{"instances": [[1, 2, 3, 4], [1]]}', 400,
     "rows differ in length"),
    ("V1 empty instances", "POST", V1, JSON, b'{"instances": []}', 400, "batch is empty"),
    ("V1 strings for a numeric model", "POST", V1, JSON,
     b'{"instances": [["a", "b", "c", "d"]]}', 400, "the model rejected the rows"),
    ("V1 objects as rows", "POST", V1, JSON, b'{"instances": [{"a": 1}]}', 400,
     "numbers, booleans or strings"),
    ("body over the size limit", "POST", V2, JSON, b" " * (17 * 1024 * 1024), 413,
     "larger than 16777216 bytes"),
    ("wrong content type", "POST", V2, {"Content-Type": "text/plain"}, _tensor([1, 4], ROW),
     415, "send application/json"),
    ("unknown model", "POST", "/v2/models/cats/infer", JSON, _tensor([1, 4], ROW), 404,
     "model 'cats' is not served here"),
    ("unknown version", "POST", "/v2/models/iris/versions/9/infer", JSON,
     _tensor([1, 4], ROW), 404, "version '9' of iris is not served"),
    ("unknown path", "GET", "/v3/everything", {}, b"", 404, "no such endpoint"),
    ("GET on infer", "GET", V2, {}, b"", 405, "GET is not allowed"),
    ("DELETE on metrics", "DELETE", "/metrics", {}, b"", 405, "use GET"),
    ("feedback without an id", "POST", "/v2/models/iris/feedback", JSON,
     b'{"version": "1", "prediction": 1, "label": 1}', 400, "feedback[0].id: missing"),
    ("feedback with a made-up id", "POST", "/v2/models/iris/feedback", JSON,
     b'{"id": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "outcome": "incorrect"}', 400,
     "not a prediction id issued by this model's servers"),
    ("feedback items not a list", "POST", "/v2/models/iris/feedback", JSON,
     b'{"feedback": {"id": "x"}}', 400, "non-empty list"),
    ("V1 rows over the limit", "POST", V1, JSON,
     json.dumps({"instances": [ROW] * 10_001}).encode(), 413, "at most 10000 per request"),
    ("V2 rows over the limit", "POST", V2, JSON, _tensor([10_001, 4], ROW * 10_001), 413,
     "at most 10000 per request"),
    ("several inputs with no rows", "POST", V2, JSON,
     json.dumps({"inputs": [{"name": "a", "shape": [0, 0], "datatype": "FP64", "data": []},
                            {"name": "b", "shape": [0, 0], "datatype": "FP64",
                             "data": []}]}).encode(), 400, "the batch is empty"),
]


@pytest.mark.parametrize(("case", "method", "path", "headers", "body", "status", "words"),
                         BAD_REQUESTS, ids=[row[0] for row in BAD_REQUESTS])
def test_bad_request_gets_a_clear_4xx(classifier: Served, case: str, method: str, path: str,
                                      headers: dict, body: bytes, status: int,
                                      words: str) -> None:
    response = classifier.session.request(method, classifier.url + path, headers=headers,
                                          data=body, timeout=30)
    assert response.status_code == status, f"{case}: {response.status_code} {response.text}"
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["X-Model-Version"] == "1"
    assert words in response.json()["error"], case


def test_at_least_twenty_cases() -> None:
    assert len(BAD_REQUESTS) >= 20


def test_server_serves_after_every_bad_request(classifier: Served) -> None:
    for _, method, path, headers, body, _, _ in BAD_REQUESTS:
        classifier.session.request(method, classifier.url + path, headers=headers, data=body,
                                   timeout=30)
    good = classifier.infer({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
                                         "data": ROW}]})
    assert good.status_code == 200
    assert good.json()["outputs"][0]["data"] == [0]
    metrics = classifier.metrics()
    assert 'code="400"' in metrics
    assert 'code="5' not in metrics, "a bad request was counted as a server error"
