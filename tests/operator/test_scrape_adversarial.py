"""The pod scrape against hostile /metrics endpoints: real HTTP servers on loopback that
redirect, trickle, send too much or send garbage. The operator must not follow, must give up
at one deadline, must not buffer past its cap, and must not repeat what it was sent."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from modelgate.k8s import PodAddress
from modelgate.providers.podscrape import MAX_BYTES, PodScrapeProvider

SECRET = "metadata-token-7f3a"
EXPOSITION = (b"# TYPE modelgate_requests_total counter\n"
              b'modelgate_requests_total{model="m",version="1",code="200"} 3\n')


class _Handler(http.server.BaseHTTPRequestHandler):
    behave: Callable[[_Handler], None]

    def do_GET(self) -> None:
        type(self).behave(self)

    def log_message(self, *_: object) -> None:
        pass


class Endpoint:
    """A threaded HTTP server on 127.0.0.1 that counts requests and open connections."""

    def __init__(self, behave: Callable[[_Handler], None]) -> None:
        endpoint = self
        self.requests = 0
        self.open = 0
        self.most_open = 0
        self.lock = threading.Lock()

        def counted(handler: _Handler) -> None:
            with endpoint.lock:
                endpoint.requests += 1
                endpoint.open += 1
                endpoint.most_open = max(endpoint.most_open, endpoint.open)
            try:
                behave(handler)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the operator hung up: what we want
            finally:
                with endpoint.lock:
                    endpoint.open -= 1

        handler = type("Handler", (_Handler,), {"behave": staticmethod(counted)})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Endpoint:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _answer(status: int, body: bytes, **headers: str) -> Callable[[_Handler], None]:
    def behave(handler: _Handler) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key.replace("_", "-"), value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return behave


def _trickle(in_headers: bool) -> Callable[[_Handler], None]:
    def behave(handler: _Handler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        if not in_headers:
            handler.wfile.write(b"Content-Type: text/plain\r\n\r\n")
        for _ in range(600):  # one byte every 0.1 s for a minute
            handler.wfile.write(b"X-Slow: a\r\n"[:1] if in_headers else b"#")
            handler.wfile.flush()
            time.sleep(0.1)
    return behave


def _pods(*endpoints: Endpoint) -> list[tuple[PodAddress, int]]:
    return [(PodAddress(name=f"pod-{index}", role="canary" if index else "stable",
                        ip="127.0.0.1"), endpoint.port)
            for index, endpoint in enumerate(endpoints)]


def _collect_one(endpoint: Endpoint, timeout: float = 2.0) -> str | None:
    provider = PodScrapeProvider(timeout=timeout)
    result = provider.collect([PodAddress("pod-0", "canary", "127.0.0.1")], endpoint.port, 0.0)
    return result.error


@contextmanager
def _target() -> Iterator[Endpoint]:
    with Endpoint(_answer(200, EXPOSITION)) as target:
        yield target


def test_a_well_behaved_pod_is_scraped() -> None:
    with _target() as pod:
        result = PodScrapeProvider(timeout=2).collect(
            [PodAddress("pod-0", "canary", "127.0.0.1")], pod.port, 5.0)
    assert result.error is None
    assert [sample.value for sample in result.scrapes[0].samples] == [3.0]


def test_redirects_are_not_followed() -> None:
    with _target() as elsewhere:
        location = f"http://127.0.0.1:{elsewhere.port}/latest/meta-data/?{SECRET}"
        for status in (301, 302, 307, 308):
            with Endpoint(_answer(status, b"", Location=location)) as pod:
                error = _collect_one(pod)
            assert error is not None
            assert f"answered {status} (redirects are not followed)" in error
            assert SECRET not in error
        assert elsewhere.requests == 0


def test_a_trickling_pod_is_cut_off_at_one_deadline() -> None:
    for in_headers in (False, True):
        with Endpoint(_trickle(in_headers)) as pod:
            started = time.monotonic()
            error = _collect_one(pod, timeout=1.0)
            elapsed = time.monotonic() - started
        assert error is not None
        assert "no complete answer from /metrics within 1 s" in error
        assert elapsed < 4.0, f"the scrape took {elapsed:.1f}s with a 1s deadline"


def test_many_trickling_pods_cost_one_deadline_and_bounded_connections() -> None:
    """One tenant's twenty slow pods hold its tick for one deadline, with at most
    `concurrency` connections open at once."""
    with Endpoint(_trickle(False)) as pod:
        provider = PodScrapeProvider(timeout=1.0, concurrency=4)
        pods = [PodAddress(f"pod-{n}", "canary", "127.0.0.1") for n in range(20)]
        started = time.monotonic()
        result = provider.collect(pods, pod.port, 0.0)
        elapsed = time.monotonic() - started
    assert result.error is not None
    assert elapsed < 4.0  # a trickle would hold it for a minute
    assert pod.most_open <= 4


def test_an_oversized_exposition_is_refused_without_buffering_it() -> None:
    huge = EXPOSITION * (2 * MAX_BYTES // len(EXPOSITION))
    with Endpoint(_answer(200, huge)) as pod:
        error = _collect_one(pod)
    assert error is not None
    assert f"larger than {MAX_BYTES} bytes" in error


def test_a_compressed_exposition_is_refused() -> None:
    bomb = gzip.compress(b"#" * (64 * 1024 * 1024))  # 64 MiB of comment in 64 KiB
    with Endpoint(_answer(200, bomb, Content_Encoding="gzip")) as pod:
        error = _collect_one(pod)
    assert error is not None
    assert "compressed" in error


def test_errors_never_quote_what_the_pod_sent() -> None:
    garbage = f"this is {SECRET} and not exposition {{{{\n".encode()
    for behave in (_answer(200, garbage), _answer(500, garbage),
                   _answer(200, b"\xff\xfe" + garbage)):
        with Endpoint(behave) as pod:
            error = _collect_one(pod)
        assert error is not None
        assert SECRET not in error, error
