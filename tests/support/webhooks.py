"""A real HTTP webhook receiver on 127.0.0.1 recording every request it gets.

`mode` decides each answer: "ok" answers 204; "flaky" answers 500 to a delivery key's first
request and 204 after; "hang" holds every request until the receiver stops (a webhook that
never answers), and while it holds one calls `while_held` (if set) and keeps its answer in
`held`: what the test saw happen meanwhile."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    key: str
    body: dict[str, Any]
    answered: int


@dataclass
class Receiver:
    mode: str
    url: str = ""
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    while_held: Callable[[], bool] | None = None
    held: list[bool] = field(default_factory=list)

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.answered < 300]

    def all(self) -> list[Received]:
        with self.lock:
            return list(self.requests)


@contextmanager
def receiving(mode: str) -> Iterator[Receiver]:
    receiver = Receiver(mode)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            key = self.headers.get("Modelgate-Delivery") or ""
            if receiver.mode == "hang":
                if receiver.while_held is not None:
                    seen = receiver.while_held()
                    with receiver.lock:
                        receiver.held.append(seen)
                receiver.release.wait(120)
                code = 204
            else:
                with receiver.lock:
                    seen = any(r.key == key for r in receiver.requests)
                code = 500 if receiver.mode == "flaky" and not seen else 204
            with receiver.lock:
                receiver.requests.append(Received(key, body, code))
            try:
                self.send_response(code)
                self.end_headers()
            except OSError:  # the client gave up (it timed out)
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
