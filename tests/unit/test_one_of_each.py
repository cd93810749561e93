"""Where the serving image keeps its own copy of something the operator also has (the image
must not depend on the operator package), these tests keep the copies equal."""

from __future__ import annotations

from enum import Enum

import pytest

from modelgate import settings as operator_settings
from modelgate.core import durations, types
from modelgate_serving import settings as serving_settings


@pytest.mark.parametrize("text", [
    "30s", "250ms", "1m30s", "1.5h", "2h15m", "0.002s", "1m1s1ms",
    "", "s", "30", "30 s", "-5s", "1d", "5us", "5µs", "1.s", ".5s", "1m 30s", "5S",
])
def test_the_serving_image_reads_durations_as_the_operator_does(text: str) -> None:
    try:
        expected: float | None = durations.parse_duration(text)
    except ValueError:
        expected = None
    if text.replace(".", "", 1).isdigit():
        # bare seconds: the server's flags also take them, a ModelDeployment never does
        assert expected is None
        assert serving_settings.parse_seconds(text) == float(text)
        return
    try:
        actual: float | None = serving_settings.parse_seconds(text)
    except serving_settings.SettingsError:
        actual = None
    assert actual == pytest.approx(expected) if expected is not None else actual is None


def test_both_parsers_know_the_same_units() -> None:
    assert serving_settings.DURATION_UNITS == durations.UNIT_SECONDS


class _Documented:
    plain: int = 1
    """One line."""
    wrapped: str = "x"
    """Two
    lines,   spaced   oddly."""
    undocumented: float = 0.5
    not_annotated = 3
    """A docstring under a plain assignment is not a field's."""
    last: bool = True
    """The last one."""


@pytest.mark.parametrize("cls", [_Documented, operator_settings.OperatorSettings,
                                 serving_settings.Settings], ids=lambda cls: cls.__name__)
def test_both_settings_doc_extractors_read_a_class_alike(cls: type) -> None:
    assert operator_settings.attribute_docs(cls) == serving_settings.attribute_docs(cls)


def test_the_doc_extractor_pairs_each_field_with_the_string_below_it() -> None:
    assert operator_settings.attribute_docs(_Documented) == {
        "plain": "One line.", "wrapped": "Two lines, spaced oddly.", "last": "The last one."}


def _members(enum: type[Enum]) -> dict[str, object]:
    return {member.name: member.value for member in enum}


@pytest.mark.parametrize(("operator_enum", "serving_enum"), [
    (types.ModelFormat, serving_settings.ModelFormat),
    (types.BatchingMode, serving_settings.BatchingMode),
], ids=["ModelFormat", "BatchingMode"])
def test_the_serving_image_knows_the_same_choices_as_the_crd(
        operator_enum: type[Enum], serving_enum: type[Enum]) -> None:
    assert _members(operator_enum) == _members(serving_enum)
