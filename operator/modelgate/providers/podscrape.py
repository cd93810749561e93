"""The default provider: read /metrics of every ready pod of both arms, directly.

Pod addresses come from the API (the pods' status.podIP), as Prometheus' Kubernetes discovery
would find them; no Prometheus is needed. All pods are scraped at the same moment so both arms
cover the same window. A pod missed in one round loses nothing: the window keeps its last
reading and counts the whole increase when it is read again. A round fails only when an arm
has no pod that answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import requests

from modelgate.core.analysis import PodScrape, Role
from modelgate.core.state import ScrapeResult
from modelgate.exposition import ExpositionError, parse_exposition
from modelgate.k8s import PodAddress

MAX_BYTES = 4 * 1024 * 1024
"""A serving pod's exposition is a few kilobytes; more is not ours."""


class PodScrapeProvider:
    """Scrapes pods over HTTP with a per-request timeout."""

    def __init__(self, timeout: float, concurrency: int = 16) -> None:
        self.timeout = timeout
        self.concurrency = max(concurrency, 1)
        self.session = requests.Session()

    def collect(self, pods: Sequence[PodAddress], port: int, t: float) -> ScrapeResult:
        if not pods:
            return ScrapeResult(error="no ready serving pods to scrape")
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(pods))) as pool:
            results = list(pool.map(lambda pod: self._scrape(pod, port, t), pods))
        scrapes = tuple(scrape for scrape, _ in results if scrape is not None)
        errors = [error for _, error in results if error is not None]
        answered = {scrape.role.value for scrape in scrapes}
        if errors and not {pod.role for pod in pods} <= answered:
            return ScrapeResult(error="; ".join(errors[:3]))
        return ScrapeResult(scrapes=scrapes)

    def _scrape(self, pod: PodAddress, port: int, t: float) -> tuple[PodScrape | None, str | None]:
        host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
        url = f"http://{host}:{port}/metrics"
        try:
            response = self.session.get(url, timeout=self.timeout, stream=True)
            body = response.raw.read(MAX_BYTES + 1, decode_content=True)
            if response.status_code != 200:
                return None, f"pod {pod.name}: /metrics answered {response.status_code}"
            if len(body) > MAX_BYTES:
                return None, f"pod {pod.name}: /metrics is larger than {MAX_BYTES} bytes"
            samples = parse_exposition(body.decode("utf-8", errors="replace"))
        except requests.RequestException as exc:
            return None, f"pod {pod.name}: {type(exc).__name__} reaching {url}"
        except ExpositionError as exc:
            return None, f"pod {pod.name}: {exc}"
        return PodScrape(t=t, role=Role(pod.role), pod=pod.name, samples=samples), None
