"""One source of truth for what a valid spec is (issue 21): the CRD's verdict on a
ModelDeployment, as an API server computes it from the CRD file (schema, unknown fields under
kubectl's strict field validation, CEL rules: `sandbox.admission`), equals modelgate.api's.

Specs are generated from the CRD's own schema: `SchemaGenerator` walks the spec's
openAPIV3Schema (types, enums, bounds, patterns, required fields; strings from each pattern's
regular expression), drawing bounds often. Three in four are then turned into near misses: a
value swapped for one on or just past a bound, a field dropped, mistyped or misspelt, a
duration, step program, metric, baseline or resource that tests a cross-field rule. Seeded, so
a run is repeatable; every disagreement is printed with the spec and both verdicts.

Own generator rather than hypothesis-jsonschema: 0.23 does not run on the pinned hypothesis,
and hypothesis' engine costs more per spec than the 2,100 specs here can afford (the CEL rules
are evaluated by cel-python, about 10 ms a spec).
"""

from __future__ import annotations

import copy
import json
import random
import re
import string
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

import pytest
from support import crd

from modelgate import api

SEEDS = range(7)
PER_SEED = 300  # 2,100 specs in all, in seven tests that xdist can spread

# Values on or just past the CRD's bounds and the operator's cross-field rules.
DURATIONS = ["0s", "0ms", "1ms", "500ms", "0.5s", "1s", "4s", "5s", "5.0s", "6s", "10s", "29s",
             "30s", "30.001s", "1m", "1m30s", "5m", "30m", "1h", "1.5h", "0.0000000001s",
             "0.0000000019s", "2562047h", "2562048h", "5 s", "5", "-5s", ""]
NUMBERS = [-1, -0.0001, 0, 0.0001, 0.01, 0.2, 0.2001, 0.5, 0.9999, 1, 1.0, 1.5, 5, 50, 100, 101,
           1000, 1001, 1024, 1025, 65535, 65536, 1_000_000, 1_000_001, True, "1", None, [], {}]
STRINGS = ["", "x", "a" * 64, "A" * 64, "MODELGATE_X", "modelgate_x", "http://m/1", "https://m/1",
           "file:///m/1", "file:///models/iris/2/model.skops", "ftp://m", "https://u:p@h/m",
           "{{pod}}", "up{v='{{ version }}'}", "{{namespaces}}", "{{ name }}", "500m", "1Gi",
           "1e1.5", "512Mi", "prometheus", "podScrape", "joblib", "skops", "latency",
           "errorRate", "accuracy", "manual", "Never", "v1", "2", "models:/iris/7",
           "models:/iris@champion", "models:/iris/0", "models:/iris", "http://mlflow:5000",
           "production"]
QUANTITIES = ["1", 1, 0, "500m", "0.5", "1Gi", "1024Mi", "1e3", "2k", "1e1.5", "1.5Gi", "1e40",
              "1e30", "-1", ".5", "1E-3", "999999999999999999999"]
RESOURCE_NAMES = ["cpu", "memory", "nvidia.com/gpu"]
CHARACTERS = string.ascii_letters + string.digits + string.punctuation + " \t\né\u00a0"


class SchemaGenerator:
    """Random values of a structural schema, from a seeded random.Random."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def value(self, node: dict[str, Any]) -> Any:
        rng = self.rng
        if "enum" in node:
            return rng.choice(node["enum"])
        if "anyOf" in node:  # int-or-string: the node's own pattern applies to the string
            rest = {key: value for key, value in node.items() if key != "anyOf"}
            return self.value({**rest, **rng.choice(node["anyOf"])})
        kind = node.get("type")
        if kind == "object":
            properties = node.get("properties", {})
            if not properties and isinstance(node.get("additionalProperties"), dict):
                return {rng.choice(RESOURCE_NAMES): self.value(node["additionalProperties"])
                        for _ in range(rng.randint(0, 2))}
            required = set(node.get("required", []))
            return {key: self.value(prop) for key, prop in properties.items()
                    if key in required or rng.random() < 0.35}
        if kind == "array":
            count = rng.randint(node.get("minItems", 0), min(node.get("maxItems", 4), 4))
            return [self.value(node["items"]) for _ in range(count)]
        if kind == "integer":
            low, high = node.get("minimum", -5), node.get("maximum", 10**6)
            return rng.choice([low, high, rng.randint(low, min(high, low + 100)),
                               rng.randint(low, high)])
        if kind == "number":
            low, high = node.get("minimum", -10.0), node.get("maximum", 10.0)
            value = rng.choice([low, high, rng.uniform(low, high), round(rng.uniform(low, high),
                                                                        2)])
            if (value == low and node.get("exclusiveMinimum")) or \
                    (value == high and node.get("exclusiveMaximum")):
                value = (low + high) / 2
            return value
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "string":
            return self.string(node)
        raise AssertionError(f"a schema node the generator does not know: {node}")

    def string(self, node: dict[str, Any]) -> str:
        low, high = node.get("minLength", 0), node.get("maxLength", 64)
        if "pattern" not in node:
            return "".join(self.rng.choice(CHARACTERS) for _ in range(self.rng.randint(low, 12)))
        for _ in range(20):
            text = self.regex(sre_parse.parse(node["pattern"]))
            if low <= len(text) <= high and re.search(node["pattern"], text):
                return text
        raise AssertionError(f"no string of {node['pattern']!r} in 20 tries")

    def regex(self, parsed: Any) -> str:
        return "".join(self._piece(op, arg) for op, arg in parsed)

    def _piece(self, op: Any, arg: Any) -> str:
        rng = self.rng
        if op is sre.LITERAL:
            return chr(arg)
        if op is sre.AT:
            return ""
        if op is sre.ANY:
            return rng.choice(CHARACTERS.replace("\n", ""))
        if op is sre.IN:
            return rng.choice([c for c in CHARACTERS if _in_class(arg, c)])
        if op is sre.NOT_LITERAL:
            return rng.choice([c for c in CHARACTERS if ord(c) != arg])
        if op is sre.BRANCH:
            return self.regex(rng.choice(arg[1]))
        if op is sre.SUBPATTERN:
            return self.regex(arg[3])
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, high, inner = arg
            high = low + 6 if high is sre.MAXREPEAT else high
            count = rng.choice([low, min(high, low + 1), rng.randint(low, high)])
            return "".join(self.regex(inner) for _ in range(count))
        raise AssertionError(f"a regular expression construct the generator does not know: {op}")


_CATEGORIES = {sre.CATEGORY_DIGIT: r"\d", sre.CATEGORY_NOT_DIGIT: r"\D",
               sre.CATEGORY_SPACE: r"\s", sre.CATEGORY_NOT_SPACE: r"\S",
               sre.CATEGORY_WORD: r"\w", sre.CATEGORY_NOT_WORD: r"\W"}


def _in_class(items: list[tuple[Any, Any]], char: str) -> bool:
    negate = bool(items) and items[0][0] is sre.NEGATE
    found = False
    for op, arg in items[1:] if negate else items:
        if op is sre.LITERAL:
            found |= ord(char) == arg
        elif op is sre.RANGE:
            found |= arg[0] <= ord(char) <= arg[1]
        elif op is sre.CATEGORY:
            found |= re.fullmatch(_CATEGORIES[arg], char) is not None
    return found != negate


# --- near misses ----------------------------------------------------------------------------

def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


def _section(spec: dict[str, Any], *keys: str) -> dict[str, Any] | None:
    node: Any = spec
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.setdefault(key, {})
    return node if isinstance(node, dict) else None


def near_miss(rng: random.Random, spec: dict[str, Any]) -> dict[str, Any]:
    """spec with one to three small changes, each of which may break a rule."""
    spec = copy.deepcopy(spec)
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["value", "value", "drop", "unknown", "duration", "duration",
                           "steps", "metric", "baseline", "resources", "env"])
        paths = _paths(spec)
        if kind in ("value", "drop", "unknown") and paths:
            path = rng.choice(paths)
            parent = _get(spec, path[:-1])
            if kind == "drop":
                del parent[path[-1]]
            elif kind == "unknown" and isinstance(parent, dict):
                parent[f"{path[-1]}x"] = 1
            elif kind == "value":
                parent[path[-1]] = copy.deepcopy(rng.choice(NUMBERS + STRINGS + DURATIONS))
        elif kind == "duration":
            where = rng.choice([("analysis", "interval"), ("analysis", "maxDuration"),
                                ("analysis", "provider", "timeout"), ("rollout", "interval")])
            node = _section(spec, *where[:-1])
            if node is not None:
                node[where[-1]] = rng.choice(DURATIONS)
        elif kind == "steps" and (rollout := _section(spec, "rollout")) is not None:
            for key in ("stepWeight", "maxWeight", "interval"):
                rollout.pop(key, None)
            rollout["steps"] = [rng.choice([
                {"setWeight": rng.choice([0, 10, 50, 100])}, {"analysis": {}},
                {"analysis": {"maxDuration": rng.choice(DURATIONS)}}, {"pause": {}},
                {"pause": {"duration": "1m"}}]) for _ in range(rng.randint(1, 4))]
        elif kind == "metric" and (analysis := _section(spec, "analysis")) is not None:
            metric: dict[str, Any] = {
                "name": rng.choice(["m", "n"]),
                "type": rng.choice(["errorRate", "latency", "accuracy", "prometheus",
                                    "predictionDistribution"])}
            for key, values in (("tolerance", [0, 0.5, 0.99, 1, 5]), ("quantile", [0.5, 0.99]),
                                ("query", ["up", "{{pod}}", "x{{ version }}{{interval}}",
                                           "{{namespace}}{{names}}", "{{ intervals }}"]),
                                ("thresholdRange", [{"max": 1}, {"min": 2, "max": 1}])):
                if rng.random() < 0.4:
                    metric[key] = rng.choice(values)
            metrics = analysis.get("metrics")
            analysis["metrics"] = [*(metrics[:1] if isinstance(metrics, list) else []), metric]
            if rng.random() < 0.5:
                analysis["provider"] = {"type": "prometheus", "address": "http://p:9090"}
        elif kind == "baseline":
            model = spec.get("model") if isinstance(spec.get("model"), dict) else {}
            baseline = {"version": rng.choice(["1", str(model.get("version"))]),
                        "uri": rng.choice([str(model.get("uri")), "file:///m/1"])}
            if rng.random() < 0.5:
                baseline["sha256"] = rng.choice([str(model.get("sha256", "a" * 64)), "b" * 64])
            spec["baseline"] = baseline
        elif kind == "resources" and (serving := _section(spec, "serving")) is not None:
            serving["resources"] = {"requests": {"cpu": rng.choice(QUANTITIES)},
                                    "limits": {"cpu": rng.choice(QUANTITIES)}}
        elif kind == "env" and (serving := _section(spec, "serving")) is not None:
            serving["env"] = [{"name": rng.choice(["A", "MODELGATE_X", "modelGate_x",
                                                   "MODELGATEX"]), "value": "1"}]
    return spec


def generate(seed: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    generator = SchemaGenerator(rng)
    spec_schema = crd.schema()["properties"]["spec"]
    objects = []
    for _ in range(count):
        spec = generator.value(spec_schema)
        if rng.random() < 0.75:
            spec = near_miss(rng, spec)
        # valid names mostly; near misses: too long, dotted, digit-led, a trailing '-'
        name = rng.choice(["iris", "m" * 52, "a", "iris-v2"]) if rng.random() < 0.8 \
            else rng.choice(["m" * 53, "a-b.c", "2iris", "iris-"])
        objects.append({"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelDeployment",
                        "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    return objects


# --- the two verdicts -------------------------------------------------------------------------

def crd_verdict(obj: dict[str, Any]) -> list[str]:
    """What the API server says about a create of obj: [] when it stores it."""
    verdict = crd.admission().admit(obj)
    return [f'unknown field "{path}"' for path in verdict.unknown_fields] + \
        [str(error) for error in verdict.errors]


def api_verdict(obj: dict[str, Any]) -> list[str]:
    """What the operator says about obj as the API server hands it over (defaulted)."""
    try:
        api.parse(crd.apply_defaults(obj))
    except api.SpecError as error:
        return error.problems
    return []


@pytest.mark.parametrize("seed", SEEDS)
def test_the_crd_and_modelgate_api_agree_on_generated_specs(seed: int) -> None:
    disagreements, admitted = [], 0
    for index, obj in enumerate(generate(seed, PER_SEED)):
        by_crd, by_api = crd_verdict(obj), api_verdict(obj)
        admitted += not by_crd
        if bool(by_crd) != bool(by_api):
            disagreements.append(
                f"--- seed {seed}, spec {index}, metadata.name {obj['metadata']['name']!r}:\n"
                f"{json.dumps(obj['spec'], indent=2, sort_keys=True)}\n"
                f"CRD (API server): {by_crd or 'admitted'}\n"
                f"modelgate.api: {by_api or 'valid'}")
    assert not disagreements, f"{len(disagreements)} of {PER_SEED} specs judged differently:\n" \
        + "\n".join(disagreements[:5])
    # Both kinds in numbers, or the comparison says little.
    assert PER_SEED // 20 <= admitted <= PER_SEED - PER_SEED // 20, admitted


def test_the_generator_draws_from_the_crd_schema() -> None:
    """Without near misses every generated spec passes the schema layer (CEL may refuse)."""
    generator = SchemaGenerator(random.Random(99))
    spec_schema = crd.schema()["properties"]["spec"]
    for _ in range(200):
        obj = {"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelDeployment",
               "metadata": {"name": "iris"}, "spec": generator.value(spec_schema)}
        assert crd.schema_problems(crd.apply_defaults(obj)) == []


def test_the_operator_reads_durations_as_the_api_servers_cel_does() -> None:
    from sandbox.admission import go_duration_nanos

    from modelgate.core.durations import kubernetes_seconds

    for text in [d for d in DURATIONS if api.DURATION_RE.match(d)] + ["1.9999999999s", "1h1h"]:
        try:
            nanos = go_duration_nanos(text)
        except ValueError:
            with pytest.raises(ValueError, match="longer than Kubernetes durations allow"):
                kubernetes_seconds(text)
        else:
            assert kubernetes_seconds(text) == nanos / 1e9, text
