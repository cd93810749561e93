"""The `prometheus` provider: both arms' serving metrics, and custom queries, from a
Prometheus server's HTTP API (`POST /api/v1/query`).

**Built-in checks (error rate, latency, prediction distribution, accuracy).** One instant
query per round reads, for every ready serving pod of the ModelDeployment (the pod list comes
from the API, as for the pod scrape), the current value of every counted series of the serving
metrics (docs/architecture.md, contract 4):

    max by (__name__, pod, version, code, le, class, outcome, sha256) (
      {__name__=~"modelgate_(requests_total|...)", namespace="ns", pod=~`p1|p2|...`})

Each pod's series become one `PodScrape` of that pod's arm, and the operator folds them into
the analysis window exactly as it folds the pod scrape's readings: the same increase per pod
since the window began (a counter that drops was reset), summed per arm, over the same window
for both arms. So the judge sees counts, not rates, with their sample sizes, and decides as
it would from the pods themselves. The raw counters are read rather than `increase(...[w])`
because increase() extrapolates to the range's ends (a non-integer count, which a sample size
must not be), cannot know the window's start after an operator restart unless the operator
keeps it (it does, in status), and loses a pod deleted inside the window, whose last reading
the window keeps. `max by` drops the target labels a scrape configuration adds (job,
instance, container, ...) and collapses the same pod scraped by two jobs into one series.

The scrape configuration must give the series `namespace` and `pod` labels (a PodMonitor
does by default; see manifests/monitoring/). Arms are told apart by the pods' role label,
through the API's pod list, and the versions by the series' own `version` label.

**Custom metrics** (type prometheus): the query template with `{{version}}`, `{{interval}}`,
`{{namespace}}` and `{{name}}` replaced, read as one number for the canary (against a
thresholdRange) and, for a metric compared with stable (a tolerance instead), once more with
stable's version.

**Failure.** Prometheus unreachable, slow, answering an error, or without series for one arm
(a new canary not scraped yet) makes the round fail: "provider down", which holds and counts
against the error budget, never a rollback. A custom query Prometheus refuses (it does not
parse), or that returns several series, a range, NaN or an infinity, is that metric's error,
reported with the metric's name and field; it holds too. One deadline covers the round's
queries, which run concurrently, each distinct query once (the round's cache), so a
ModelDeployment makes at most 1 + (its distinct rendered custom queries) queries a round. Redirects
are not followed, bodies are bounded, and nothing of the credentials reaches a message.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import ssl
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from modelgate.core.analysis import PodScrape, Role, Sample
from modelgate.core.analysis.observations import COUNTED, MODEL_INFO
from modelgate.core.state import ScrapeResult
from modelgate.core.types import MetricType
from modelgate.k8s import PodAddress
from modelgate.providers import NO_AUTH, PrometheusAuth, Target
from modelgate.providers.podscrape import _run

MAX_BYTES = 8 * 1024 * 1024
"""A query's answer is at most a few hundred series of a ModelDeployment's pods; more is
not an answer to our query."""

KEPT_LABELS = ("version", "code", "le", "class", "outcome", "sha256")
"""The serving metrics' own labels that the window reads (model is the same on every pod)."""

SERIES = sorted(COUNTED | {MODEL_INFO})
POD_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
VARIABLE_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class QueryError(Exception):
    """A query Prometheus answered with an error, or with something that is not one number:
    the query's fault, not the server's."""


class UnavailableError(Exception):
    """Prometheus could not be asked or did not answer in time: the provider is down."""


@dataclass(frozen=True)
class Answer:
    """A successful query's result: its type and its items (vector samples, or a scalar)."""

    result_type: str
    result: Any


def prometheus_duration(seconds: float) -> str:
    """A duration in Prometheus' syntax: whole seconds, else milliseconds."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{max(round(seconds * 1000), 1)}ms"


def render(query: str, target: Target, *, stable: bool = False) -> str:
    """The query with its variables replaced, for the canary arm (or stable's version).
    api.parse has refused every other variable; one left here is reported as the metric's
    error."""
    values = {"version": target.stable_version if stable else target.canary_version,
              "name": target.name,
              "namespace": target.namespace,
              "interval": prometheus_duration(target.interval_seconds)}

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise QueryError(f"uses unknown variable {{{{{key}}}}}")
        return values[key]

    return VARIABLE_RE.sub(replace, query)


def serving_query(namespace: str, pods: Sequence[str]) -> str:
    """The one query of the built-in checks: every counted series of the given pods."""
    names = "|".join(re.escape(name.removeprefix("modelgate_")) for name in SERIES)
    # pod names are DNS subdomains: only '.' is special in a regular expression
    pod_re = "|".join(pod.replace(".", "\\.") for pod in pods)
    return (f"max by (__name__, pod, {', '.join(KEPT_LABELS)}) "
            f'({{__name__=~"modelgate_({names})", namespace="{namespace}", '
            f"pod=~`{pod_re}`}})")


class PrometheusProvider:
    """Reads both arms from a Prometheus server; see the module's docstring."""

    def __init__(self, address: str, timeout: float, concurrency: int = 16,
                 auth: PrometheusAuth = NO_AUTH, max_bytes: int = MAX_BYTES) -> None:
        self.address = address.rstrip("/")
        self.timeout = timeout
        self.concurrency = max(concurrency, 1)
        self.auth = auth
        self.max_bytes = max_bytes
        self.queries: list[str] = []
        """Every query sent, in order (the round's cache sends each distinct one once)."""

    # --- one round ----------------------------------------------------------------------

    def collect(self, pods: Sequence[PodAddress], port: int, t: float, *,
                target: Target | None = None) -> ScrapeResult:
        if target is None:
            return ScrapeResult(error="the prometheus provider needs the round's target")
        pods = [pod for pod in pods if POD_NAME_RE.match(pod.name)]
        if not pods:
            return ScrapeResult(error="no ready serving pods to read from Prometheus")
        try:
            headers = self._headers()
            context = self._ssl()
        except UnavailableError as exc:
            return ScrapeResult(error=str(exc))
        custom: dict[str, str] = {}
        stable_custom: dict[str, str] = {}
        custom_errors: dict[str, str] = {}
        for index, metric in enumerate(target.metrics):
            if metric.type is MetricType.PROMETHEUS and metric.query is not None:
                try:
                    custom[metric.name] = render(metric.query, target)
                    if metric.threshold is None:  # compared with the stable arm
                        stable_custom[metric.name] = render(metric.query, target, stable=True)
                except QueryError as exc:
                    custom_errors[metric.name] = self._field(metric.name, index, str(exc))
        builtin = serving_query(target.namespace, [pod.name for pod in pods])
        distinct = list(dict.fromkeys([builtin, *custom.values(), *stable_custom.values()]))
        answers = _run(self._ask_all(distinct, headers, context))
        serving = answers[builtin]
        if not isinstance(serving, Answer):
            return ScrapeResult(error=f"Prometheus at {self.address}: {serving}")
        try:
            scrapes = self._scrapes(serving, pods, t)
        except QueryError as exc:
            return ScrapeResult(error=f"Prometheus at {self.address}: {exc}")
        missing = {pod.role for pod in pods} - {scrape.role.value for scrape in scrapes}
        if missing:
            return ScrapeResult(error=(
                f"Prometheus at {self.address} has no serving metrics of the "
                f"{' and '.join(sorted(missing))} pods yet (not scraped yet, or the scrape "
                "configuration does not give them namespace and pod labels)"))
        values: dict[str, float] = {}
        stable_values: dict[str, float] = {}
        for index, metric in enumerate(target.metrics):
            if metric.name not in custom:
                continue
            try:
                for arm, queries, found in (("", custom, values),
                                            ("stable: ", stable_custom, stable_values)):
                    if metric.name not in queries:
                        continue
                    try:
                        value = _one_number(answers[queries[metric.name]])
                    except (QueryError, UnavailableError) as exc:
                        raise type(exc)(f"{arm}{exc}") from None
                    if value is not None:
                        found[metric.name] = value
            except (QueryError, UnavailableError) as exc:
                custom_errors[metric.name] = self._field(metric.name, index, str(exc))
                values.pop(metric.name, None)
                stable_values.pop(metric.name, None)
        return ScrapeResult(scrapes=scrapes, custom_values=values, stable_values=stable_values,
                            custom_errors=custom_errors)

    @staticmethod
    def _field(name: str, index: int, why: str) -> str:
        return f"metric {name} (spec.analysis.metrics[{index}].query): {why}"

    def _scrapes(self, answer: Answer, pods: Sequence[PodAddress], t: float
                 ) -> tuple[PodScrape, ...]:
        if answer.result_type != "vector" or not isinstance(answer.result, list):
            raise QueryError(f"answered a {answer.result_type} to an instant vector query")
        roles = {pod.name: Role(pod.role) for pod in pods}
        samples: dict[str, list[Sample]] = defaultdict(list)
        for item in answer.result:
            labels = item.get("metric") or {} if isinstance(item, Mapping) else {}
            pod = labels.get("pod")
            name = labels.get("__name__")
            if pod not in roles or not isinstance(name, str):
                continue
            value = _value(item)
            kept = tuple(sorted((key, str(labels[key])) for key in KEPT_LABELS
                                if key in labels))
            samples[pod].append(Sample(name=name, labels=kept, value=value))
        return tuple(PodScrape(t=t, role=roles[pod], pod=pod, samples=tuple(found))
                     for pod, found in sorted(samples.items()))

    # --- credentials --------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        addresses = {address.rstrip("/") for address in self.auth.token_addresses}
        if self.auth.token_file and self.address in addresses:
            try:
                with open(self.auth.token_file, encoding="utf-8") as file:
                    token = file.read().strip()
            except OSError as exc:
                raise UnavailableError(
                    "the bearer token file of MODELGATE_OPERATOR_PROMETHEUS_TOKEN_FILE cannot "
                    f"be read ({type(exc).__name__})") from None
            if token:
                headers["Authorization"] = f"Bearer {token}"
        return headers

    def _ssl(self) -> ssl.SSLContext | None:
        if not self.address.startswith("https://"):
            return None
        context = ssl.create_default_context()
        if self.auth.ca_file:
            try:
                context.load_verify_locations(cafile=self.auth.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise UnavailableError(
                    "the CA bundle of MODELGATE_OPERATOR_PROMETHEUS_CA_FILE cannot be read "
                    f"({type(exc).__name__})") from None
        return context

    # --- HTTP ---------------------------------------------------------------------------

    async def _ask_all(self, queries: Sequence[str], headers: Mapping[str, str],
                       context: ssl.SSLContext | None
                       ) -> dict[str, Answer | QueryError | UnavailableError]:
        self.queries.extend(queries)
        gate = asyncio.Semaphore(self.concurrency)
        connector = aiohttp.TCPConnector(limit=self.concurrency, force_close=True,
                                         ssl=context if context is not None else True)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                         trust_env=False) as session:
            tasks = [asyncio.ensure_future(self._ask(session, gate, query, headers))
                     for query in queries]
            # One deadline for the round: whatever has not finished by then is cancelled.
            done, pending = await asyncio.wait(tasks, timeout=self.timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        answers: dict[str, Answer | QueryError | UnavailableError] = {}
        for query, task in zip(queries, tasks, strict=True):
            if task not in done:
                answers[query] = UnavailableError(
                    f"no answer within {self.timeout:g} s (provider.timeout)")
                continue
            error = task.exception()
            if isinstance(error, QueryError | UnavailableError):
                answers[query] = error
            elif error is not None:
                answers[query] = UnavailableError(f"{type(error).__name__} asking a query")
            else:
                answers[query] = task.result()
        return answers

    async def _ask(self, session: aiohttp.ClientSession, gate: asyncio.Semaphore, query: str,
                   headers: Mapping[str, str]) -> Answer:
        url = f"{self.address}/api/v1/query"
        form = {"query": query, "timeout": prometheus_duration(max(self.timeout, 0.001))}
        async with gate:
            try:
                async with session.post(url, data=form, headers=dict(headers),
                                        allow_redirects=False) as response:
                    body = bytearray()
                    while chunk := await response.content.read(self.max_bytes + 1 - len(body)):
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise UnavailableError(f"an answer larger than {self.max_bytes} "
                                                   "bytes")
                    status = response.status
            except aiohttp.ClientError as exc:
                raise UnavailableError(f"{type(exc).__name__} reaching {url}") from None
        if 300 <= status < 400:
            raise UnavailableError(f"answered {status} (redirects are not followed)")
        if status in (401, 403):
            raise UnavailableError(f"answered {status}: not authorised (check the operator's "
                                   "bearer token and MODELGATE_OPERATOR_PROMETHEUS_TOKEN_"
                                   "ADDRESSES)")
        try:
            document = json.loads(bytes(body))
        except ValueError:
            raise UnavailableError(f"answered {status} with something that is not the "
                                   "Prometheus API's JSON") from None
        if not isinstance(document, Mapping):
            raise UnavailableError(f"answered {status} with something that is not the "
                                   "Prometheus API's JSON")
        if document.get("status") != "success":
            kind = str(document.get("errorType", ""))[:40]
            why = " ".join(str(document.get("error", "")).split())[:300]
            if kind in ("bad_data", "execution") or status in (400, 422):
                raise QueryError(f"Prometheus refused the query ({kind or status}): {why}")
            raise UnavailableError(f"answered {status} ({kind or 'error'}): {why}")
        data = document.get("data")
        if not isinstance(data, Mapping):
            raise UnavailableError("answered success without data")
        return Answer(result_type=str(data.get("resultType")), result=data.get("result"))


def _value(item: Any) -> float:
    try:
        return float(item["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return math.nan


def _one_number(answer: Answer | QueryError | UnavailableError) -> float | None:
    """The one number a custom query must return; None when it returns no series (no data
    yet); QueryError for several series, a range, NaN or an infinity (or the query's own
    error)."""
    if isinstance(answer, QueryError | UnavailableError):
        raise answer
    if answer.result_type == "scalar":
        value = _value({"value": answer.result})
    elif answer.result_type == "vector" and isinstance(answer.result, list):
        if not answer.result:
            return None
        if len(answer.result) > 1:
            raise QueryError(f"returned {len(answer.result)} series where one number is "
                             "expected; aggregate them (for example with sum(...) or "
                             "max(...))")
        value = _value(answer.result[0])
    else:
        raise QueryError(f"returned a {answer.result_type}, not one number; use an instant "
                         "vector or a scalar")
    if math.isnan(value):
        raise QueryError("returned NaN (for example 0/0 when there is no traffic), which "
                         "cannot be compared with thresholdRange")
    if math.isinf(value):
        raise QueryError(f"returned {'+' if value > 0 else '-'}Inf, which cannot be compared "
                         "with thresholdRange")
    return value
