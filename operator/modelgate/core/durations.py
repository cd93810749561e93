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


MAX_KUBERNETES_NANOSECONDS = (1 << 63) - 1
"""The longest duration Kubernetes reads (Go's time.Duration, about 292 years)."""
_UNIT_NANOSECONDS = {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
                     "h": 3_600_000_000_000}


def kubernetes_seconds(text: str) -> float:
    """Seconds in a duration as the API server's CEL rules read it (Go's time.ParseDuration):
    each part truncated to whole nanoseconds, so "0.0000000001s" is zero there and here.
    Raises ValueError past the longest duration Go can hold."""
    if not DURATION_RE.match(text):
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m or 1h30m")
    too_long = f"{text!r} is longer than Kubernetes durations allow (about 292 years)"
    total = 0
    for number, unit in _PART_RE.findall(text):
        whole, _, fraction = number.partition(".")
        scale = _UNIT_NANOSECONDS[unit]
        if int(whole) > (1 << 63) // scale:
            raise ValueError(too_long)
        total += int(whole) * scale
        if fraction.strip("0"):
            total += int(float(int(fraction[:19])) * (scale / 10 ** len(fraction[:19])))
        if total > MAX_KUBERNETES_NANOSECONDS:
            raise ValueError(too_long)
    return total / 1e9


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
