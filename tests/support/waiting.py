"""Waiting on a condition, the one way tests wait (never a fixed sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(what: str, condition: Callable[[], T | None], timeout: float = 240,
             every: float = 0.2) -> T:
    """Call `condition` every `every` seconds until it returns something truthy, and return
    that; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = condition()
        if seen:
            return seen
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}")
