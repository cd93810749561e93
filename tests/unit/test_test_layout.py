"""The suite's own layout: pytest imports test modules by their file name alone (rootdir-based
"prepend" import mode), so two test files with one name in different folders break collection
of the whole run. Caught here, in the unit tier, rather than by a full `make test`."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_has_a_name_of_its_own() -> None:
    by_name: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        by_name[path.name].append(str(path.relative_to(TESTS)))
    shared = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not shared, f"test modules sharing a name (rename one): {shared}"
