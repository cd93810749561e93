"""The default provider: read /metrics of every ready pod of both arms, directly.

Pod addresses come from the API (the pods' status.podIP), as Prometheus' Kubernetes discovery
would find them; no Prometheus is needed. All pods are scraped at the same moment so both arms
cover the same window. A pod missed in one round loses nothing: the window keeps its last
reading and counts the whole increase when it is read again. A round fails only when an arm
has no pod that answered.

The pods are the tenant's, so the scrape treats them as hostile:

- it never follows a redirect (a 3xx is a failed scrape), so a pod cannot make the operator
  fetch another address from the operator's network position;
- one deadline covers the whole round, connection, headers and body of every pod alike, so a
  pod trickling bytes holds its ModelDeployment's tick for at most `timeout` seconds, and at
  most `concurrency` connections are open for one ModelDeployment at a time;
- a body is read up to MAX_BYTES of identity encoding only (a compressed body could expand
  past any cap), far below the operator's memory;
- errors say what failed, never what was read: nothing a pod sends reaches status or Events.

aiohttp, not requests: requests' timeout bounds each read, not the request, and a server that
sends a byte a second never trips it. The round runs on its own event loop in the calling
thread (kopf runs the timer in a worker thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from modelgate.core.analysis import PodScrape, Role
from modelgate.core.state import ScrapeResult
from modelgate.exposition import ExpositionError, parse_exposition
from modelgate.k8s import PodAddress

if TYPE_CHECKING:
    from modelgate.providers import Target

MAX_BYTES = 512 * 1024
"""A serving pod's exposition is tens of kilobytes; more is not ours. With the default
concurrency of 16 and kopf's 8 worker threads, at most 64 MiB are buffered at once, an eighth
of the operator's 512 MiB limit."""


class ScrapeFailedError(Exception):
    """One pod's scrape failed; the message names the pod and what failed, nothing it sent."""


class PodScrapeProvider:
    """Scrapes pods over HTTP: no redirects, one deadline, bounded size and concurrency."""

    def __init__(self, timeout: float, concurrency: int = 16,
                 max_bytes: int = MAX_BYTES) -> None:
        self.timeout = timeout
        self.concurrency = max(concurrency, 1)
        self.max_bytes = max_bytes

    def collect(self, pods: Sequence[PodAddress], port: int, t: float, *,
                target: Target | None = None) -> ScrapeResult:
        if not pods:
            return ScrapeResult(error="no ready serving pods to scrape")
        results = _run(self._collect(pods, port, t))
        scrapes = tuple(result for result in results if isinstance(result, PodScrape))
        errors = [str(result) for result in results if isinstance(result, ScrapeFailedError)]
        answered = {scrape.role.value for scrape in scrapes}
        if errors and not {pod.role for pod in pods} <= answered:
            return ScrapeResult(error="; ".join(errors[:3]))
        return ScrapeResult(scrapes=scrapes)

    async def _collect(self, pods: Sequence[PodAddress], port: int, t: float) -> Results:
        gate = asyncio.Semaphore(self.concurrency)
        connector = aiohttp.TCPConnector(limit=self.concurrency, force_close=True)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                         trust_env=False) as session:
            tasks = [asyncio.ensure_future(self._scrape(session, gate, pod, port, t))
                     for pod in pods]
            # One deadline for the round: whatever has not finished by then is cancelled.
            done, pending = await asyncio.wait(tasks, timeout=self.timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        results: Results = []
        for pod, task in zip(pods, tasks, strict=True):
            error = task.exception() if task in done else None
            if task in done and error is None:
                results.append(task.result())
            elif isinstance(error, ScrapeFailedError):
                results.append(error)
            elif task in done:
                results.append(ScrapeFailedError(
                    f"pod {pod.name}: {type(error).__name__} reading /metrics"))
            else:
                results.append(ScrapeFailedError(
                    f"pod {pod.name}: no complete answer from /metrics within "
                    f"{self.timeout:g} s"))
        return results

    async def _scrape(self, session: aiohttp.ClientSession, gate: asyncio.Semaphore,
                      pod: PodAddress, port: int, t: float) -> PodScrape:
        host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
        url = f"http://{host}:{pod.port or port}/metrics"
        async with gate:
            try:
                async with session.get(url, allow_redirects=False,
                                       headers={"Accept-Encoding": "identity"}) as response:
                    if response.status != 200:
                        raise ScrapeFailedError(
                            f"pod {pod.name}: /metrics answered {response.status}"
                            + (" (redirects are not followed)"
                               if 300 <= response.status < 400 else ""))
                    if response.headers.get("Content-Encoding", "identity") != "identity":
                        raise ScrapeFailedError(f"pod {pod.name}: /metrics sent a compressed "
                                                "body; only identity encoding is read")
                    body = bytearray()
                    while chunk := await response.content.read(self.max_bytes + 1 - len(body)):
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise ScrapeFailedError(f"pod {pod.name}: /metrics is larger "
                                                    f"than {self.max_bytes} bytes")
            except aiohttp.ClientError as exc:
                raise ScrapeFailedError(f"pod {pod.name}: {type(exc).__name__} reaching "
                                        f"{url}") from None
        try:
            samples = parse_exposition(bytes(body).decode("utf-8", errors="replace"))
        except ExpositionError:
            # The parser's message quotes the offending line: not for status or Events.
            raise ScrapeFailedError(f"pod {pod.name}: /metrics is not Prometheus text "
                                    "format") from None
        return PodScrape(t=t, role=Role(pod.role), pod=pod.name, samples=samples)


Results = list[PodScrape | ScrapeFailedError]
_T = TypeVar("_T")


def _run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run the round on a fresh event loop; in a thread of its own if this one has a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
