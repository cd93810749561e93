"""The HTTP transport: aiohttp routes for V2, V1, feedback, health and /metrics (contract 3).

Thin: parsing and encoding live in `protocol`, the model in `runtime`, batching in `batching`.
Every answer is JSON (errors are `{"error": "..."}`) and carries `X-Model-Version`. Nothing a
client sends yields a 5xx: bad requests are 4xx with a message; only a broken server is 5xx.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from modelgate_serving import __version__, loader
from modelgate_serving.batching import BatchingPredictor, InlinePredictor, Predictor
from modelgate_serving.feedback import FeedbackError, Issuer, Ledger, Outcome, new_key
from modelgate_serving.metrics import Metrics
from modelgate_serving.parsing import ChildDecoder, parse
from modelgate_serving.protocol import (
    InferenceRequest,
    RequestError,
    datatype_of,
    decode_v1,
    decode_v2,
    encode_v1,
    encode_v2,
)
from modelgate_serving.runtime import InputError, Prediction, Runtime, Schema
from modelgate_serving.settings import BatchingMode, Settings

log = logging.getLogger(__name__)

JSON = "application/json"
VERSION_HEADER = "X-Model-Version"
# Requests that count in modelgate_requests_total and the latency histogram.
INFERENCE_ROUTES = frozenset({"v2-infer", "v2-infer-version", "v1-predict"})
PREDICTION_ID_HEADER = "X-Prediction-Id"
OFFLOAD_BYTES = 64 * 1024
"""Bodies larger than this are parsed in a child process (see `parsing`), not on the loop."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Protocol(enum.Enum):
    """The two inference protocols, and how each body is read."""

    V2 = "v2"
    V1 = "v1"

    def decode(self, body: Any, schema: Schema, max_rows: int) -> InferenceRequest:
        decoder = decode_v2 if self is Protocol.V2 else decode_v1
        return decoder(body, schema, max_rows)


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
        self.issuer = Issuer(settings.model_name, settings.model_version,
                             settings.feedback_key or new_key())
        self.ledger = Ledger(settings.feedback_window, settings.feedback_capacity)
        # Large bodies are parsed in a child process (started by the first one: most servers
        # never see one), and requests of many rows predicted in one thread, taking turns: the
        # loop stays free for everything else.
        self.parser = ChildDecoder()
        self.offload = ThreadPoolExecutor(max_workers=1, thread_name_prefix="large-request")

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
        self.offload.shutdown(wait=False, cancel_futures=True)
        self.parser.close()

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

    async def read_body(self, request: web.Request) -> bytes:
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
        return body

    async def read_json(self, request: web.Request) -> Any:
        return parse(await self.read_body(request))

    async def run(self, request: InferenceRequest, predictor: Predictor,
                  runtime: Runtime) -> Prediction:
        try:
            prediction = await predictor.predict(request.rows, request.wants_proba)
        except InputError as error:
            raise RequestError(400, str(error)) from None
        self.metrics.predicted(prediction.predict, prediction.proba,
                               is_classifier=runtime.is_classifier)
        return prediction

    def predict_here(self, request: InferenceRequest, runtime: Runtime) -> Prediction:
        """Predict in the calling thread, on its own (large requests, off the loop)."""
        self.metrics.batch_rows.observe(request.rows.shape[0])
        try:
            prediction = runtime.predict(request.rows, request.wants_proba)
        except InputError as error:
            raise RequestError(400, str(error)) from None
        self.metrics.predicted(prediction.predict, prediction.proba,
                               is_classifier=runtime.is_classifier)
        return prediction

    def answer_here(self, protocol: Protocol, inference: InferenceRequest,
                    runtime: Runtime) -> tuple[bytes, str]:
        """Predict and encode in one go: what the worker thread does for many rows."""
        return self.encode(protocol, inference, self.predict_here(inference, runtime))

    def encode(self, protocol: Protocol, inference: InferenceRequest,
               prediction: Prediction) -> tuple[bytes, str]:
        """The answer's body and the id it issues for this prediction."""
        prediction_id = self.issuer.issue(inference.rows.shape[0], time.time())
        if protocol is Protocol.V2:
            payload = encode_v2(inference, prediction, self.settings.model_name,
                                self.settings.model_version, prediction_id)
        else:
            payload = encode_v1(prediction, prediction_id)
        return orjson.dumps(payload), prediction_id

    # -- handlers ----------------------------------------------------------------------------

    async def infer(self, request: web.Request, protocol: Protocol) -> web.Response:
        """Small requests are parsed and predicted on the loop (batched with others when that
        helps); large bodies are parsed in a child process and many rows predicted in a worker
        thread, so the loop keeps answering probes meanwhile."""
        self.check_model(request)
        runtime, predictor = self.ready_runtime()
        body = await self.read_body(request)
        if len(body) > OFFLOAD_BYTES:
            inference = await self.parser.decode(body, protocol is Protocol.V2, runtime.schema,
                                                 self.settings.max_rows)
        else:
            inference = protocol.decode(parse(body), runtime.schema, self.settings.max_rows)
        if inference.rows.shape[0] > self.settings.max_batch_size:
            encoded, prediction_id = await asyncio.get_running_loop().run_in_executor(
                self.offload, self.answer_here, protocol, inference, runtime)
        else:
            prediction = await self.run(inference, predictor, runtime)
            encoded, prediction_id = self.encode(protocol, inference, prediction)
        return web.Response(body=encoded, content_type=JSON,
                            headers={PREDICTION_ID_HEADER: prediction_id})

    async def infer_v2(self, request: web.Request) -> web.Response:
        return await self.infer(request, Protocol.V2)

    async def predict_v1(self, request: web.Request) -> web.Response:
        return await self.infer(request, Protocol.V1)

    async def feedback(self, request: web.Request) -> web.Response:
        """Outcomes of earlier predictions, named by their ids, counted once each."""
        self.check_model(request)
        self.check_token(request)
        body = await self.read_json(request)
        items = _feedback_items(body, self.settings.max_rows)
        now = time.time()
        outcomes = [_outcome(item, f"feedback[{index}]", self.issuer)
                    for index, item in enumerate(items)]
        try:
            self.ledger.spend(outcomes, now)
        except FeedbackError as error:
            raise RequestError(error.status, error.message) from None
        counted: dict[str, dict[str, int]] = {}
        for outcome in outcomes:
            tally = counted.setdefault(outcome.id.version, {"correct": 0, "incorrect": 0})
            tally["correct" if outcome.correct else "incorrect"] += 1
        for version, tally in counted.items():
            self.metrics.feedback_counted(version, tally["correct"], tally["incorrect"])
        return _json({"counted": counted})

    def check_token(self, request: web.Request) -> None:
        token = self.settings.feedback_token
        if not token:
            return
        sent = request.headers.get("Authorization", "")
        scheme, _, credentials = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                credentials.strip().encode(), token.encode()):
            raise RequestError(401, "feedback needs the feedback token: send the header "
                                    "Authorization: Bearer <token> (--feedback-token)")

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


def _feedback_items(body: Any, max_items: int) -> list[dict[str, Any]]:
    """One feedback object, or {"feedback": [objects]}."""
    if isinstance(body, dict) and "feedback" in body:
        items = body["feedback"]
        if not isinstance(items, list) or not items:
            raise RequestError(400, "feedback: must be a non-empty list of "
                                    "{\"id\", \"row\", \"outcome\"} objects")
    else:
        items = [body]
    if len(items) > max_items:
        raise RequestError(413, f"feedback: {len(items)} items; at most {max_items} per "
                                "request (--max-rows)")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise RequestError(400, f"feedback[{index}]: must be an object {{\"id\": "
                                    "<X-Prediction-Id>, \"row\": 0, \"outcome\": "
                                    "\"correct\"|\"incorrect\"}")
    return items


def _outcome(item: dict[str, Any], where: str, issuer: Issuer) -> Outcome:
    """A verified outcome, or a 4xx saying why it counts nowhere."""
    if "id" not in item:
        raise RequestError(400, f"{where}.id: missing; feedback must name the prediction it is "
                                f"about by the {PREDICTION_ID_HEADER} of its answer")
    try:
        prediction = issuer.verify(item["id"], f"{where}.id")
    except FeedbackError as error:
        raise RequestError(error.status, error.message) from None
    row = item.get("row", 0)
    if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < prediction.rows:
        raise RequestError(400, f"{where}.row: must be a row of that prediction, 0 to "
                                f"{prediction.rows - 1}")
    if "outcome" in item:
        if item["outcome"] not in ("correct", "incorrect"):
            raise RequestError(400, f"{where}.outcome: must be \"correct\" or "
                                    "\"incorrect\"")
        return Outcome(prediction, row, item["outcome"] == "correct")
    if "prediction" in item and "label" in item:
        return Outcome(prediction, row, _same(item["prediction"], item["label"]))
    raise RequestError(400, f"{where}: say how the prediction fared: \"outcome\": "
                            "\"correct\"|\"incorrect\", or \"prediction\" with \"label\"")


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
            # Latency of answered predictions only: refusals are fast and would flatter.
            server.metrics.request(response.status, time.perf_counter() - started
                                   if response.status == 200 else None)
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
