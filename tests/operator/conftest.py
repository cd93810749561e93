"""Sandbox tests: the real operator (`modelgate run`, a subprocess) against the emulated API
server, with real `modelgate-serve` processes as pods and real traffic. One sandbox serves the
whole module; every test uses its own ModelDeployment and deletes it at the end."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox import Sandbox

_names = itertools.count(1)


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox.started(Path(tmp_path_factory.mktemp("sandbox"))) as running:
        yield running


@pytest.fixture
def name(sandbox: Sandbox) -> Iterator[str]:
    """A fresh ModelDeployment name, deleted (with its children) after the test."""
    md_name = f"md{next(_names)}"
    yield md_name
    with contextlib.suppress(Exception):  # a test that failed early may have made nothing
        sandbox.delete(md_name)
