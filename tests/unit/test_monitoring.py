"""The alert rules pass promtool's checks and its unit test; the dashboard queries metrics
that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "manifests" / "monitoring"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: `make tools` installs it (make test does)"
    return subprocess.run([tool, *args], cwd=MONITORING, capture_output=True, text=True,
                          timeout=60, check=False)


def test_the_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", "alerts.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 rules found" in result.stdout


def test_the_alert_rules_pass_their_promtool_unit_test() -> None:
    result = promtool("test", "rules", "alerts.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_queries_only_metrics_modelgate_exports() -> None:
    from modelgate import operator_metrics
    from modelgate_serving import metrics as serving_metrics

    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"]
               for target in panel.get("targets", [])]
    assert len(queries) >= 6
    exported = set(re.findall(r'"(modelgate_\w+)"', (
        Path(serving_metrics.__file__).read_text() + Path(operator_metrics.__file__).read_text())))
    for query in queries:
        for name in re.findall(r"\b(modelgate_\w+)", query):
            base = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert base in exported, f"{name} in {query!r} is not a modelgate metric"
