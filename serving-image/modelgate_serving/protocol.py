"""Open Inference Protocol V2 and V1 bodies <-> numpy rows and outputs. Pure: no I/O.

V2 (https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/): one input of
shape [rows, features], or several inputs of shape [rows] or [rows, k] taken as columns in
order. Tensor data may be flat (row-major) or nested. Outputs `predict` (the default) and, where
the model has it, `predict_proba`. Request-level and tensor-level `parameters` are accepted and
ignored; the response lists the ignored names so nobody believes they took effect.

V1: `{"instances": [[...], ...]}` -> `{"predictions": [...]}`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from modelgate_serving.runtime import PREDICT, PREDICT_PROBA, Prediction, Schema


class RequestError(Exception):
    """A request the server will not serve: an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __reduce__(self) -> tuple[type[RequestError], tuple[int, str]]:
        # raised in the child process that decodes large bodies, and re-raised here
        return RequestError, (self.status, self.message)


# V2 datatype -> (numpy dtype, JSON value kinds numpy may infer for it)
DATATYPES: dict[str, tuple[npt.DTypeLike, str]] = {
    "BOOL": (np.bool_, "b"),
    "UINT8": (np.uint8, "iu"),
    "UINT16": (np.uint16, "iu"),
    "UINT32": (np.uint32, "iu"),
    "UINT64": (np.uint64, "iu"),
    "INT8": (np.int8, "iu"),
    "INT16": (np.int16, "iu"),
    "INT32": (np.int32, "iu"),
    "INT64": (np.int64, "iu"),
    "FP16": (np.float16, "iuf"),
    "FP32": (np.float32, "iuf"),
    "FP64": (np.float64, "iuf"),
    "BYTES": (np.object_, "U"),
}


@dataclass(frozen=True)
class InferenceRequest:
    """What a request asks of the model."""

    rows: npt.NDArray[Any]
    outputs: tuple[str, ...] = (PREDICT,)
    id: str | None = None
    ignored_parameters: tuple[str, ...] = ()

    @property
    def wants_proba(self) -> bool:
        return PREDICT_PROBA in self.outputs


def decode_v2(body: Any, schema: Schema, max_rows: int) -> InferenceRequest:
    """A V2 inference request body (parsed JSON) -> rows and requested outputs."""
    try:
        return _decode_v2(body, schema, max_rows)
    except (ValueError, TypeError, OverflowError, MemoryError) as error:
        # numpy's own complaint about values the checks above let through: still the client's
        raise RequestError(400, f"inputs: the data cannot be read as the declared tensors "
                                f"({type(error).__name__}: {error})") from None


def _decode_v2(body: Any, schema: Schema, max_rows: int) -> InferenceRequest:
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object with an \"inputs\" list")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(400, "id: must be a string")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(400, "inputs: must be a non-empty list of tensors "
                                "({\"name\", \"shape\", \"datatype\", \"data\"})")
    ignored = _parameter_names(body.get("parameters"), "parameters")
    columns = []
    for index, tensor in enumerate(inputs):
        where = f"inputs[{index}]"
        columns.append(_decode_tensor(tensor, where, max_rows))
        if isinstance(tensor, dict):
            ignored += _parameter_names(tensor.get("parameters"), f"{where}.parameters")
    rows = _as_rows(columns, schema)
    _check_rows(schema, rows, "inputs")
    outputs = _requested_outputs(body.get("outputs"), schema)
    return InferenceRequest(rows=rows, outputs=outputs, id=request_id,
                            ignored_parameters=tuple(ignored))


def decode_v1(body: Any, schema: Schema, max_rows: int) -> InferenceRequest:
    """A V1 predict body -> rows."""
    try:
        return _decode_v1(body, schema, max_rows)
    except (ValueError, TypeError, OverflowError, MemoryError) as error:
        raise RequestError(400, f"instances: the rows cannot be read as numbers or strings "
                                f"({type(error).__name__}: {error})") from None


def _decode_v1(body: Any, schema: Schema, max_rows: int) -> InferenceRequest:
    if not isinstance(body, dict) or "instances" not in body:
        raise RequestError(400, "the body must be a JSON object {\"instances\": [[...], ...]}")
    instances = body["instances"]
    if not isinstance(instances, list):
        raise RequestError(400, "instances: must be a list of rows")
    if not instances:
        raise RequestError(400, "instances: the batch is empty; send at least one row")
    _check_row_count(len(instances), max_rows, "instances")
    try:
        rows = np.asarray(instances)
    except (ValueError, TypeError):
        raise RequestError(400, "instances: rows differ in length or nesting; every row "
                                "must be a list of the same number of features") from None
    if rows.dtype.kind == "U":
        rows = rows.astype(object)
    elif rows.dtype.kind not in "biuf":
        raise RequestError(400, "instances: values must be numbers, booleans or strings, "
                                "the same kind throughout")
    _check_rows(schema, rows, "instances")
    ignored = _parameter_names(body.get("parameters"), "parameters")
    return InferenceRequest(rows=rows, ignored_parameters=tuple(ignored))


def _check_row_count(rows: int, max_rows: int, where: str) -> None:
    """Checked before numpy sees the data, so a huge request costs little to refuse."""
    if rows > max_rows:
        raise RequestError(413, f"{where}: {rows} rows; this server takes at most {max_rows} "
                                f"per request (--max-rows); send them in several requests")


def _check_rows(schema: Schema, rows: npt.NDArray[Any], where: str) -> None:
    try:
        schema.check(rows, where)
    except ValueError as error:
        raise RequestError(400, str(error)) from None


def encode_v2(request: InferenceRequest, prediction: Prediction, model_name: str,
              model_version: str, prediction_id: str) -> dict[str, Any]:
    """The V2 answer; the prediction id goes in `parameters` (where V2 allows extensions)."""
    outputs: list[dict[str, Any]] = []
    for name in request.outputs:
        if name == PREDICT:
            outputs.append(_tensor(PREDICT, prediction.predict))
        elif prediction.proba is not None:
            outputs.append(_tensor(PREDICT_PROBA, prediction.proba))
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version,
                                "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    parameters: dict[str, Any] = {"prediction_id": prediction_id}
    if request.ignored_parameters:
        parameters["ignored"] = list(request.ignored_parameters)
    response["parameters"] = parameters
    return response


def encode_v1(prediction: Prediction, prediction_id: str) -> dict[str, Any]:
    return {"predictions": _jsonable(prediction.predict).tolist(),
            "prediction_id": prediction_id}


def _tensor(name: str, values: npt.NDArray[Any]) -> dict[str, Any]:
    data = _jsonable(values)
    return {"name": name, "shape": list(values.shape), "datatype": datatype_of(values),
            "data": data.reshape(-1).tolist()}


def datatype_of(values: npt.NDArray[Any]) -> str:
    """The V2 datatype a prediction array is sent as."""
    kind = values.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    return "BYTES"


def _jsonable(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if values.dtype.kind in "biuf":
        return values
    return values.astype(str)


def _decode_tensor(tensor: Any, where: str, max_rows: int) -> npt.NDArray[Any]:
    if not isinstance(tensor, dict):
        raise RequestError(400, f"{where}: must be an object with name, shape, datatype, data")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise RequestError(400, f"{where}.datatype: {datatype!r} is not a V2 datatype; use one "
                                f"of {', '.join(DATATYPES)}")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                       for n in shape)):
        raise RequestError(400, f"{where}.shape: must be a list of non-negative whole numbers, "
                                f"e.g. [1, 4]")
    if "data" not in tensor:
        raise RequestError(400, f"{where}.data: missing")
    _check_row_count(shape[0], max_rows, f"{where}.shape")
    dtype, kinds = DATATYPES[datatype]
    try:
        values = np.asarray(tensor["data"])
    except (ValueError, TypeError):
        raise RequestError(400, f"{where}.data: nested lists differ in length") from None
    if values.size and values.dtype.kind not in kinds:
        raise RequestError(400, f"{where}.data: holds {_kind_name(values)}, "
                                f"not {datatype} values")
    expected = math.prod(shape)
    if values.size != expected:
        raise RequestError(400, f"{where}: shape {shape} needs {expected} values, data has "
                                f"{values.size}")
    if dtype is not np.object_ and values.dtype.kind in "iu":
        _check_range(values, np.dtype(dtype), datatype, where)
    with np.errstate(over="ignore"):
        converted = values.astype(dtype)
    return converted.reshape(shape)


def _check_range(values: npt.NDArray[Any], dtype: np.dtype[Any], datatype: str,
                 where: str) -> None:
    if dtype.kind not in "iu" or not values.size:
        return
    info = np.iinfo(dtype)
    if int(values.min()) < info.min or int(values.max()) > info.max:
        raise RequestError(400, f"{where}.data: a value is outside {datatype}'s range "
                                f"[{info.min}, {info.max}]")


def _kind_name(values: npt.NDArray[Any]) -> str:
    return {"b": "booleans", "i": "whole numbers", "u": "whole numbers", "f": "decimals",
            "U": "strings"}.get(values.dtype.kind, "mixed values")


def _as_rows(columns: Sequence[npt.NDArray[Any]], schema: Schema) -> npt.NDArray[Any]:
    if len(columns) == 1:
        only = columns[0]
        if only.ndim == 1 and schema.n_features == 1:
            return only.reshape(-1, 1)
        if only.ndim != 2:
            raise RequestError(400, f"inputs[0].shape: {list(only.shape)} is not "
                                    f"[rows, features]; a tabular model takes 2 dimensions")
        return only
    counts = {column.shape[0] if column.ndim else -1 for column in columns}
    if counts == {0}:
        raise RequestError(400, "inputs: the batch is empty; send at least one row")
    if len(counts) != 1 or any(column.ndim not in (1, 2) for column in columns):
        raise RequestError(400, "inputs: several inputs are columns and must all have shape "
                                "[rows] or [rows, k] with the same number of rows")
    parts = [column.reshape(column.shape[0], -1) for column in columns]
    if len({part.dtype for part in parts}) > 1:
        parts = [part.astype(object) for part in parts]
    return np.hstack(parts)


def _requested_outputs(requested: Any, schema: Schema) -> tuple[str, ...]:
    if requested is None:
        return (PREDICT,)
    if not isinstance(requested, list) or not all(
            isinstance(item, dict) and isinstance(item.get("name"), str) for item in requested):
        raise RequestError(400, "outputs: must be a list of {\"name\": ...}")
    names = tuple(dict.fromkeys(item["name"] for item in requested))
    unknown = [name for name in names if name not in schema.outputs]
    if unknown:
        raise RequestError(400, f"outputs: {', '.join(unknown)} not available from this "
                                f"{schema.kind}; it offers {', '.join(schema.outputs)}")
    return names or (PREDICT,)


def _parameter_names(parameters: Any, where: str) -> list[str]:
    if parameters is None:
        return []
    if not isinstance(parameters, Mapping):
        raise RequestError(400, f"{where}: must be an object")
    return [f"{where}.{name}" for name in parameters]
