"""Generate the README's images from a sandbox run (`make docs-images`).

    PYTHONPATH=tests python docs/gen_images.py

Starts a sandbox of its own (`sandbox.serve up` in a temporary directory), deploys the iris
example v1, then the broken v3 (it fails about a third of its requests), and draws that
rollout's decision with `modelgate plot` into docs/images/decision-plot.png; stops the
sandbox whatever happens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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
    try:
        env["KUBECONFIG"] = str(workdir / "kubeconfig")
        examples = workdir / "examples"

        def run(*args: str) -> None:
            subprocess.run(list(args), env=env, check=True, stdout=subprocess.DEVNULL)

        run(kubectl, "apply", "-f", str(examples / "iris-v1.yaml"))
        run(kubectl, "wait", "md/iris", "--for=jsonpath={.status.phase}=Healthy",
            "--timeout=300s")
        run(kubectl, "apply", "-f", str(examples / "iris-v3.yaml"))
        IMAGES.mkdir(parents=True, exist_ok=True)
        plotted = subprocess.run([str(BIN / "modelgate"), "plot", "iris", "-o",
                                  str(IMAGES / "decision-plot.png"), "--interval", "0.5",
                                  "--timeout", "600"], env=env, check=False,
                                 capture_output=True, text=True)
        print(plotted.stdout.strip())
        if plotted.returncode != 1:  # v3 is rolled back
            print(plotted.stderr, file=sys.stderr)
            return 1
        return 0
    finally:
        subprocess.run([*serve, "down", "--workdir", str(workdir)], env=env, check=False,
                       stdout=subprocess.DEVNULL)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
