"""A kube-proxy stand-in with a traffic generator: requests at a steady rate, spread round-robin
over the ready endpoints of the Service's selector, as a ClusterIP Service spreads them."""

from __future__ import annotations

import collections
import itertools
import random
import threading
import time
from collections.abc import Callable

import requests

Endpoints = Callable[[], list[tuple[str, int, str]]]


class Traffic:
    """Sends V2 inference requests at `rate` per second until stopped."""

    def __init__(self, endpoints: Endpoints, model_name: str, rows: list[list[float]],
                 rate: float, workers: int = 8) -> None:
        self.endpoints = endpoints
        self.model_name = model_name
        self.rows = rows
        self.rate = rate
        self.workers = workers
        self.by_version: collections.Counter[tuple[str, int]] = collections.Counter()
        self.failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._turn = itertools.count()
        self._threads: list[threading.Thread] = []

    def start(self) -> Traffic:
        for index in range(self.workers):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True,
                                      name=f"traffic-{index}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    def _run(self, index: int) -> None:
        session = requests.Session()
        generator = random.Random(index)
        next_at = time.monotonic() + generator.random() / max(self.rate / self.workers, 1e-3)
        while not self._stop.is_set():
            pause = next_at - time.monotonic()
            if pause > 0 and self._stop.wait(pause):
                return
            next_at = max(next_at + self.workers / max(self.rate, 1e-3), time.monotonic() - 1)
            endpoints = self.endpoints()
            if not endpoints:
                continue
            ip, port, _ = endpoints[next(self._turn) % len(endpoints)]
            row = self.rows[generator.randrange(len(self.rows))]
            body = {"inputs": [{"name": "x", "shape": [1, len(row)], "datatype": "FP64",
                                "data": row}]}
            try:
                answer = session.post(f"http://{ip}:{port}/v2/models/{self.model_name}/infer",
                                      json=body, timeout=5)
                key = (answer.headers.get("X-Model-Version", "?"), answer.status_code)
            except requests.RequestException:
                with self._lock:
                    self.failures += 1
                continue
            with self._lock:
                self.by_version[key] += 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            totals: dict[str, int] = collections.Counter()
            for (version, _), count in self.by_version.items():
                totals[version] += count
            return dict(totals)
