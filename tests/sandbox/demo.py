"""`make demo` without Docker: the main scenario in the local sandbox, printed as it happens.

v1 is deployed, v2 (a retrained, equally good model) is canaried and promoted, then v3 (which
fails a share of its requests) is canaried and rolled back. Ends by itself; exit 1 if any
outcome is not the expected one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from sandbox import ROOT, Sandbox

NAME = "iris"


class Narrator:
    """Prints each phase change and each new Event once."""

    def __init__(self, sandbox: Sandbox, started: float) -> None:
        self.sandbox = sandbox
        self.started = started
        self.seen_events = 0
        self.last = ("", "")

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def follow(self, done: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.sandbox.status(NAME)
            events = self.sandbox.events(NAME)
            for event in events[self.seen_events:]:
                self.say(f"event {event['reason']}: {event.get('message', '')[:160]}")
            self.seen_events = len(events)
            canary = status.get("canary") or {}
            now = (str(status.get("phase")), f"{canary.get('version')}@{canary.get('weight')}")
            if now != self.last and status.get("phase"):
                self.say(f"phase {status['phase']}: {status.get('message', '')[:160]}")
                self.last = now
            if done(status) or time.monotonic() > deadline:
                return status
            time.sleep(0.5)


def main() -> int:
    print("make demo: no Docker and kind here, so the demo runs in the local sandbox: the real "
          "operator against an emulated API server, with real modelgate-serve processes as "
          "pods on 127.x addresses and live traffic.", flush=True)
    workdir = ROOT / ".sandbox" / "demo"
    started = time.monotonic()
    failures = []
    with Sandbox.started(Path(workdir)) as sandbox:
        narrator = Narrator(sandbox, started)
        narrator.say("deploying iris v1 (4 pods)")
        sandbox.apply(sandbox.model_deployment(NAME, "v1"))
        status = narrator.follow(lambda s: s.get("phase") == "Healthy", 120)
        traffic = sandbox.start_traffic(NAME, 80)
        narrator.say("80 requests/s of traffic; declaring v2 (a retrained model)")
        sandbox.set_model(NAME, "v2")
        status = narrator.follow(lambda s: (s.get("phase") in ("Healthy", "RolledBack") and
                                 (s.get("stable") or {}).get("version") == "v2") or
                                 s.get("phase") == "RolledBack", 180)
        if (status.get("stable") or {}).get("version") != "v2":
            failures.append(f"v2 was not promoted: {status.get('message')}")
        narrator.say("declaring v3 (fails about a third of its requests)")
        sandbox.set_model(NAME, "v3")
        status = narrator.follow(lambda s: s.get("phase") in ("RolledBack", "Degraded") or
                                 (s.get("stable") or {}).get("version") == "v3", 180)
        if status.get("phase") != "RolledBack":
            failures.append(f"v3 was not rolled back: {status.get('message')}")
        time.sleep(2)
        narrator.say(f"requests answered per version: {traffic.counts()}")
        for entry in status.get("history", []):
            narrator.say(f"history: {entry['version']} {entry['outcome']}: {entry['reason'][:140]}")
    for failure in failures:
        print(f"make demo: {failure}", file=sys.stderr)
    print("make demo: done" + ("" if not failures else " with unexpected outcomes"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
