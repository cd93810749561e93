"""Durations as a ModelDeployment writes them ("30s", "1m30s", "250ms", "1.5h") and as
messages print them.

The serving image reads the same form in its flags (`modelgate_serving.settings.parse_seconds`,
a copy because the image does not depend on the operator); tests/unit/test_one_of_each.py keeps
the two parsers equal.
"""

from __future__ import annotations

import re

UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
"""Every unit a duration may use, in seconds (the CRD's pattern allows exactly these)."""
DURATION_RE = re.compile(r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")
_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "30s", "1m30s", "250ms" or "1.5h"."""
    if not DURATION_RE.match(text):
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m or 1h30m")
    return sum(float(number) * UNIT_SECONDS[unit] for number, unit in _PART_RE.findall(text))


def format_seconds(seconds: float) -> str:
    """30 -> "30s", 90 -> "1m30s", 3600 -> "1h"; a fraction of a second stays in seconds."""
    whole = round(seconds)
    if abs(seconds - whole) > 1e-9 or whole == 0:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "",
             f"{secs}s" if secs else ""]
    return "".join(parts)
