"""The `modelgate` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from modelgate import __version__, api, control, dashboard, plot, replay, watch
from modelgate.core import resource
from modelgate.k8s import ConfigError
from modelgate.k8s.viewer import Viewer
from modelgate.run import run_operator

KUBECTL_PROG = "kubectl modelgate"
"""The name the same commands answer to as a kubectl plugin (the `kubectl-modelgate` script);
as a plugin there is no `run` (the operator is not a kubectl command)."""


def _cluster_options(command: argparse.ArgumentParser, *, all_namespaces: bool = False,
                     output: bool = False) -> None:
    """kubectl's flags, meaning what they mean to kubectl."""
    command.add_argument("-n", "--namespace", default=None,
                         help="the namespace (default: the context's, else \"default\")")
    if all_namespaces:
        command.add_argument("-A", "--all-namespaces", action="store_true",
                             help="every namespace (without NAME)")
    command.add_argument("--context", default=None,
                         help="the kubeconfig context to use (default: the current one)")
    command.add_argument("--kubeconfig", default=None, metavar="FILE",
                         help="the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    if output:
        command.add_argument("-o", "--output", choices=control.OUTPUTS, default=None,
                             help="print the object(s) as json or yaml")


def kubectl_main() -> int:
    """`kubectl modelgate ...`: kubectl finds `kubectl-modelgate` on PATH and runs it."""
    return main(prog=KUBECTL_PROG)


def main(argv: Sequence[str] | None = None, prog: str = "modelgate") -> int:
    plugin = prog == KUBECTL_PROG
    parser = argparse.ArgumentParser(
        prog=prog,
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
    analyze.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                         help="also draw the decision: per metric, values and the effect's "
                         "interval over time against the tolerance (needs modelgate[plot])")

    plot_cmd = commands.add_parser(
        "plot", help="draw a live rollout's decision to a PNG",
        description="Follow NAME's rollout, recording each analysis the operator writes "
        "(status keeps only the last one, so start it when the rollout starts), and when "
        "it ends draw per metric the stable and canary values and the effect's interval "
        "over time against the tolerance, the steps and weights, and the decision with its "
        "reason. Exit codes as status --watch. Needs modelgate[plot] (matplotlib).")
    plot_cmd.add_argument("name", metavar="NAME")
    plot_cmd.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.png")
    plot_cmd.add_argument("-n", "--namespace", default=None,
                          help="the namespace (default: the context's, else \"default\")")
    plot_cmd.add_argument("--context", default=None, help="the kubeconfig context to use")
    plot_cmd.add_argument("--kubeconfig", default=None, metavar="FILE",
                          help="the kubeconfig file")
    plot_cmd.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                          help="how often to look (default 1)")
    plot_cmd.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                          help="draw what there is after this long (exit "
                          f"{watch.EXIT_TIMEOUT}); default: never")

    if not plugin:
        run = commands.add_parser(
            "run", help="run the operator",
            description="Run the operator against the cluster of $KUBECONFIG (or, in a pod, "
            "its service account). Settings come from MODELGATE_OPERATOR_* variables; see "
            "README.")
        run.add_argument("--standalone", action="store_true", default=None,
                         help="no kopf peering (one replica only); as "
                         "MODELGATE_OPERATOR_STANDALONE=true")

    exit_codes = "; ".join(f"{code} {words}" for code, words in watch.EXIT_CODES.items())
    status_cmd = commands.add_parser(
        "status", help="show where ModelDeployments stand and why; --watch follows one live",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="With NAME: phase, versions, weight, the last analysis per metric and "
        "recent history. Without: a table of the namespace's ModelDeployments (-A: of all "
        "namespaces).\n\nWith --watch, follow the rollout of NAME until it ends: a view "
        "redrawn in place on a terminal, a plain line per change otherwise (a CI log). "
        f"Exit codes of --watch: {exit_codes}.")
    status_cmd.add_argument("name", nargs="?", metavar="NAME")
    _cluster_options(status_cmd, all_namespaces=True, output=True)
    status_cmd.add_argument("-w", "--watch", action="store_true",
                            help="follow NAME's rollout until it ends (exit code: how)")
    status_cmd.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                            help="with --watch: how often to look (default 1)")
    status_cmd.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                            help=f"with --watch: give up after this long (exit "
                            f"{watch.EXIT_TIMEOUT}); default: never")

    dashboard_cmd = commands.add_parser(
        "dashboard", help="serve a read-only web page of the rollouts (localhost)",
        description="Serve a web page listing the namespace's ModelDeployments (-A: all) and, "
        "for each, its steps, weights, the last analysis per metric, the decision plot of its "
        "rollout and its history; the page updates itself. Read-only and without "
        "authentication: it listens on 127.0.0.1 unless --address says otherwise. Plots "
        "cover the analyses seen while it runs and need modelgate[plot].")
    _cluster_options(dashboard_cmd, all_namespaces=True)
    dashboard_cmd.add_argument("--address", default=dashboard.DEFAULT_ADDRESS,
                               help=f"the address to listen on (default "
                               f"{dashboard.DEFAULT_ADDRESS}: this machine only)")
    dashboard_cmd.add_argument("--port", type=int, default=dashboard.DEFAULT_PORT,
                               help=f"the port (default {dashboard.DEFAULT_PORT}; 0: any free "
                               "port)")
    dashboard_cmd.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                               help="how often to read the cluster and the page to update "
                               "(default 2)")

    for verb, text in control.VERBS.items():
        command = commands.add_parser(verb, help=text, description=text + ". Sets an "
                                      "annotation (never .spec) as the field manager "
                                      "\"modelgate\", then waits until the operator has "
                                      "acted and shows the outcome.")
        command.add_argument("name", metavar="NAME")
        _cluster_options(command, output=True)
        command.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                             help="how long to wait for the operator (default 60; 0: do not "
                             "wait)")

    args = parser.parse_args(argv)
    if args.command == "validate":
        return _validate(args.files)
    if args.command == "analyze":
        return _analyze(args.spec, args.tape, args.plot)
    if args.command == "run":
        return run_operator(standalone=args.standalone)
    target = control.Target(namespace=args.namespace,
                            all_namespaces=getattr(args, "all_namespaces", False),
                            context=args.context, kubeconfig=args.kubeconfig)
    try:
        if args.command == "status":
            return _status(parser, args, target)
        if args.command == "plot":
            return _plot(parser, args, target)
        if args.command == "dashboard":
            return _dashboard(parser, args, target)
        return control.request(args.command, target, args.name, args.wait, args.output)
    except ConfigError as exc:
        print(f"{prog} {args.command}: {exc}", file=sys.stderr)
        return 1


def _status(parser: argparse.ArgumentParser, args: argparse.Namespace,
            target: control.Target) -> int:
    if args.all_namespaces and (args.name or args.namespace):
        parser.error("status: -A lists every namespace; give neither NAME nor -n with it")
    if not args.watch:
        return control.show_status(target, args.name, args.output)
    if not args.name:
        parser.error("status --watch follows one rollout: give its NAME")
    if args.output:
        parser.error("status --watch draws a view; -o prints one snapshot (drop one of them)")
    if args.interval <= 0:
        parser.error("--interval must be more than 0 seconds")
    cluster, namespace = control.connect(target)
    try:
        return watch.watch(cluster, Viewer(), namespace, args.name, interval=args.interval,
                           timeout=args.timeout)
    except KeyboardInterrupt:
        return 130


def _plot(parser: argparse.ArgumentParser, args: argparse.Namespace,
          target: control.Target) -> int:
    if args.interval <= 0:
        parser.error("--interval must be more than 0 seconds")
    cluster, namespace = control.connect(target)
    try:
        story, code = watch.follow(cluster, namespace, args.name, interval=args.interval,
                                   timeout=args.timeout, progress=sys.stderr)
    except KeyboardInterrupt:
        return 130
    if code == watch.EXIT_GONE and not story.looks:
        print(f"modelgate plot: {namespace}/{args.name}: no such ModelDeployment",
              file=sys.stderr)
        return code
    try:
        plot.draw(story, args.output)
    except plot.PlotUnavailableError as exc:
        print(f"modelgate plot: {exc}", file=sys.stderr)
        return 2
    print(f"{args.output}: {len(story.looks)} analyses, "
          f"{watch.EXIT_CODES[code]} (exit {code})")
    return code


def _dashboard(parser: argparse.ArgumentParser, args: argparse.Namespace,
               target: control.Target) -> int:
    if args.all_namespaces and args.namespace:
        parser.error("dashboard: -A shows every namespace; drop -n")
    if args.interval <= 0:
        parser.error("--interval must be more than 0 seconds")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    cluster, namespace = control.connect(target)
    listed = None if args.all_namespaces else namespace
    board = dashboard.Dashboard(lambda: cluster.list_model_deployments(listed),
                                interval=args.interval,
                                where="all namespaces" if listed is None
                                else f"namespace {listed}")
    try:
        asyncio.run(_serve(board, args.address, args.port))
    except OSError as exc:
        print(f"modelgate dashboard: cannot listen on {args.address}:{args.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


async def _serve(board: dashboard.Dashboard, address: str, port: int) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    runner, poller, bound = await dashboard.start(board, address, port)
    print(f"modelgate dashboard: {dashboard.url(address, bound)} ({board.where}; read-only, "
          "no authentication; Ctrl-C stops it)", flush=True)
    try:
        await stopping.wait()
    finally:
        await dashboard.stop(runner, poller)


def _analyze(spec_path: Path, tape_path: Path, plot_path: Path | None = None) -> int:
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
    lines = []
    for line in replay.replay(spec, scrapes):
        lines.append(line)
        print(json.dumps(line, separators=(",", ":")), flush=True)
    if plot_path is not None:
        name = (documents[0].get("metadata") or {}).get("name", "?")
        try:
            declared = {metric.name: {
                "type": metric.type.value, "tolerance": metric.tolerance,
                "thresholdRange": None if metric.threshold is None else {
                    "min": metric.threshold.minimum, "max": metric.threshold.maximum}}
                for metric in spec.analysis.metrics}
            plot.draw(plot.from_replay(f"{name}, replayed from {tape_path.name}", declared,
                                       lines), plot_path)
        except plot.PlotUnavailableError as exc:
            print(f"modelgate analyze: {exc}", file=sys.stderr)
            return 2
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
