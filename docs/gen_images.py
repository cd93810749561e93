"""Generate the README's images from a sandbox run (`make docs-images`).

    PYTHONPATH=tests python docs/gen_images.py

Starts a sandbox of its own (`sandbox.serve up` in a temporary directory) and `modelgate
dashboard` on it, deploys the iris example v1, rolls out v2 and draws that rollout's decision
(promoted) with `modelgate plot` into docs/images/decision-plot.png, then rolls out the broken
v3 (it fails about a third of its requests, and is rolled back); a headless Chromium
(tests/support/browser.py) then takes docs/images/dashboard.png, the dashboard's page of that
ModelDeployment. Stops the browser, the dashboard and the sandbox whatever happens.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from support.browser import Chromium

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
BIN = Path(sys.executable).parent


def main() -> int:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print("make docs-images needs kubectl (the sandbox is driven with it)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="modelgate-docs-images-"))
    serve = [sys.executable, "-m", "sandbox.serve"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    subprocess.run([*serve, "up", "--workdir", str(workdir), "--traffic", "40"], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    dashboard = None
    try:
        env["KUBECONFIG"] = str(workdir / "kubeconfig")
        examples = workdir / "examples"

        def run(*args: str) -> None:
            subprocess.run(list(args), env=env, check=True, stdout=subprocess.DEVNULL)

        dashboard = subprocess.Popen([str(BIN / "modelgate"), "dashboard", "--port", "0",
                                      "--interval", "0.5"], env=env, stdout=subprocess.PIPE,
                                     text=True)
        assert dashboard.stdout is not None
        found = re.search(r"http://\S+/", dashboard.stdout.readline())
        if found is None:
            print("modelgate dashboard did not start", file=sys.stderr)
            return 1
        page = found.group(0) + "md/default/iris"

        run(kubectl, "apply", "-f", str(examples / "iris-v1.yaml"))
        run(kubectl, "wait", "md/iris", "--for=jsonpath={.status.phase}=Healthy",
            "--timeout=300s")
        run(kubectl, "apply", "-f", str(examples / "iris-v2.yaml"))
        IMAGES.mkdir(parents=True, exist_ok=True)
        plotted = subprocess.run([str(BIN / "modelgate"), "plot", "iris", "-o",
                                  str(IMAGES / "decision-plot.png"), "--interval", "0.5",
                                  "--timeout", "600"], env=env, check=False,
                                 capture_output=True, text=True)
        print(plotted.stdout.strip())
        if plotted.returncode != 0:  # v2 is promoted
            print(plotted.stderr, file=sys.stderr)
            return 1
        run(kubectl, "apply", "-f", str(examples / "iris-v3.yaml"))
        run(kubectl, "wait", "md/iris", "--for=jsonpath={.status.phase}=RolledBack",
            "--timeout=300s")
        screenshot(page, workdir / "browser")
        return 0
    finally:
        if dashboard is not None:
            dashboard.terminate()
            dashboard.wait(timeout=30)
        subprocess.run([*serve, "down", "--workdir", str(workdir)], env=env, check=False,
                       stdout=subprocess.DEVNULL)
        shutil.rmtree(workdir, ignore_errors=True)


def screenshot(page: str, workdir: Path) -> None:
    """docs/images/dashboard.png: the page once it shows v3 rolled back and its plot."""
    browser = Chromium(workdir, width=1100, height=900)
    try:
        browser.viewport(1100, 900)
        browser.open(page)
        browser.wait_for("the rollback in the history",
                         "/v3\\s+RolledBack/.test(document.querySelector('#history')?.innerText)"
                         " && document.querySelector('#plot')?.complete"
                         " && document.querySelector('#plot')?.naturalWidth > 0")
        browser.screenshot(IMAGES / "dashboard.png")
    finally:
        browser.close()
    print(IMAGES / "dashboard.png")


if __name__ == "__main__":
    sys.exit(main())
