"""Predicting requests one by one, or together when they arrive together.

`InlinePredictor` calls the model on the event loop for each request.

`BatchingPredictor` queues requests; one task takes what is queued (up to max_batch_size rows,
waiting up to max_wait for company when asked to) and predicts it in one call. While a call
runs, new requests wait in the sockets; when it returns, the loop reads every ready connection
before the task runs again, so under load batches form by themselves. A batch waits at most
max_wait for company: for a full batch (batching on), or, adaptively (auto), for as many
requests as recent batches held.

The call runs on the event loop, not a worker thread: measured with a 100-tree forest, a
thread lost a third of the throughput to contention for the GIL with the loop (scikit-learn's
tree ensembles hold it between trees), and gained nothing since one process predicts one batch
at a time anyway. Parallelism comes from worker processes.
A batch the model rejects is retried request by request, so one bad request never fails its
neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from modelgate_serving.runtime import InputError, Prediction, Runtime

log = logging.getLogger(__name__)


class Predictor(Protocol):
    """Turns checked rows into a Prediction."""

    async def predict(self, rows: npt.NDArray[Any], proba: bool) -> Prediction: ...

    async def close(self) -> None: ...


class InlinePredictor:
    """Each request predicted on its own, on the event loop."""

    def __init__(self, runtime: Runtime, observe_batch: Any = None) -> None:
        self.runtime = runtime
        self.observe_batch = observe_batch

    async def predict(self, rows: npt.NDArray[Any], proba: bool) -> Prediction:
        if self.observe_batch is not None:
            self.observe_batch(rows.shape[0])
        return self.runtime.predict(rows, proba)

    async def close(self) -> None:
        return None


@dataclass
class _Pending:
    rows: npt.NDArray[Any]
    proba: bool
    future: asyncio.Future[Prediction] = field(repr=False)


class BatchingPredictor:
    """Concurrent requests predicted together."""

    def __init__(self, runtime: Runtime, max_batch_size: int, max_wait: float, *,
                 adaptive: bool, observe_batch: Any = None) -> None:
        self.runtime = runtime
        self.adaptive = adaptive
        self._recent: deque[int] = deque([1], maxlen=16)
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.observe_batch = observe_batch
        self._queue: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def predict(self, rows: npt.NDArray[Any], proba: bool) -> Prediction:
        future: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(rows, proba, future))
        self._arrived.set()
        return await future

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the server is shutting down"))

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            if self.max_wait > 0 and not self._enough_company():
                await self._wait_for_company()
            batch = self._take()
            self._recent.append(len(batch))
            try:
                results = self._predict(batch)
            except Exception as error:  # never lose the loop; each request gets the error
                log.exception("batch prediction failed")
                results = [error] * len(batch)
            for pending, result in zip(batch, results, strict=True):
                if pending.future.done():  # the client went away
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)

    async def _wait_for_company(self) -> None:
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while not self._enough_company():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def _enough_company(self) -> bool:
        """A full batch is queued, or (adaptive) as many requests as recent batches held.

        Adaptive waiting costs a lone client nothing (recent batches held one request) and,
        under steady concurrency, gathers the clients that the last call's answers set free.
        """
        if self._rows_queued() >= self.max_batch_size:
            return True
        return self.adaptive and len(self._queue) >= max(self._recent)

    def _rows_queued(self) -> int:
        return sum(pending.rows.shape[0] for pending in self._queue)

    def _take(self) -> list[_Pending]:
        """Queued requests that fit one call: same column count and kind, up to the limit."""
        first = self._queue.popleft()
        batch = [first]
        rows = first.rows.shape[0]
        while self._queue:
            candidate = self._queue[0]
            if (rows + candidate.rows.shape[0] > self.max_batch_size
                    or candidate.rows.shape[1] != first.rows.shape[1]
                    or (candidate.rows.dtype.kind == "O") != (first.rows.dtype.kind == "O")):
                break
            batch.append(self._queue.popleft())
            rows += candidate.rows.shape[0]
        return batch

    def _predict(self, batch: list[_Pending]) -> list[Prediction | BaseException]:
        """One call for the batch, split back per request."""
        if self.observe_batch is not None:
            self.observe_batch(sum(p.rows.shape[0] for p in batch))
        if len(batch) == 1:
            return [self._predict_one(batch[0])]
        proba = any(pending.proba for pending in batch)
        try:
            combined = self.runtime.predict(np.concatenate([p.rows for p in batch]), proba)
        except InputError:
            return [self._predict_one(pending) for pending in batch]
        results: list[Prediction | BaseException] = []
        start = 0
        for pending in batch:
            stop = start + pending.rows.shape[0]
            results.append(Prediction(
                combined.predict[start:stop],
                combined.proba[start:stop]
                if pending.proba and combined.proba is not None else None))
            start = stop
        return results

    def _predict_one(self, pending: _Pending) -> Prediction | BaseException:
        try:
            return self.runtime.predict(pending.rows, pending.proba)
        except Exception as error:
            return error
