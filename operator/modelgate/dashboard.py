"""`modelgate dashboard`: a read-only web page of the ModelDeployments and their rollouts.

One aiohttp server (the HTTP library kopf already brings) serves server-rendered HTML and a
small inline script that polls a JSON endpoint of the same page, so the page follows the
rollouts without reloading. A poller reads the ModelDeployments every `interval` seconds (one
list call) and records each rollout's analyses as `modelgate plot` does (status keeps only
the last analysis, so a rollout's plot covers what the dashboard saw while it ran); the plot
is drawn server-side with the same code (modelgate.plot), as SVG, when it changed.

Read-only: every route is a GET; there are no controls and no authentication, so it listens
on 127.0.0.1 unless told otherwise. Nothing is fetched from any other address: the page
carries its own style and script (its Content-Security-Policy allows nothing else).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import html
import importlib.util
import logging
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from modelgate import plot, watch
from modelgate.k8s import ApiException

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 8090
_NONCE = web.RequestKey("nonce", str)
"""The nonce of a page's own style and script (its Content-Security-Policy allows those)."""
_NAME = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
"""A Kubernetes object or namespace name (DNS-1123); other paths are 404."""


# --- what the poller has seen --------------------------------------------------------------

@dataclass
class Entry:
    """One ModelDeployment: its last body and the story of its current (or last) rollout."""

    body: Mapping[str, Any]
    story: plot.Story | None = None
    rollout: tuple[Any, ...] | None = None
    """(canary version, startedAt) of the rollout `story` tells."""
    seen: set[Any] = field(default_factory=set)
    revision: int = 0
    """Bumped whenever `story` changes: the plot's cache key."""
    drawn: tuple[int, bytes] | None = None


def _key(body: Mapping[str, Any]) -> tuple[str, str]:
    metadata = body.get("metadata") or {}
    return str(metadata.get("namespace")), str(metadata.get("name"))


class Rollouts:
    """The ModelDeployments of the last successful read, and the rollouts seen so far."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Entry] = {}
        self.read_at: datetime.datetime | None = None
        self.error: str | None = None

    def update(self, bodies: Iterable[Mapping[str, Any]],
               now: datetime.datetime | None = None) -> None:
        fresh: dict[tuple[str, str], Entry] = {}
        for body in bodies:
            key = _key(body)
            entry = self.entries.get(key) or Entry(body=body)
            entry.body = body
            self._follow(entry, body)
            fresh[key] = entry
        self.entries = fresh
        self.read_at = now or datetime.datetime.now(tz=datetime.UTC)
        self.error = None

    @staticmethod
    def _follow(entry: Entry, body: Mapping[str, Any]) -> None:
        current = body.get("status") or {}
        canary = current.get("canary") or {}
        if canary:
            rollout = (canary.get("version"), canary.get("startedAt"))
            if rollout != entry.rollout:
                namespace, name = _key(body)
                stable = (current.get("stable") or {}).get("version", "-")
                entry.story = plot.Story(title=f"{namespace}/{name}: {stable} → "
                                               f"{canary.get('version')}")
                entry.rollout, entry.seen = rollout, set()
                entry.revision += 1
        if entry.story is None or entry.story.decision is not None:
            return
        if watch.record(entry.story, body, entry.seen):
            entry.revision += 1
        if not canary and watch.outcome(body) is not None:
            watch.conclude(entry.story, body)
            entry.revision += 1


# --- HTML ------------------------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


_PHASE_CLASS = {"Healthy": "ok", "Progressing": "busy", "Paused": "warn", "RolledBack": "bad",
                "Degraded": "bad"}
_OUTCOME_CLASS = {"Promoted": "ok", "RolledBack": "bad"}
_VERDICT_CLASS = {"pass": "ok", "fail": "bad", "continue": "busy", "no-data": "warn"}


def _phase(body: Mapping[str, Any]) -> str:
    return str((body.get("status") or {}).get("phase", "Pending"))


def _badge(text: str, kind: str) -> str:
    return f'<span class="badge {kind}">{_e(text)}</span>'


def _versions(body: Mapping[str, Any]) -> str:
    current = body.get("status") or {}
    stable = (current.get("stable") or {}).get("version", "none")
    canary = current.get("canary") or {}
    words = f"stable {_e(stable)}"
    if canary:
        words += (f", canary {_e(canary.get('version'))} at {_e(canary.get('weight', 0))}% "
                  f"(asked {_e(canary.get('desiredWeight', 0))}%)"
                  + (", paused" if canary.get("paused") else ""))
    return words


def _link(namespace: str, name: str) -> str:
    return f"/md/{_e(namespace)}/{_e(name)}"


def list_fragment(rollouts: Rollouts) -> str:
    """The table of every ModelDeployment."""
    if not rollouts.entries:
        return '<p class="note">No ModelDeployments.</p>'
    rows = []
    for (namespace, name), entry in sorted(rollouts.entries.items()):
        body = entry.body
        decision = ((body.get("status") or {}).get("analysis") or {}).get("decision")
        canary = (body.get("status") or {}).get("canary")
        rows.append(
            f'<tr><td><a href="{_link(namespace, name)}">{_e(namespace)}/<b>{_e(name)}</b></a>'
            f'</td><td>{_badge(_phase(body), _PHASE_CLASS.get(_phase(body), ""))}</td>'
            f'<td>{_versions(body)}'
            + (f"; last analysis {_e(decision)}" if canary and decision else "")
            + "</td></tr>")
    return ('<table class="list"><thead><tr><th>ModelDeployment</th><th>Phase</th>'
            "<th>Versions</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def detail_fragment(namespace: str, name: str, entry: Entry | None, can_plot: bool) -> str:
    """One ModelDeployment: versions, steps, the last analysis per metric, the plot of its
    rollout, its history."""
    if entry is None:
        return (f'<p class="note">{_e(namespace)}/{_e(name)} does not exist (yet): it shows '
                "here once it does.</p>")
    body = entry.body
    current = body.get("status") or {}
    phase = _phase(body)
    parts = [f'<h2 id="phase">{_badge(phase, _PHASE_CLASS.get(phase, ""))} '
             f'<span id="versions">{_versions(body)}</span></h2>',
             f'<p class="message">{_e(current.get("message", ""))}</p>']

    program = watch.steps(body)
    items = "".join(
        f'<li class="{mark}">{"✓ " if mark == "done" else "▶ " if mark == "current" else ""}'
        f"{_e(words)}</li>" for mark, words in program)
    parts.append('<section><h3>Steps</h3>'
                 + (f'<ol class="steps">{items}</ol>' if program else
                    '<p class="note">No steps: a new version would replace the stable one '
                    "at once.</p>") + "</section>")

    analysis = current.get("analysis") or {}
    rows = watch.metrics(body)
    if analysis and rows:
        cards = "".join(
            f'<div class="metric"><div class="metric-head"><b>{_e(row["name"])}</b> '
            f'{_badge(row["verdict"], _VERDICT_CLASS.get(row["verdict"], ""))}</div><dl>'
            f'<dt>stable</dt><dd>{_e(row["stable"])}</dd>'
            f'<dt>canary</dt><dd>{_e(row["canary"])}</dd>'
            f'<dt>effect [interval]</dt><dd>{_e(row["estimate"])}</dd>'
            f'<dt>tolerance</dt><dd>{_e(row["tolerance"])}</dd>'
            + (f'<dt>decision in</dt><dd>{_e(row["decision"])}</dd>' if row["decision"] else "")
            + "</dl></div>" for row in rows)
        when = analysis.get("time", "")
        parts.append(
            f'<section><h3>Last analysis: {_e(analysis.get("decision", "-"))}</h3>'
            f'<p class="note">{_e(when)}: {_e(analysis.get("reason", ""))}</p>'
            f'<div class="metrics">{cards}</div></section>')
    else:
        parts.append('<section><h3>Analysis</h3><p class="note">No analysis in status: '
                     "there is no canary, or it has not been judged yet.</p></section>")

    parts.append("<section><h3>Decision plot</h3>")
    story = entry.story
    if not can_plot:
        parts.append('<p class="note">Plots need matplotlib: pip install '
                     "'modelgate[plot]'.</p>")
    elif story is None or not story.looks:
        parts.append('<p class="note">No rollout with an analysis seen since the dashboard '
                     "started (the plot draws each analysis it sees while a canary runs).</p>")
    else:
        what = story.title + (f": {story.decision.decision}" if story.decision else
                              f": {len(story.looks)} analyses so far")
        parts.append(f'<p class="note">{_e(what)}</p><a href="{_link(namespace, name)}/plot.svg'
                     f'?r={entry.revision}"><img id="plot" src="{_link(namespace, name)}'
                     f'/plot.svg?r={entry.revision}" alt="decision plot of {_e(what)}"></a>')
    parts.append("</section>")

    history = list(reversed(current.get("history") or []))
    rows_html = "".join(
        f'<tr><td>{_e(item.get("at", ""))}</td><td>{_e(item.get("version", ""))}</td>'
        f'<td>{_badge(str(item.get("outcome", "")), _OUTCOME_CLASS.get(item.get("outcome"), ""))}'
        f'</td><td>{_e(item.get("reason", ""))}</td></tr>' for item in history)
    parts.append('<section><h3>History</h3>' + (
        f'<table id="history"><thead><tr><th>At</th><th>Version</th><th>Outcome</th>'
        f"<th>Why</th></tr></thead><tbody>{rows_html}</tbody></table>" if history else
        '<p class="note">No rollout has ended yet.</p>') + "</section>")
    return "".join(parts)


_STYLE = """
:root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --busy: #0969da;
  --warn: #9a6700; --line: #8884; }
* { box-sizing: border-box; }
body { font: 16px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 70rem;
  padding: 0.75rem; overflow-wrap: anywhere; }
header { display: flex; flex-wrap: wrap; gap: 0.25rem 1rem; align-items: baseline; }
header h1 { font-size: 1.3rem; margin: 0; }
a { color: var(--busy); }
h2 { font-size: 1.1rem; } h3 { font-size: 1rem; margin: 1.2rem 0 0.4rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.95rem; }
th, td { text-align: left; padding: 0.3rem 0.4rem; border-bottom: 1px solid var(--line);
  vertical-align: top; }
.badge { display: inline-block; padding: 0 0.45rem; border-radius: 0.6rem; color: #fff;
  background: #6e7781; font-size: 0.85rem; font-weight: 600; }
.badge, th { white-space: nowrap; overflow-wrap: normal; }
#history td:nth-child(-n+3) { white-space: nowrap; }
.badge.ok { background: var(--ok); } .badge.bad { background: var(--bad); }
.badge.busy { background: var(--busy); } .badge.warn { background: var(--warn); }
.note, .message, #updated { color: #6e7781; font-size: 0.9rem; }
#updated.stale { color: var(--bad); }
.steps li.current { font-weight: 700; } .steps li.done { color: #6e7781; }
.metrics { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 20rem), 1fr));
  gap: 0.6rem; }
.metric { border: 1px solid var(--line); border-radius: 0.4rem; padding: 0.5rem; }
.metric dl { display: grid; grid-template-columns: auto 1fr; gap: 0 0.6rem; margin: 0.3rem 0 0; }
.metric dt { color: #6e7781; } .metric dd { margin: 0; }
img { max-width: 100%; height: auto; border: 1px solid var(--line); background: #fff; }
@media (max-width: 40rem) {
  #history thead { display: none; }
  #history tr { display: block; border-bottom: 1px solid var(--line); padding: 0.3rem 0; }
  #history td { display: inline; border: 0; padding: 0 0.3rem 0 0; white-space: normal; }
  #history td:last-child { display: block; }
}
"""

_SCRIPT = """
(() => {
  const live = document.getElementById("live");
  const updated = document.getElementById("updated");
  let shown = live.dataset.revision;
  async function poll() {
    try {
      const response = await fetch(live.dataset.api, {cache: "no-store"});
      if (!response.ok) throw new Error(response.status + " " + response.statusText);
      const state = await response.json();
      if (state.revision !== shown) { live.innerHTML = state.html; shown = state.revision; }
      updated.textContent = state.updated;
      updated.classList.toggle("stale", Boolean(state.error));
    } catch (error) {
      updated.textContent = "cannot reach the dashboard (" + error.message + "); retrying";
      updated.classList.add("stale");
    }
    setTimeout(poll, Number(live.dataset.interval) * 1000);
  }
  setTimeout(poll, Number(live.dataset.interval) * 1000);
})();
"""


def page(title: str, fragment: str, api: str, interval: float, updated: str,
         nonce: str) -> str:
    """A whole page: `fragment` in <main id="live">, which the script replaces with the
    `html` of `api`'s JSON whenever its `revision` changes."""
    revision = _revision(fragment)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · modelgate</title><style nonce=\"{nonce}\">{_STYLE}</style>"
        '</head><body><header><h1><a href="/">modelgate</a> · '
        f'{_e(title)}</h1><span id="updated">{_e(updated)}</span></header>'
        f'<main id="live" data-api="{_e(api)}" data-interval="{interval:g}" '
        f'data-revision="{revision}">{fragment}</main>'
        '<footer class="note">Read-only: this page changes nothing in the cluster.</footer>'
        f'<script nonce="{nonce}">{_SCRIPT}</script></body></html>')


def _revision(fragment: str) -> str:
    return hashlib.sha256(fragment.encode()).hexdigest()[:16]


# --- the server ------------------------------------------------------------------------------

class Dashboard:
    """The web app and its poller. `read` lists the ModelDeployments to show (blocking: it
    runs in a thread); `interval` is seconds between reads."""

    def __init__(self, read: Callable[[], list[dict[str, Any]]], interval: float = 2.0,
                 where: str = "") -> None:
        self.read = read
        self.interval = interval
        self.where = where
        self.rollouts = Rollouts()
        self.can_plot = importlib.util.find_spec("matplotlib") is not None
        self._draw_lock = threading.Lock()  # pyplot keeps global state
        self._first_read = asyncio.Event()

    # the poller

    async def poll(self) -> None:
        while True:
            await self.read_once()
            await asyncio.sleep(self.interval)

    async def read_once(self) -> None:
        try:
            bodies = await asyncio.to_thread(self.read)
        except ApiException as exc:
            self.rollouts.error = f"cannot read ModelDeployments: {exc.status} {exc.reason}"
            log.warning("%s", self.rollouts.error)
        except Exception as exc:  # the API server unreachable: keep serving, say so
            self.rollouts.error = f"cannot read ModelDeployments: {' '.join(str(exc).split())}"
            log.warning("%s", self.rollouts.error)
        else:
            self.rollouts.update(bodies)
        self._first_read.set()

    def _updated(self) -> str:
        read_at = self.rollouts.read_at
        words = (f"{self.where}; read {read_at:%H:%M:%S} UTC" if read_at else
                 f"{self.where}; not read yet")
        return words + (f"; {self.rollouts.error}" if self.rollouts.error else "")

    # the routes

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_headers])
        app.router.add_get("/", self.list_page)
        app.router.add_get("/api/list", self.list_api)
        app.router.add_get(f"/md/{{namespace:{_NAME}}}/{{name:{_NAME}}}", self.detail_page)
        app.router.add_get(f"/api/md/{{namespace:{_NAME}}}/{{name:{_NAME}}}", self.detail_api)
        app.router.add_get(f"/md/{{namespace:{_NAME}}}/{{name:{_NAME}}}/plot.svg", self.plot_svg)
        return app

    async def _ready(self) -> None:
        await asyncio.wait_for(self._first_read.wait(), timeout=60)

    def _page(self, request: web.Request, title: str, fragment: str, api: str) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        request[_NONCE] = nonce
        return web.Response(text=page(title, fragment, api, self.interval, self._updated(),
                                      nonce), content_type="text/html")

    def _api(self, fragment: str, data: Any) -> web.Response:
        return web.json_response({"html": fragment, "revision": _revision(fragment),
                                  "updated": self._updated(), "error": self.rollouts.error,
                                  "data": data})

    async def list_page(self, request: web.Request) -> web.Response:
        await self._ready()
        return self._page(request, "ModelDeployments", list_fragment(self.rollouts),
                          "/api/list")

    async def list_api(self, request: web.Request) -> web.Response:
        data = [{"namespace": namespace, "name": name, "phase": _phase(entry.body),
                 "status": entry.body.get("status") or {}}
                for (namespace, name), entry in sorted(self.rollouts.entries.items())]
        return self._api(list_fragment(self.rollouts), data)

    def _detail(self, request: web.Request) -> tuple[str, str, Entry | None]:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        return namespace, name, self.rollouts.entries.get((namespace, name))

    async def detail_page(self, request: web.Request) -> web.Response:
        await self._ready()
        namespace, name, entry = self._detail(request)
        return self._page(request, f"{namespace}/{name}",
                          detail_fragment(namespace, name, entry, self.can_plot),
                          f"/api/md/{namespace}/{name}")

    async def detail_api(self, request: web.Request) -> web.Response:
        namespace, name, entry = self._detail(request)
        data = None if entry is None else {
            "phase": _phase(entry.body), "status": entry.body.get("status") or {},
            "analyses": len(entry.story.looks) if entry.story else 0}
        return self._api(detail_fragment(namespace, name, entry, self.can_plot), data)

    async def plot_svg(self, request: web.Request) -> web.Response:
        _, _, entry = self._detail(request)
        if entry is None or entry.story is None or not entry.story.looks or not self.can_plot:
            raise web.HTTPNotFound(text="no plot: no rollout with an analysis seen yet")
        if entry.drawn is None or entry.drawn[0] != entry.revision:
            revision = entry.revision
            svg = await asyncio.to_thread(self._draw, entry.story)
            entry.drawn = (revision, svg)
        return web.Response(body=entry.drawn[1], content_type="image/svg+xml",
                            headers={"Cache-Control": "no-cache"})

    def _draw(self, story: plot.Story) -> bytes:
        with self._draw_lock, tempfile.TemporaryDirectory(prefix="modelgate-plot-") as folder:
            path = Path(folder) / "plot.svg"
            plot.draw(story, path)
            return path.read_bytes()


@web.middleware
async def _headers(request: web.Request,
                   handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """Nothing but this server's own page, style, script and images; no framing."""
    response: web.StreamResponse = await handler(request)
    nonce = request.get(_NONCE)
    sources = f"'nonce-{nonce}'" if nonce else "'none'"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src {sources}; style-src {sources}; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def start(dashboard: Dashboard, address: str, port: int) -> tuple[web.AppRunner,
                                                                        asyncio.Task[None], int]:
    """Serve `dashboard` on address:port (0: any free port) and start its poller; the
    runner and task to stop, and the port it listens on."""
    runner = web.AppRunner(dashboard.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, address, port)
    await site.start()
    server = site._server  # aiohttp gives the bound port only through the server's sockets
    sockets = getattr(server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    task = asyncio.create_task(dashboard.poll(), name="modelgate-dashboard-poller")
    return runner, task, bound


async def stop(runner: web.AppRunner, task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await runner.cleanup()


def url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/"
