"""What a Kubernetes API server (v1.32) does to a custom resource before it stores it, computed
from the CRD file itself: unknown fields found and pruned, structural defaults applied, the
openAPIV3Schema checked (jsonschema) and the `x-kubernetes-validations` CEL rules evaluated
(cel-python), with the errors in the API server's own words and field paths.

The sandbox's API server admits every write of a custom resource through `Admission.admit`;
tests of the operator's own validation can use it to ask "would a cluster have taken this?".

Order, as apiextensions-apiserver does it: decode (unknown fields are an error under
fieldValidation=Strict, a warning otherwise, and pruned either way), default, validate the
metadata name, validate the schema, then CEL, unless a schema error makes the object's shape
unreliable (a missing, mistyped, unsupported, too long or too many value: the API server then
reports "some validation rules were not checked").
"""

from __future__ import annotations

import copy
import dataclasses
import decimal
import functools
import itertools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import celpy
import jsonschema
import yaml
from celpy import celtypes

# field.ErrorType names as the API server puts them in a Status's causes[].reason, and the
# words it prints for each (k8s.io/apimachinery/pkg/util/validation/field/errors.go).
REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
TYPE_INVALID = "FieldValueTypeInvalid"
FORBIDDEN = "FieldValueForbidden"
DUPLICATE = "FieldValueDuplicate"
_WORDS = {REQUIRED: "Required value", INVALID: "Invalid value", NOT_SUPPORTED: "Unsupported value",
          TOO_LONG: "Too long", TOO_MANY: "Too many", TYPE_INVALID: "Invalid value",
          FORBIDDEN: "Forbidden", DUPLICATE: "Duplicate value"}
# errors whose value is not printed (ErrorBody in field/errors.go)
_NO_VALUE = {REQUIRED, FORBIDDEN, TOO_LONG}
# schema errors after which CEL is not run (hasBlockingErr in apiextensions-apiserver)
_BLOCKING = {REQUIRED, NOT_SUPPORTED, TOO_LONG, TOO_MANY, TYPE_INVALID}

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_UNCHECKED = ("some validation rules were not checked because the object was invalid; correct "
              "the existing errors to complete validation")


@dataclass(frozen=True)
class FieldError:
    """One entry of a Kubernetes field.ErrorList."""

    reason: str
    """One of the FieldValue* constants above."""
    field: str
    """Dotted path with [index], as the API server prints it; "<nil>" for the whole object."""
    detail: str = ""
    value: Any = dataclasses.field(default=None, compare=False)
    """The offending value (lists and maps too: not part of equality or hashing)."""
    layer: str = "schema"
    """"schema", "cel" or "metadata": which check found it (for tests; not sent)."""

    def body(self) -> str:
        """The message after the field, as field.Error.ErrorBody prints it."""
        words = _WORDS[self.reason]
        if self.reason not in _NO_VALUE:
            words += f": {_show(self.value)}"
        return f"{words}: {self.detail}" if self.detail else words

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:  # Go prints a nil value as the string "null"
        return '"null"'
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, sort_keys=True)


@dataclass
class Verdict:
    """The outcome of admitting one object."""

    obj: dict[str, Any]
    """The object as it would be stored: pruned and defaulted."""
    unknown_fields: list[str] = field(default_factory=list)
    """Paths of fields the schema does not declare (pruned from obj)."""
    errors: list[FieldError] = field(default_factory=list)


class Admission:
    """The admission of one CRD version's custom resources."""

    def __init__(self, crd: Mapping[str, Any], version: str | None = None) -> None:
        spec = crd["spec"]
        chosen = next(v for v in spec["versions"] if version in (None, v["name"]))
        self.kind: str = spec["names"]["kind"]
        self.group: str = spec["group"]
        self.schema: dict[str, Any] = chosen["schema"]["openAPIV3Schema"]
        self._validator = jsonschema.Draft4Validator(_as_json_schema(self.schema))

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}"

    # --- the whole admission ---------------------------------------------------------------

    def admit(self, obj: Mapping[str, Any]) -> Verdict:
        pruned = copy.deepcopy(dict(obj))
        unknown = list(prune(self.schema, pruned))
        verdict = Verdict(obj=self.default(pruned), unknown_fields=unknown)
        verdict.errors += self.metadata_errors(verdict.obj)
        schema_errors = self.schema_errors(verdict.obj)
        verdict.errors += schema_errors
        if any(error.reason in _BLOCKING for error in schema_errors):
            verdict.errors.append(FieldError(INVALID, "<nil>", _UNCHECKED, None, "cel"))
        else:
            verdict.errors += self.cel_errors(verdict.obj)
        return verdict

    # --- defaulting ------------------------------------------------------------------------

    def default(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A copy of obj with the CRD's defaults applied as the API server applies them: a
        default fills an absent field whose parent object is present, and is itself defaulted
        in turn."""
        result = copy.deepcopy(obj)
        _default_node(self.schema, result)
        return result

    # --- metadata, schema, CEL -------------------------------------------------------------

    @staticmethod
    def metadata_errors(obj: Mapping[str, Any]) -> list[FieldError]:
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            return [FieldError(REQUIRED, "metadata.name", "name or generateName is required",
                               layer="metadata")]
        if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
            return [FieldError(INVALID, "metadata.name", _DNS_SUBDOMAIN_MESSAGE, name,
                               "metadata")]
        return []

    def schema_errors(self, obj: Mapping[str, Any]) -> list[FieldError]:
        errors = [_from_jsonschema(error) for error in self._validator.iter_errors(obj)]
        return sorted(errors, key=lambda e: e.field)

    def cel_errors(self, obj: Mapping[str, Any]) -> list[FieldError]:
        errors: list[FieldError] = []
        _cel_node(self.schema, obj, "", errors)
        return errors

    def rules(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every CEL rule of the schema, with the schema path of the node that carries it."""

        def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
            for rule in node.get("x-kubernetes-validations", []):
                yield path, rule
            for key, prop in node.get("properties", {}).items():
                yield from walk(prop, f"{path}.{key}" if path else key)
            if "items" in node:
                yield from walk(node["items"], f"{path}[*]")

        yield from walk(self.schema, "")


# --- pruning ------------------------------------------------------------------------------------

def prune(schema: Mapping[str, Any], obj: dict[str, Any]) -> Iterator[str]:
    """Remove from obj (in place) every field the structural schema does not declare, yielding
    each one's path. apiVersion, kind and metadata of the root are the server's, never pruned."""
    for key in list(obj):
        if key in ("apiVersion", "kind", "metadata"):
            continue
        yield from _prune_field(schema, obj, key, key)


def _prune_field(schema: Mapping[str, Any], parent: dict[str, Any], key: str,
                 path: str) -> Iterator[str]:
    properties = schema.get("properties")
    if properties is not None and key not in properties and \
            not schema.get("x-kubernetes-preserve-unknown-fields") and \
            not isinstance(schema.get("additionalProperties"), dict):
        del parent[key]
        yield path
        return
    child_schema = (properties or {}).get(key) or schema.get("additionalProperties")
    if isinstance(child_schema, dict):
        yield from _prune_value(child_schema, parent[key], path)


def _prune_value(schema: Mapping[str, Any], value: Any, path: str) -> Iterator[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict) and (schema.get("properties") is not None
                                    or isinstance(schema.get("additionalProperties"), dict)):
        for key in list(value):
            yield from _prune_field(schema, value, key, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _prune_value(schema["items"], item, f"{path}[{index}]")


# --- defaulting ---------------------------------------------------------------------------------

def _default_node(node_schema: Mapping[str, Any], value: Any) -> None:
    """Defaults, as apiextensions-apiserver's defaulting does: a field that is null but not
    nullable gets its default, or is pruned when it has none
    (PruneNonNullableNullsWithoutDefaults), so `serving: null` is `serving: {}` defaulted."""
    if isinstance(value, dict):
        extra = node_schema.get("additionalProperties")
        for key in [key for key, item in value.items() if item is None]:
            prop = node_schema.get("properties", {}).get(key) or \
                (extra if isinstance(extra, dict) else None)
            if prop is not None and not prop.get("nullable") and "default" not in prop:
                del value[key]
        for key, prop in node_schema.get("properties", {}).items():
            if ("default" in prop and not prop.get("nullable")
                    and (key not in value or value[key] is None)):
                value[key] = copy.deepcopy(prop["default"])
            if key in value:
                _default_node(prop, value[key])
        extra = node_schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                _default_node(extra, value[key])
    elif isinstance(value, list) and "items" in node_schema:
        for item in value:
            _default_node(node_schema["items"], item)


# --- OpenAPI schema -----------------------------------------------------------------------------

@functools.cache
def _json_schema_cached(text: str) -> dict[str, Any]:
    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: convert(value) for key, value in node.items()
               if not key.startswith("x-kubernetes-") and key != "default"}
        if node.get("nullable") and "type" in node:
            out["type"] = [node["type"], "null"]
        return out

    converted: dict[str, Any] = convert(json.loads(text))
    converted.setdefault("properties", {})["metadata"] = {"type": "object"}
    return converted


def _as_json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The CRD schema as draft-4 JSON Schema (OpenAPI's `nullable` as a null type). Unknown
    fields are not this schema's business: `prune` finds them first."""
    return copy.deepcopy(_json_schema_cached(json.dumps(schema, sort_keys=True)))


def strict_json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The same, where objects that declare properties refuse others, for checking documents
    (status records, examples) against the schema in one pass."""

    def close(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                close(item)
        elif isinstance(node, dict):
            for value in node.values():
                close(value)
            if node.get("type") == "object" and "properties" in node and \
                    "additionalProperties" not in node:
                node["additionalProperties"] = False

    converted = _as_json_schema(schema)
    preserved = _preserving_paths(schema)
    close(converted)
    for path in preserved:  # x-kubernetes-preserve-unknown-fields keeps whatever it holds
        node = converted
        for key in path:
            node = node[key]
        node.pop("additionalProperties", None)
    return converted


def _preserving_paths(schema: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(schema, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            yield path
        for key, value in schema.items():
            yield from _preserving_paths(value, (*path, key))
    elif isinstance(schema, list):
        for index, item in enumerate(schema):
            yield from _preserving_paths(item, (*path, index))  # type: ignore[arg-type]


def dotted(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _from_jsonschema(error: jsonschema.ValidationError) -> FieldError:
    """A jsonschema error in the words kube-openapi's validator uses for the same check."""
    path = dotted(error.absolute_path)
    where = path or "<nil>"
    rule = error.validator
    limit = error.validator_value
    value = error.instance
    in_body = f"{path} in body"
    if rule == "required":
        return FieldError(REQUIRED, _join(path, error.message.split("'")[1]))
    if rule == "enum":
        return FieldError(NOT_SUPPORTED, where,
                          "supported values: " + ", ".join(_show(v) for v in limit), value)
    if rule == "type":
        wanted = limit[0] if isinstance(limit, list) else limit
        return FieldError(TYPE_INVALID, where, f"{in_body} must be of type {wanted}: "
                          f"{json.dumps(_json_type(value))}", _json_type(value))
    if rule == "pattern":
        return FieldError(INVALID, where, f"{in_body} should match '{limit}'", value)
    if rule == "maxLength":
        return FieldError(TOO_LONG, where, f"may not be more than {limit} bytes", value)
    if rule == "minLength":
        return FieldError(INVALID, where, f"{in_body} should be at least {limit} chars long",
                          value)
    if rule == "maxItems":
        return FieldError(TOO_MANY, where, f"must have at most {limit} items", len(value))
    if rule == "minItems":
        return FieldError(INVALID, where, f"{in_body} should have at least {limit} items",
                          value)
    if rule == "maxProperties":
        return FieldError(TOO_MANY, where, f"must have at most {limit} items", len(value))
    if rule in ("maximum", "minimum"):
        exclusive = error.schema.get(f"exclusive{rule.capitalize()}", False)
        relation = ("less than" if rule == "maximum" else "greater than") + \
            ("" if exclusive else " or equal to")
        return FieldError(INVALID, where, f"{in_body} should be {relation} {_show(limit)}",
                          value)
    if rule == "anyOf":
        return FieldError(INVALID, where, f"{in_body} must validate one and only one schema "
                          "(anyOf)", value)
    return FieldError(INVALID, where, f"{in_body}: {error.message}", value)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- CEL ---------------------------------------------------------------------------------------
# Kubernetes adds libraries to standard CEL (k8s.io/apiserver/pkg/cel/library) and takes
# duration() from Go; cel-python has neither, so the ones the CRD uses are here, with Go's and
# Kubernetes' semantics: isSorted (lists), isQuantity, quantity and compareTo (quantities), and
# duration() parsed as Go's time.ParseDuration does (integer nanoseconds, an error past
# about 292 years).

def _is_sorted(values: celtypes.ListType) -> celtypes.BoolType:
    """Kubernetes' CEL list library adds isSorted(); cel-python does not have it."""
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(values)))


_MAX_NANOS = (1 << 63) - 1
_GO_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
             "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_GO_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|µs|μs|ms|s|m|h)")


def go_duration_nanos(text: str) -> int:
    """Nanoseconds in a duration as Go's time.ParseDuration reads it (fractions truncated to
    the nanosecond); ValueError where Go returns an error."""
    body = text.lstrip("+-")
    negative = text.startswith("-")
    if body == "0":
        return 0
    if not body:
        raise ValueError(f"time: invalid duration {json.dumps(text)}")
    total, position = 0, 0
    while position < len(body):
        match = _GO_PART.match(body, position)
        if match is None or match.end() == position or not (match.group(1) or match.group(2)):
            raise ValueError(f"time: invalid duration {json.dumps(text)}")
        whole, fraction, unit = match.group(1), match.group(2) or "", match.group(3)
        scale = _GO_UNITS[unit]
        value = int(whole or "0")
        if value > (1 << 63) // scale:
            raise ValueError(f"time: invalid duration {json.dumps(text)}")
        nanos = value * scale
        if fraction.strip("0"):
            digits = int(fraction[:19])  # Go stops accumulating fraction digits near overflow
            nanos += int(float(digits) * (scale / 10 ** len(fraction[:19])))
        total += nanos
        if total > _MAX_NANOS + (1 if negative else 0):
            raise ValueError(f"time: invalid duration {json.dumps(text)}")
        position = match.end()
    return -total if negative else total


class GoDuration(celtypes.DurationType):
    """A CEL duration that keeps Go's nanoseconds (cel-python's rounds to microseconds)."""

    nanos: int

    @classmethod
    def of(cls, nanos: int) -> GoDuration:
        seconds, rest = divmod(nanos, 1_000_000_000)
        duration = cls(seconds, rest)
        duration.nanos = nanos
        return duration

    def _key(self, other: Any) -> tuple[int, int]:
        if not isinstance(other, GoDuration):
            raise TypeError(f"no such overload: {self!r} {type(self)} != {other!r} {type(other)}")
        return self.nanos, other.nanos

    def __lt__(self, other: Any) -> bool:
        a, b = self._key(other)
        return a < b

    def __le__(self, other: Any) -> bool:
        a, b = self._key(other)
        return a <= b

    def __gt__(self, other: Any) -> bool:
        a, b = self._key(other)
        return a > b

    def __ge__(self, other: Any) -> bool:
        a, b = self._key(other)
        return a >= b

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, GoDuration) and self.nanos == other.nanos

    def __ne__(self, other: Any) -> bool:
        return not self == other

    __hash__ = celtypes.DurationType.__hash__


def _duration(value: Any) -> GoDuration:
    if not isinstance(value, str):
        raise TypeError(f"no such overload: duration({type(value).__name__})")
    return GoDuration.of(go_duration_nanos(str(value)))


# A Kubernetes quantity (k8s.io/apimachinery/pkg/api/resource): the grammar of
# ParseQuantity (a whole decimal exponent), its value exact but capped at 2^63 - 1 in
# magnitude as ParseQuantity caps it, compared exactly.
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                       r"(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_QUANTITY_SUFFIX = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50,
                    "Ei": 2 ** 60, "n": Decimal("1e-9"), "u": Decimal("1e-6"),
                    "m": Decimal("1e-3"), "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9,
                    "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18}
_QUANTITY_CAP = Decimal((1 << 63) - 1)
_EXACT = decimal.Context(prec=4000, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


class Quantity:
    """A parsed quantity, as the value of quantity() in CEL."""

    def __init__(self, text: str) -> None:
        match = _QUANTITY.match(text)
        if match is None:
            raise ValueError("quantities must match the regular expression "
                             f"'{_QUANTITY.pattern}'")
        number, suffix = Decimal(match.group(1)), match.group(2) or ""
        if suffix[:1] in ("e", "E"):
            value = number.scaleb(int(suffix[1:]), _EXACT)
        else:
            value = _EXACT.multiply(number, Decimal(_QUANTITY_SUFFIX.get(suffix, 1)))
        self.value = max(-_QUANTITY_CAP, min(_QUANTITY_CAP, value))


def _is_quantity(text: Any) -> celtypes.BoolType:
    try:
        Quantity(str(text))
    except (ValueError, ArithmeticError):
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


def _quantity(text: Any) -> Quantity:
    return Quantity(str(text))


def _compare_to(left: Quantity, right: Quantity) -> celtypes.IntType:
    return celtypes.IntType((left.value > right.value) - (left.value < right.value))


_CEL_FUNCTIONS = {"isSorted": _is_sorted, "duration": _duration, "isQuantity": _is_quantity,
                  "quantity": _quantity, "compareTo": _compare_to}


@functools.cache
def cel_program(rule: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule), functions=_CEL_FUNCTIONS)


def _typed(node_schema: Mapping[str, Any], value: Any) -> Any:
    """value as the API server hands it to CEL: a `number` field is a double even when written
    as 1 (cel-python would make it an int, and 1 < 1.0 would not evaluate)."""
    if node_schema.get("type") == "number" and isinstance(value, int) and \
            not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        properties = node_schema.get("properties", {})
        extra = node_schema.get("additionalProperties")
        return {key: _typed(properties.get(key) or (extra if isinstance(extra, dict) else {}),
                            item) for key, item in value.items()}
    if isinstance(value, list):
        items = node_schema.get("items")
        return [_typed(items if isinstance(items, dict) else {}, item) for item in value]
    return value


_CEL_VERDICTS: dict[tuple[int, str], list[FieldError]] = {}
_CEL_VERDICTS_KEPT = 512


def _cel_node(node_schema: Mapping[str, Any], value: Any, path: str,
              errors: list[FieldError]) -> None:
    """The CEL errors of `value` (at `path`) and below. Rules see only their node's value (no
    oldSelf here), so the verdict on a field of the root (spec, status) is a function of its
    value and is remembered: a status write leaves the spec as it was, and evaluating its
    rules again with cel-python was a quarter of the sandbox API server's CPU."""
    if path or not isinstance(value, dict):
        _cel_evaluate(node_schema, value, path, errors)
        return
    _cel_rules(node_schema, value, path, errors)
    for key, prop in node_schema.get("properties", {}).items():
        if key not in value or not _has_rules(prop):
            continue
        remembered = (id(prop), json.dumps(value[key], sort_keys=True, default=str))
        found = _CEL_VERDICTS.get(remembered)
        if found is None:
            found = []
            _cel_evaluate(prop, value[key], key, found)
            if len(_CEL_VERDICTS) >= _CEL_VERDICTS_KEPT:
                _CEL_VERDICTS.clear()
            _CEL_VERDICTS[remembered] = found
        errors += [dataclasses.replace(error) for error in found]


def _has_rules(node_schema: Mapping[str, Any]) -> bool:
    if node_schema.get("x-kubernetes-validations"):
        return True
    extra = node_schema.get("additionalProperties")
    items = node_schema.get("items")
    return any(_has_rules(prop) for prop in node_schema.get("properties", {}).values()) or \
        (isinstance(items, dict) and _has_rules(items)) or \
        (isinstance(extra, dict) and _has_rules(extra))


def _cel_evaluate(node_schema: Mapping[str, Any], value: Any, path: str,
                  errors: list[FieldError]) -> None:
    _cel_rules(node_schema, value, path, errors)
    if isinstance(value, dict):
        for key, prop in node_schema.get("properties", {}).items():
            if key in value:
                _cel_evaluate(prop, value[key], _join(path, key), errors)
    elif isinstance(value, list) and "items" in node_schema:
        for index, item in enumerate(value):
            _cel_evaluate(node_schema["items"], item, f"{path}[{index}]", errors)


def _cel_rules(node_schema: Mapping[str, Any], value: Any, path: str,
               errors: list[FieldError]) -> None:
    rules = node_schema.get("x-kubernetes-validations", [])
    activation = {"self": celpy.json_to_cel(_typed(node_schema, value))} if rules else {}
    for rule in rules:
        where = (path + rule.get("fieldPath", "")).lstrip(".") or "<nil>"
        try:
            ok = bool(cel_program(rule["rule"]).evaluate(activation))
        except celpy.CELEvalError as exc:
            # As the API server reports a rule that fails to evaluate (an invalid duration or
            # quantity the schema also refuses): an Invalid error at the rule's node.
            cause = exc.args[2][0] if len(exc.args) > 2 and exc.args[2] else exc.args[0]
            errors.append(FieldError(INVALID, path or "<nil>",
                                     f"{cause} evaluating rule: {rule['rule']}",
                                     _json_type(value), "cel"))
            continue
        if not ok:
            reason = rule.get("reason", INVALID)
            errors.append(FieldError(reason if reason in _WORDS else INVALID, where,
                                     rule["message"], _json_type(value), "cel"))


# --- core kinds and the admission policy a test can switch on ------------------------------

_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_1035_MESSAGE = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")


def core_name_errors(kind: str, name: str) -> list[FieldError]:
    """What the API server's validation of a core kind says of its name: a Service's must be
    a DNS-1035 label (at most 63 characters), whatever its namespace allows otherwise."""
    if kind == "Service":
        if len(name) > 63:
            return [FieldError(INVALID, "metadata.name", "must be no more than 63 characters",
                               name, "metadata")]
        if not _DNS_1035.fullmatch(name):
            return [FieldError(INVALID, "metadata.name", _DNS_1035_MESSAGE, name, "metadata")]
    return []


REFUSALS_CONFIGMAP = "sandbox-admission-refusals"
"""A ConfigMap of this name in a namespace switches on admission refusals there: each data
value is a YAML object `{kind, verbs, name?, code?, message}`, and a write of that kind (and
name, if given) with one of those verbs is refused as a cluster's admission would refuse it:
code 403 (the default) as a validating webhook's denial, 422 as a ValidatingAdmissionPolicy's.
Deleting the ConfigMap switches them off. Only the sandbox has this; a real cluster has
webhooks and policies (and refuses alike)."""


@dataclass(frozen=True)
class Refusal:
    kind: str
    verbs: tuple[str, ...]
    message: str
    name: str | None = None
    code: int = 403

    def matches(self, kind: str, verb: str, name: str) -> bool:
        return kind == self.kind and verb in self.verbs and self.name in (None, name)

    def status(self, qualified_resource: str, name: str) -> dict[str, Any]:
        """The Status body the API server answers with."""
        if self.code == 422:
            message = (f'{qualified_resource} "{name}" is forbidden: ValidatingAdmissionPolicy '
                       f"'sandbox-refusals' with binding 'sandbox-refusals' denied request: "
                       f"{self.message}")
            reason = "Invalid"
        else:
            message = (f'admission webhook "refusals.sandbox.modelgate.dev" denied the '
                       f"request: {self.message}")
            reason = "Forbidden"
        return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": self.code}


def refusals(configmap: Mapping[str, Any] | None) -> list[Refusal]:
    """The refusals a REFUSALS_CONFIGMAP declares (an unreadable entry declares none)."""
    rules = []
    for text in ((configmap or {}).get("data") or {}).values():
        try:
            rule = yaml.safe_load(text)
            rules.append(Refusal(kind=str(rule["kind"]), verbs=tuple(rule["verbs"]),
                                 message=str(rule.get("message") or "refused by policy"),
                                 name=rule.get("name"), code=int(rule.get("code", 403))))
        except (yaml.YAMLError, KeyError, TypeError, ValueError):
            continue
    return rules
