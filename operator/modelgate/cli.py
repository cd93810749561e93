"""The `modelgate` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from modelgate import __version__, api, control, replay
from modelgate.core import resource
from modelgate.run import run_operator


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

    analyze = commands.add_parser(
        "analyze",
        help="judge recorded metrics offline, exactly as the operator would",
        description="Replay a tape of pod scrapes through the analysis of a ModelDeployment. "
        "Prints one JSON object per analysis interval and a final one with the decision. "
        "Exit 0 whatever the decision; non-zero only for unusable input.",
    )
    analyze.add_argument("--spec", type=Path, required=True, metavar="FILE.yaml",
                         help="a ModelDeployment whose analysis section is used")
    analyze.add_argument("--tape", type=Path, required=True, metavar="FILE.jsonl",
                         help='JSON Lines: {"t", "role", "pod", "text"} per scrape')

    run = commands.add_parser(
        "run", help="run the operator",
        description="Run the operator against the cluster of $KUBECONFIG (or, in a pod, its "
        "service account). Settings come from MODELGATE_OPERATOR_* variables; see README.")
    run.add_argument("--standalone", action="store_true", default=None,
                     help="no kopf peering (one replica only); as "
                     "MODELGATE_OPERATOR_STANDALONE=true")

    status_cmd = commands.add_parser(
        "status", help="show where ModelDeployments stand and why",
        description="Phase, versions, weight, the last analysis per metric and recent history.")
    status_cmd.add_argument("name", nargs="?", metavar="NAME")
    status_cmd.add_argument("-n", "--namespace", default="default")

    for verb, text in control.VERBS.items():
        command = commands.add_parser(verb, help=text, description=text + ". Sets an "
                                      "annotation (never .spec), then waits until the operator "
                                      "has acted and shows the outcome.")
        command.add_argument("name", metavar="NAME")
        command.add_argument("-n", "--namespace", default="default")
        command.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                             help="how long to wait for the operator (default 60; 0: do not "
                             "wait)")

    args = parser.parse_args(argv)
    if args.command == "validate":
        return _validate(args.files)
    if args.command == "analyze":
        return _analyze(args.spec, args.tape)
    if args.command == "run":
        return run_operator(standalone=args.standalone)
    if args.command == "status":
        return control.show_status(args.namespace, args.name)
    return control.request(args.command, args.namespace, args.name, args.wait)


def _analyze(spec_path: Path, tape_path: Path) -> int:
    try:
        documents = [doc for _, doc in _documents(spec_path)
                     if isinstance(doc, dict) and doc.get("kind") == resource.KIND]
        if not documents:
            raise ValueError(f"{spec_path}: no ModelDeployment found")
        spec = api.parse(documents[0])
        with tape_path.open(encoding="utf-8") as tape:
            scrapes = replay.read_tape(tape)
    except api.SpecError as exc:
        print(f"modelgate analyze: {spec_path}: invalid ModelDeployment: {exc}", file=sys.stderr)
        return 2
    except (OSError, yaml.YAMLError, ValueError) as exc:
        print(f"modelgate analyze: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    for line in replay.replay(spec, scrapes):
        print(json.dumps(line, separators=(",", ":")), flush=True)
    return 0


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
            if not isinstance(document, dict) or document.get("kind") != resource.KIND:
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
