"""Prometheus text exposition -> core samples, through prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from modelgate.core.analysis.observations import Sample


class ExpositionError(ValueError):
    """Text that is not Prometheus exposition format."""


def parse_exposition(text: str) -> tuple[Sample, ...]:
    """Every sample in `text`, labels sorted so equal series compare equal."""
    try:
        return tuple(
            Sample(name=sample.name, labels=tuple(sorted(sample.labels.items())),
                   value=float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        )
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ExpositionError(f"not Prometheus text format: {exc}") from exc
