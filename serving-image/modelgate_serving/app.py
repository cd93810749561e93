"""The HTTP transport: aiohttp routes for V2, V1, feedback, health and /metrics (contract 3).

Thin: parsing and encoding live in `protocol`, the model in `runtime`, batching in `batching`.
Every answer is JSON (errors are `{"error": "..."}`) and carries `X-Model-Version`. Nothing a
client sends yields a 5xx: bad requests are 4xx with a message; only a broken server is 5xx.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from modelgate_serving import __version__, loader
from modelgate_serving.batching import BatchingPredictor, InlinePredictor, Predictor
from modelgate_serving.metrics import Metrics
from modelgate_serving.protocol import (
    InferenceRequest,
    RequestError,
    datatype_of,
    decode_v1,
    decode_v2,
    encode_v1,
    encode_v2,
)
from modelgate_serving.runtime import InputError, Runtime
from modelgate_serving.settings import BatchingMode, Settings

log = logging.getLogger(__name__)

JSON = "application/json"
VERSION_HEADER = "X-Model-Version"
# Requests that count in modelgate_requests_total and the latency histogram.
INFERENCE_ROUTES = frozenset({"v2-infer", "v2-infer-version", "v1-predict"})
_VERSION_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,62}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Loaded:
    """A model ready to serve and how to predict it."""

    runtime: Runtime
    batched: bool
    batching_note: str


def prepare(settings: Settings) -> Loaded:
    """Fetch, verify and load the model, and choose batching. Blocking; raises LoadError."""
    estimator, sha256 = loader.load_model(settings)
    try:
        runtime = Runtime(estimator, sha256)
    except InputError as error:
        raise loader.LoadError(str(error)) from None
    mode = settings.batching
    if mode is BatchingMode.OFF:
        return Loaded(runtime, False, "off (configured)")
    if mode is BatchingMode.ON:
        return Loaded(runtime, True,
                      f"on (configured; up to {settings.max_batch_size} rows, waiting up to "
                      f"{settings.max_wait * 1e3:g} ms)")
    cost = runtime.measure(settings.max_batch_size)
    if cost is None:
        return Loaded(runtime, False,
                      "off (auto: the model could not be measured on zero rows)")
    return Loaded(runtime, cost.batching_helps,
                  f"{'on' if cost.batching_helps else 'off'} (auto: {cost})")


class Server:
    """Everything one worker process holds: settings, the model once loaded, metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics(settings.model_name, settings.model_version)
        self.runtime: Runtime | None = None
        self.predictor: Predictor | None = None
        self.load_error: str | None = None
        self.batching_note = ""
        self.feedback_versions: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def load(self, preloaded: Loaded | None = None) -> None:
        """Load the model off the loop (unless done already); ready only if all succeeds."""
        try:
            loaded = preloaded if preloaded is not None else (
                await asyncio.get_running_loop().run_in_executor(None, prepare, self.settings))
        except loader.LoadError as error:
            self.load_error = str(error)
            log.error("model not loaded, the server will not become ready: %s", error)
            return
        except Exception as error:
            self.load_error = f"{type(error).__name__}: {error}"
            log.exception("model not loaded, the server will not become ready")
            return
        runtime = loaded.runtime
        if loaded.batched:
            self.predictor = BatchingPredictor(
                runtime, self.settings.max_batch_size, self.settings.max_wait,
                adaptive=self.settings.batching is BatchingMode.AUTO,
                observe_batch=self.metrics.batch_rows.observe)
        else:
            self.predictor = InlinePredictor(runtime, self.metrics.batch_rows.observe)
        self.batching_note = loaded.batching_note
        self.metrics.loaded(runtime.sha256, is_classifier=runtime.is_classifier)
        self.runtime = runtime
        log.info("serving %s version %s (%s, sha256 %s); batching %s",
                 self.settings.model_name, self.settings.model_version, runtime.kind,
                 runtime.sha256, self.batching_note)

    async def close(self) -> None:
        if self.predictor is not None:
            await self.predictor.close()

    # -- helpers -----------------------------------------------------------------------------

    def ready_runtime(self) -> tuple[Runtime, Predictor]:
        if self.runtime is None or self.predictor is None:
            reason = self.load_error or "the model is still loading"
            raise RequestError(503, f"model {self.settings.model_name} is not ready: {reason}")
        return self.runtime, self.predictor

    def check_model(self, request: web.Request) -> None:
        name = request.match_info["name"]
        if name != self.settings.model_name:
            raise RequestError(404, f"model {name!r} is not served here; this server serves "
                                    f"{self.settings.model_name!r}")
        version = request.match_info.get("version")
        if version is not None and version != self.settings.model_version:
            raise RequestError(404, f"version {version!r} of {name} is not served here; this "
                                    f"server serves version {self.settings.model_version!r}")

    async def read_json(self, request: web.Request) -> Any:
        content_type = request.headers.get("Content-Type", JSON)
        media = content_type.split(";", 1)[0].strip().lower()
        if media != JSON and not media.endswith("+json"):
            raise RequestError(415, f"Content-Type {media!r} is not accepted; send "
                                    f"application/json")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RequestError(413, f"the body is larger than {self.settings.max_body_bytes} "
                                    f"bytes (--max-body-bytes)") from None
        if not body:
            raise RequestError(400, "the body is empty; send a JSON object")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise RequestError(400, f"the body is not valid JSON: {error}") from None

    async def run(self, request: InferenceRequest, predictor: Predictor,
                  runtime: Runtime) -> Any:
        try:
            prediction = await predictor.predict(request.rows, request.wants_proba)
        except InputError as error:
            raise RequestError(400, str(error)) from None
        self.metrics.predicted(prediction.predict, prediction.proba,
                               is_classifier=runtime.is_classifier)
        return prediction

    # -- handlers ----------------------------------------------------------------------------

    async def infer_v2(self, request: web.Request) -> web.Response:
        self.check_model(request)
        runtime, predictor = self.ready_runtime()
        inference = decode_v2(await self.read_json(request), runtime)
        prediction = await self.run(inference, predictor, runtime)
        return _json(encode_v2(inference, prediction, self.settings.model_name,
                               self.settings.model_version))

    async def predict_v1(self, request: web.Request) -> web.Response:
        self.check_model(request)
        runtime, predictor = self.ready_runtime()
        inference = decode_v1(await self.read_json(request), runtime)
        prediction = await self.run(inference, predictor, runtime)
        return _json(encode_v1(prediction))

    async def feedback(self, request: web.Request) -> web.Response:
        """Ground truth for earlier predictions, counted for the version that made them."""
        self.check_model(request)
        body = await self.read_json(request)
        if not isinstance(body, dict):
            raise RequestError(400, "the body must be a JSON object")
        version = body.get("version", request.headers.get(VERSION_HEADER))
        if not isinstance(version, str) or not _VERSION_LABEL.match(version):
            raise RequestError(400, "version: say which version made the predictions (the "
                                    f"{VERSION_HEADER} header of their response), in the body "
                                    f"or the {VERSION_HEADER} request header")
        correct, incorrect = _outcomes(body)
        if (version not in self.feedback_versions
                and len(self.feedback_versions) >= self.settings.feedback_versions):
            raise RequestError(429, f"feedback is already counted for "
                                    f"{len(self.feedback_versions)} versions, the limit "
                                    f"(--feedback-versions); version {version!r} is refused")
        self.feedback_versions.add(version)
        self.metrics.feedback_counted(version, correct, incorrect)
        return _json({"version": version, "correct": correct, "incorrect": incorrect})

    async def live(self, _: web.Request) -> web.Response:
        return _json({"live": True})

    async def ready(self, _: web.Request) -> web.Response:
        self.ready_runtime()
        return _json({"ready": True})

    async def model_ready(self, request: web.Request) -> web.Response:
        self.check_model(request)
        self.ready_runtime()
        return _json({"name": self.settings.model_name, "ready": True})

    async def server_metadata(self, _: web.Request) -> web.Response:
        return _json({"name": "modelgate-serve", "version": __version__, "extensions": []})

    async def model_metadata(self, request: web.Request) -> web.Response:
        self.check_model(request)
        runtime, _ = self.ready_runtime()
        features = runtime.n_features if runtime.n_features is not None else -1
        predicted = (datatype_of(runtime.classes) if runtime.classes is not None else "FP64")
        outputs = [{"name": "predict", "datatype": predicted, "shape": [-1]}]
        if runtime.has_proba:
            width = len(runtime.classes) if runtime.classes is not None else -1
            outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, width]})
        return _json({
            "name": self.settings.model_name,
            "versions": [self.settings.model_version],
            "platform": "sklearn",
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, features]}],
            "outputs": outputs,
            "parameters": {"estimator": runtime.kind, "sha256": runtime.sha256,
                           "batching": self.batching_note},
        })

    async def metrics_text(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


def _outcomes(body: dict[str, Any]) -> tuple[int, int]:
    """(correct, incorrect) from `outcome(s)` or from `prediction(s)` beside `label(s)`."""
    if "outcome" in body or "outcomes" in body:
        outcomes = body.get("outcomes", [body.get("outcome")])
        if not isinstance(outcomes, list) or not outcomes or any(
                o not in ("correct", "incorrect") for o in outcomes):
            raise RequestError(400, "outcome(s): each must be \"correct\" or \"incorrect\"")
        correct = sum(1 for o in outcomes if o == "correct")
        return correct, len(outcomes) - correct
    if ("prediction" in body) != ("label" in body) or \
            ("predictions" in body) != ("labels" in body):
        raise RequestError(400, "send prediction with label, predictions with labels, or "
                                "outcome(s)")
    if "predictions" in body:
        predictions, labels = body["predictions"], body["labels"]
        if (not isinstance(predictions, list) or not isinstance(labels, list)
                or len(predictions) != len(labels) or not predictions):
            raise RequestError(400, "predictions and labels: two non-empty lists of the same "
                                    "length")
    elif "prediction" in body:
        predictions, labels = [body["prediction"]], [body["label"]]
    else:
        raise RequestError(400, "send {\"prediction\": p, \"label\": y}, "
                                "{\"predictions\": [...], \"labels\": [...]} or "
                                "{\"outcome\": \"correct\"|\"incorrect\"}")
    correct = sum(1 for p, y in zip(predictions, labels, strict=True) if _same(p, y))
    return correct, len(predictions) - correct


def _same(prediction: Any, label: Any) -> bool:
    numbers = (int, float)
    if (isinstance(prediction, numbers) and isinstance(label, numbers)
            and not isinstance(prediction, bool) and not isinstance(label, bool)):
        return math.isclose(prediction, label, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(prediction, dict | list) or isinstance(label, dict | list):
        raise RequestError(400, "a prediction or label is a list or object; send one value "
                                "per prediction")
    return str(prediction) == str(label)


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type=JSON)


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


def build_app(settings: Settings, preloaded: Loaded | None = None) -> web.Application:
    """The app; it loads the model in the background unless given one `preloaded`."""
    server = Server(settings)

    @web.middleware
    async def answer(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except RequestError as error:
            response = _error(error.status, error.message)
        except web.HTTPException as error:
            response = _error(error.status, _http_message(error, request))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            response = _error(500, "the server failed to answer; see its log")
        route = request.match_info.route.name
        if route in INFERENCE_ROUTES:
            server.metrics.request(response.status, time.perf_counter() - started)
        return response

    async def version_header(_: web.Request, response: web.StreamResponse) -> None:
        response.headers[VERSION_HEADER] = settings.model_version

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        loading = asyncio.get_running_loop().create_task(server.load(preloaded))
        yield
        loading.cancel()
        await server.close()

    app = web.Application(middlewares=[answer], client_max_size=settings.max_body_bytes)
    app.on_response_prepare.append(version_header)
    app.cleanup_ctx.append(lifecycle)
    name = "{name:[^/:]+}"
    app.add_routes([
        web.post(f"/v2/models/{name}/infer", server.infer_v2, name="v2-infer"),
        web.post(f"/v2/models/{name}/versions/{{version}}/infer", server.infer_v2,
                 name="v2-infer-version"),
        web.post(f"/v1/models/{name}:predict", server.predict_v1, name="v1-predict"),
        web.post(f"/v2/models/{name}/feedback", server.feedback, name="v2-feedback"),
        web.get("/v2/health/live", server.live, allow_head=True),
        web.get("/v2/health/ready", server.ready, allow_head=True),
        web.get("/v2", server.server_metadata),
        web.get(f"/v2/models/{name}", server.model_metadata),
        web.get(f"/v2/models/{name}/versions/{{version}}", server.model_metadata),
        web.get(f"/v2/models/{name}/ready", server.model_ready),
        web.get("/metrics", server.metrics_text),
    ])
    return app


def _http_message(error: web.HTTPException, request: web.Request) -> str:
    if error.status == 404:
        return (f"no such endpoint: {request.path}; inference is POST "
                f"/v2/models/{{name}}/infer or /v1/models/{{name}}:predict")
    if error.status == 405:
        allowed = error.headers.get("Allow", "")
        return f"{request.method} is not allowed on {request.path}; use {allowed}"
    return error.reason
