"""Seeing a rollout: `kubectl modelgate status --watch` in a real terminal (tmux), the same
watch in plain lines without one, `modelgate plot` following it, and the kubectl plugin's
conventions, all on one sandbox rollout of v1 -> v2 (kept to one: a rollout is most of this
file's cost)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.kubectl import Kubectl
from support.tapes import Arm, make_tape
from support.waiting import wait_for

from modelgate import control_annotations

# its own group: the rollout it watches is the longest test, and beside the other kubectl tests
# on one worker it was the suite's critical path
pytestmark = [pytest.mark.kubectl, pytest.mark.xdist_group("kubectl-watch")]

NAME = "watched"
TMUX = shutil.which("tmux")
BIN = Path(sys.executable).parent


class Terminal:
    """A tmux session of its own server (its own socket), 160x50."""

    def __init__(self, socket: Path, env: dict[str, str]) -> None:
        assert TMUX is not None
        self.base = [TMUX, "-S", str(socket)]
        subprocess.run([*self.base, "-f", "/dev/null", "new-session", "-d", "-s", "see",
                        "-x", "160", "-y", "50", "bash --norc --noprofile"],
                       env=env, check=True, timeout=30)

    def type(self, line: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "see", line, "Enter"], check=True,
                       timeout=30)

    def screen(self, history: bool = False) -> str:
        return subprocess.run([*self.base, "capture-pane", "-p", "-t", "see",
                               *(["-S", "-"] if history else [])], capture_output=True,
                              text=True, check=True, timeout=30).stdout

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], check=False, timeout=30)


@pytest.fixture
def plugin_env(sandbox_env: dict[str, str]) -> dict[str, str]:
    """The user's shell after `pip install modelgate`: kubectl-modelgate on PATH."""
    return {**sandbox_env, "PATH": f"{BIN}{os.pathsep}{sandbox_env.get('PATH', '')}",
            "TERM": "xterm-256color"}


@pytest.fixture
def terminal(tmp_path: Path, plugin_env: dict[str, str]) -> Iterator[Terminal]:
    if TMUX is None:
        if os.environ.get("CI"):
            pytest.fail("CI without tmux (make tools installs it)")
        pytest.skip("tmux is not installed (make tools installs it)")
    session = Terminal(tmp_path / "tmux.sock", plugin_env)
    try:
        yield session
    finally:
        session.close()


def example(env: dict[str, str], version: str, paused: bool = False) -> str:
    body = yaml.safe_load((Path(env["MODELGATE_SANDBOX"]) / "examples"
                           / f"iris-{version}.yaml").read_text())
    body["metadata"]["name"] = NAME
    if paused:
        body["metadata"]["annotations"] = {control_annotations.CONTROL_PAUSED: "true"}
    return yaml.safe_dump(body)


def test_a_rollout_watched_live_in_a_terminal_and_in_plain_lines_through_kubectl(
        plugin_env: dict[str, str], kubectl: Kubectl, terminal: Terminal,
        tmp_path: Path) -> None:
    plugin = Kubectl(plugin_env)
    kubectl("apply", "-f", "-", stdin=example(plugin_env, "v1"))
    try:
        kubectl("wait", f"md/{NAME}", "--for=jsonpath={.status.phase}=Healthy",
                "--timeout=180s")

        # kubectl finds the plugin on PATH
        listed = plugin("plugin", "list", check=False)
        assert str(BIN / "kubectl-modelgate") in listed.stdout, listed.stdout + listed.stderr

        # the namespace's list, and every namespace's with -A
        table = plugin("modelgate", "status").stdout
        assert re.search(r"^NAME\s+PHASE\s+STABLE\s+CANARY\s+WEIGHT\s+DECISION\s+AGE$", table,
                         re.M), table
        assert re.search(rf"^{NAME}\s+Healthy\s+v1\s+<none>", table, re.M), table
        everywhere = plugin("modelgate", "status", "-A").stdout
        assert re.search(rf"^default\s+{NAME}\s+Healthy\s+v1\s", everywhere, re.M), everywhere

        # -o json|yaml print the object as kubectl get does; --context/--kubeconfig choose
        config = plugin_env["KUBECONFIG"]
        context = json.loads(Path(config).read_text())["current-context"]
        as_json = json.loads(plugin("modelgate", "status", NAME, "-o", "json", "-n", "default",
                                    "--context", context, "--kubeconfig", config).stdout)
        from_kubectl = kubectl.json("get", "md", NAME)
        assert as_json["spec"] == from_kubectl["spec"]
        assert "managedFields" not in as_json["metadata"]
        as_yaml = yaml.safe_load(plugin("modelgate", "status", "-o", "yaml").stdout)
        assert as_yaml["kind"] == "List"
        assert NAME in [item["metadata"]["name"] for item in as_yaml["items"]]
        unknown = plugin("modelgate", "status", "--context", "no-such-context", check=False)
        assert unknown.returncode == 1
        assert "no-such-context" in unknown.stderr
        assert "Traceback" not in unknown.stderr
        gone = plugin("modelgate", "status", "no-such-md", "--watch", check=False)
        assert gone.returncode == 4, gone.stderr
        assert "no such ModelDeployment" in gone.stderr

        # analyze through the plugin, from a tape
        tape = tmp_path / "tape.jsonl"
        tape.write_text("\n".join(make_tape(Arm("1", pods=2, rate=120), Arm("2", pods=1,
                                                                            rate=60),
                                            seconds=600)) + "\n")
        spec = tmp_path / "spec.yaml"
        spec.write_text(example(plugin_env, "v2"))
        analyzed = plugin("modelgate", "analyze", "--spec", str(spec), "--tape", str(tape))
        assert json.loads(analyzed.stdout.splitlines()[-1])["decision"] in (
            "promote", "continue")

        # the rollout: watched on a terminal (tmux), in plain lines (a pipe) and for its plot,
        # all at once. v2 arrives paused, so every watcher is surely looking before a step
        # moves (a watch of a settled rollout would end at once, so they start after v2);
        # then the plugin resumes it
        kubectl("apply", "-f", "-", stdin=example(plugin_env, "v2", paused=True))
        terminal.type(f"kubectl modelgate status {NAME} --watch --interval 0.5; "
                      "echo EXIT=$?")
        plain_out = (tmp_path / "plain.log").open("w")
        plain = subprocess.Popen([str(BIN / "modelgate"), "status", NAME, "--watch",
                                  "--interval", "0.5", "--timeout", "400"],
                                 env=plugin_env, stdout=plain_out, stderr=subprocess.PIPE,
                                 text=True)
        plot_progress = (tmp_path / "plot.log").open("w")
        plotter = subprocess.Popen([str(BIN / "modelgate"), "plot", NAME, "-o",
                                    str(tmp_path / "decision.png"), "--interval", "0.5",
                                    "--timeout", "400"], env=plugin_env,
                                   stdout=subprocess.PIPE, stderr=plot_progress, text=True)
        try:
            wait_for("the live view of the paused canary", lambda: (
                "yes" if ", paused" in terminal.screen() else None))
            wait_for("the plain watch of the paused canary", lambda: (
                "yes" if ", paused" in (tmp_path / "plain.log").read_text() else None))
            wait_for("the plotter", lambda: (
                "yes" if "following the rollout" in (tmp_path / "plot.log").read_text()
                else None))
            plugin("modelgate", "resume", NAME)
            mid = wait_for("a step marked current in the live view", lambda: (
                screen if "▶" in (screen := terminal.screen()) and "canary v2" in screen
                else None))
            for part in ("Steps", "Pods", "Events", "1. setWeight 25%", "4. analysis"):
                assert part in mid, mid
            assert re.search(r"asked \d+%", mid), mid
            analysing = wait_for("metric verdicts with intervals and tolerance", lambda: (
                screen if re.search(r"error-rate\s+(pass|continue)\s.*\[.*\]\s+0\.03",
                                    screen := terminal.screen()) else None))
            assert "TOLERANCE" in analysing
            end = wait_for("the watch to end", lambda: (
                screen if re.search(r"^EXIT=\d", screen := terminal.screen(), re.M)
                else None), timeout=300)
            assert re.search(r"^EXIT=0$", end, re.M), end
            assert "ended: Healthy" in end
            assert "Promoted" in end  # the last Events
            assert re.search(rf"default/{NAME}\s+Healthy; stable v2", end), end
            # redrawn in place: one view in the whole scrollback, not one per update
            history = terminal.screen(history=True)
            assert history.count("Steps") == 1, history

            assert plain.wait(timeout=120) == 0, plain.stderr.read() if plain.stderr else ""
            # the live plot: every analysis the operator wrote, drawn when the rollout ended
            plotted, _ = plotter.communicate(timeout=120)
            progress = (tmp_path / "plot.log").read_text()
            assert plotter.returncode == 0, progress
            drawn = re.search(r": (\d+) analyses, Healthy", plotted)
            assert drawn, plotted + progress
            analyses = int(drawn.group(1))
            assert analyses >= 1, progress
            assert progress.count("analysis at") >= analyses  # a rewritten look counts once
            assert (tmp_path / "decision.png").stat().st_size > 10_000
        finally:
            for process in (plain, plotter):
                if process.poll() is None:
                    process.kill()
                    process.wait()
            plain_out.close()
            plot_progress.close()
        log = (tmp_path / "plain.log").read_text()
        assert "\x1b[" not in log  # no terminal codes in a log
        for fact in ("step 1/4 setWeight 25%", "pods canary", "metric error-rate",
                     "event Normal RolloutStarted", "event Normal Promoted",
                     "ended: Healthy: the declared version serves all traffic (exit 0)"):
            assert fact in log, log
        assert log.count("event Normal RolloutStarted") == 1  # each change once

        # the controls through the plugin keep the field manager Flux leaves alone
        paused = plugin("modelgate", "pause", NAME, "--wait", "0", "-o", "json")
        assert json.loads(paused.stdout)["metadata"]["annotations"][
            control_annotations.CONTROL_PAUSED] == "true"
        managed = kubectl.json("get", "md", NAME, "--show-managed-fields")
        owners = [entry["manager"] for entry in managed["metadata"]["managedFields"]
                  if f"f:{control_annotations.CONTROL_PAUSED}" in json.dumps(
                      entry.get("fieldsV1") or {})]
        assert owners == [control_annotations.FIELD_MANAGER]
        resumed = plugin("modelgate", "resume", NAME, "--wait", "0", "-o", "yaml")
        assert control_annotations.CONTROL_PAUSED not in (
            yaml.safe_load(resumed.stdout)["metadata"].get("annotations") or {})
    finally:
        kubectl("delete", "md", NAME, "--ignore-not-found", "--wait=false")
