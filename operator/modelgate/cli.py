"""The `modelgate` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from modelgate import __version__, api


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="modelgate",
        description="Progressive delivery of scikit-learn models on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"modelgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="check ModelDeployment files the way the operator reads them",
        description="Check every ModelDeployment in the given YAML files with the same code the "
        "operator uses, and print each problem with its field. Exit 1 if any is invalid.",
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")

    args = parser.parse_args(argv)
    handlers = {"validate": lambda: _validate(args.files)}
    return handlers[args.command]()


def _documents(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        for index, document in enumerate(yaml.safe_load_all(stream)):
            if document is not None:
                yield f"{path}#{index}", document


def _validate(files: Sequence[Path]) -> int:
    invalid = 0
    checked = 0
    for path in files:
        try:
            documents = list(_documents(path))
        except (OSError, yaml.YAMLError) as exc:
            print(f"{path}: cannot read: {exc}", file=sys.stderr)
            invalid += 1
            continue
        for where, document in documents:
            if not isinstance(document, dict) or document.get("kind") != api.KIND:
                continue
            checked += 1
            name = (document.get("metadata") or {}).get("name", "?")
            try:
                api.parse(document)
            except api.SpecError as exc:
                invalid += 1
                print(f"{where} {name}: invalid", file=sys.stderr)
                for problem in exc.problems:
                    print(f"  {problem}", file=sys.stderr)
            else:
                print(f"{where} {name}: valid")
    if checked == 0:
        print("no ModelDeployment found", file=sys.stderr)
        return 1
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
