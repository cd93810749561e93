"""The image tests build with buildah, which serialises builds on its store: keep them on one
pytest-xdist worker (`--dist loadgroup`), so each image is built once per run."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("images"))
