"""Large bodies are parsed and decoded in a child process, never in the serving process.

Why a process and not a thread: `orjson.loads` of a 14 MB body holds the GIL for its whole run
(hundreds of milliseconds on a busy core), and so does freeing the million objects it built.
Every time the event loop gives the GIL up (to wait on a socket) it then queues behind such a
call, so a health probe that needs a few turns of the loop waited seconds behind sixteen huge
bodies, long enough for a kubelet to restart the pod. In a child the parse has its own GIL:
the serving process only moves bytes to it and gets numpy rows back.

The child is `python -m modelgate_serving.parsing` talking over two pipes with
`multiprocessing.connection` framing. It shares no threads, sockets or locks with the server,
never sees the model (it checks rows against the model's `Schema`), and a plain subprocess
needs none of multiprocessing's shared semaphores, whose tracker complains when a child is
killed. What comes back is pickled by our own child from objects it built (numpy arrays,
strings): no bytes of the client reach the unpickler as a pickle.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import orjson

from modelgate_serving.protocol import InferenceRequest, RequestError, decode_v1, decode_v2
from modelgate_serving.runtime import Schema

log = logging.getLogger(__name__)


def parse(body: bytes) -> Any:
    """JSON bytes -> Python objects; malformed JSON is the client's error."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise RequestError(400, f"the body is not valid JSON: {error}") from None


def decode(body: bytes, v2: bool, schema: Schema, max_rows: int) -> InferenceRequest:
    """Parse and decode one inference body (V2 or V1) into checked rows."""
    decoder = decode_v2 if v2 else decode_v1
    return decoder(parse(body), schema, max_rows)


@dataclass(frozen=True)
class Job:
    """One body for the child to decode, and how."""

    body: bytes
    v2: bool
    schema: Schema
    max_rows: int


@dataclass(frozen=True)
class Failure:
    """An unexpected error in the child (a defect, not the client's): its type and message."""

    text: str


class ParserStoppedError(Exception):
    """The child died while it had a body (most likely out of memory on a huge one)."""


class _Child:
    """The running child process and its two ends of the pipes."""

    def __init__(self) -> None:
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "modelgate_serving.parsing", str(to_child),
                 str(from_child)],
                pass_fds=(to_child, from_child), stdin=subprocess.DEVNULL)
        finally:
            os.close(to_child)
            os.close(from_child)
        self.send = Connection(from_parent, readable=False)
        self.receive = Connection(to_parent, writable=False)

    def alive(self) -> bool:
        return self.process.poll() is None

    def exchange(self, job: Job) -> Any:
        try:
            self.send.send(job)
            return self.receive.recv()
        except (EOFError, OSError):
            raise ParserStoppedError from None

    def stop(self) -> None:
        self.send.close()
        self.receive.close()
        if self.alive():
            self.process.kill()
        self.process.wait()


class ChildDecoder:
    """One child process that decodes large bodies in turn, started by the first (its imports
    cost about half a second of CPU, which most servers never need to spend) and again after
    it dies.

    The blocking exchange with the child runs in one thread of its own, so bodies take turns
    and the event loop only awaits the answer."""

    def __init__(self) -> None:
        self._child: _Child | None = None
        self._lock = threading.Lock()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="body-parser")

    def _running(self) -> _Child:
        if self._child is not None and not self._child.alive():
            log.warning("the child process that parses large requests stopped (exit code "
                        "%s); starting another", self._child.process.returncode)
            self._child.stop()
            self._child = None
        if self._child is None:
            self._child = _Child()
        return self._child

    def _decode(self, job: Job) -> InferenceRequest:
        with self._lock:
            child = self._running()
            try:
                answer = child.exchange(job)
            except ParserStoppedError:
                child.stop()
                self._child = None
                log.error("the child process that parses large requests died with a %d-byte "
                          "body (exit code %s); the next one starts another", len(job.body),
                          child.process.returncode)
                raise RequestError(503, "the request could not be parsed here (the parser "
                                        "process stopped); retry, or send fewer rows") from None
        if isinstance(answer, RequestError):
            raise answer
        if isinstance(answer, Failure):
            raise RuntimeError(f"the parser process failed: {answer.text}")
        if not isinstance(answer, InferenceRequest):
            raise TypeError(f"the parser process answered {type(answer).__name__}")
        return answer

    async def decode(self, body: bytes, v2: bool, schema: Schema,
                     max_rows: int) -> InferenceRequest:
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self._decode, Job(body, v2, schema, max_rows))

    def close(self) -> None:
        """Stop the child without waiting for the lock: killing it ends any exchange in
        progress (its pipes break), which then lets the thread go."""
        child = self._child
        if child is not None and child.alive():
            child.process.kill()
            child.process.wait()
        self._thread.shutdown(wait=False, cancel_futures=True)


def _serve(receive: Connection, send: Connection) -> None:
    """The child's loop: a Job in, an InferenceRequest or the RequestError out, until EOF."""
    while True:
        try:
            job = receive.recv()
        except EOFError:
            return
        answer: InferenceRequest | RequestError | Failure
        try:
            answer = decode(job.body, job.v2, job.schema, job.max_rows)
        except RequestError as error:
            answer = error
        except Exception as error:  # answered as a server error, and the child goes on
            answer = Failure(f"{type(error).__name__}: {error}")
        del job
        send.send(answer)


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1]), writable=False),
           Connection(int(sys.argv[2]), readable=False))
