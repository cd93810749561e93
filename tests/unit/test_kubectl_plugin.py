"""The kubectl plugin as it is installed: the `kubectl-modelgate` console script of the
package, and the krew manifest with its reproducible archive and the shim inside it. (The
plugin run by the real kubectl against the sandbox: tests/kubectl/test_see_rollout.py.)"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
KREW = ROOT / "plugins" / "krew"
sys.path.insert(0, str(KREW))
import build  # noqa: E402  (plugins/krew/build.py)


def test_the_package_installs_kubectl_modelgate() -> None:
    (script,) = [entry for entry in importlib.metadata.entry_points(group="console_scripts")
                 if entry.name == "kubectl-modelgate"]
    assert script.value == "modelgate.cli:kubectl_main"
    assert (Path(sys.executable).parent / "kubectl-modelgate").exists()


def test_the_krew_manifest_names_the_archive_it_would_install() -> None:
    plugin = yaml.safe_load((KREW / "modelgate.yaml").read_text())
    assert plugin["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert plugin["kind"] == "Plugin"
    assert plugin["metadata"]["name"] == "modelgate"
    spec = plugin["spec"]
    assert spec["version"] == "v" + importlib.metadata.version("modelgate")
    for key in ("homepage", "shortDescription", "description", "caveats"):
        assert spec[key]
    (platform,) = spec["platforms"]
    assert platform["bin"] == "kubectl-modelgate"
    assert platform["uri"].endswith("/kubectl-modelgate.tar.gz")
    assert build.main(["--check"]) == 0


def test_the_archive_is_reproducible_and_holds_an_executable_shim(tmp_path: Path) -> None:
    assert build.archive() == build.archive()
    (tmp_path / "a.tar.gz").write_bytes(build.archive())
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        (member,) = tar.getmembers()
        assert member.name == "kubectl-modelgate"
        assert member.mode == 0o755


def test_the_shim_runs_the_plugin_or_says_what_is_missing() -> None:
    shim = str(KREW / "kubectl-modelgate")
    ran = subprocess.run(["sh", shim, "--help"], env={"MODELGATE_PYTHON": sys.executable},
                         capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("usage: kubectl modelgate")
    missing = subprocess.run(["sh", shim, "status"], env={"MODELGATE_PYTHON": "false"},
                             capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 1
    assert "install it (pip install modelgate)" in missing.stderr
