"""Both images, built here with buildah on a debootstrap base (`make images` without Docker),
then run with `buildah run --isolation chroot`, whose host network puts a server in the
container on loopback. Each image is built once per session; buildah's layer cache and the
cached base make a rebuild of unchanged sources take seconds."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from sandbox.emulator import EmulatedCluster
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from support import images
from support.processes import stop_group
from support.serving import free_port, save_skops

_MISSING = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]

pytestmark = [
    pytest.mark.images,
    pytest.mark.xdist_group("images"),  # one worker: each image built once per run
    # a developer's machine without the tools skips; CI (which runs `make tools`) never does
    pytest.mark.skipif(bool(_MISSING) and not os.environ.get("CI"),
                       reason="needs buildah and debootstrap (`make tools` installs them)"),
]


@pytest.fixture(autouse=True, scope="module")
def _tools_present_in_ci() -> None:
    if _MISSING:
        pytest.fail(f"CI without {', '.join(_MISSING)}: `make tools` installs them")
ROOT = Path(__file__).resolve().parents[2]
NONROOT = "65532"


@pytest.fixture(scope="session")
def serving_image() -> str:
    return images.build(images.IMAGES["serving"])


@pytest.fixture(scope="session")
def operator_image() -> str:
    return images.build(images.IMAGES["operator"])


@contextlib.contextmanager
def container(image: str) -> Iterator[str]:
    name = subprocess.run(["buildah", "from", "--pull-never", image], capture_output=True,
                          text=True, check=True).stdout.strip()
    try:
        yield name
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True, check=False)


def run(name: str, *command: str, volumes: tuple[str, ...] = (),
        env: dict[str, str] | None = None) -> list[str]:
    args = ["buildah", "run", "--isolation", "chroot"]
    for volume in volumes:
        args += ["--volume", volume]
    for key, value in (env or {}).items():
        args += ["--env", f"{key}={value}"]
    return [*args, name, "--", *command]


@contextlib.contextmanager
def background(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process
    finally:
        stop_group(process, grace=15)


def poll(check: Any, timeout: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            result = check()
            if result:
                return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; log:\n{log.read_text()[-3000:]}")


def configured_user(image: str) -> str:
    inspected = json.loads(subprocess.run(["buildah", "inspect", "--type", "image", image],
                                          capture_output=True, text=True, check=True).stdout)
    return str(inspected["OCIv1"]["config"].get("User", ""))


def readable(directory: Path) -> None:
    """The image's user is not root: let it read the mounted files."""
    for path in [directory, *directory.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_the_serving_image_serves_a_model_as_a_non_root_user(serving_image: str,
                                                            tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    digest = save_skops(LogisticRegression(max_iter=500).fit(*load_iris(return_X_y=True)),
                        tmp_path / "models" / "model.skops")
    readable(tmp_path / "models")
    port = free_port()
    log = tmp_path / "serve.log"
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # written by the image's user
    with container(serving_image) as name:
        # through a file, not buildah's stdout: under load a `buildah run` once returned 0
        # with its output lost
        subprocess.run(run(name, "sh", "-c", "id -u > /out/uid",
                           volumes=(f"{out}:/out",)), capture_output=True, check=True)
        uid = (out / "uid").read_text().strip()
        serve = run(name, "modelgate-serve",
                    "--model-uri", "file:///models/model.skops",
                    "--model-name", "iris", "--model-version", "v1", "--sha256", digest,
                    "--host", "127.0.0.1", "--port", str(port),
                    volumes=(f"{tmp_path / 'models'}:/models:ro",))
        with background(serve, log):
            base = f"http://127.0.0.1:{port}"
            poll(lambda: requests.get(f"{base}/v2/health/ready", timeout=1).ok, 120,
                 "the served model to be ready", log)
            answer = requests.post(f"{base}/v2/models/iris/infer", timeout=10, json={
                "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
                            "data": [5.1, 3.5, 1.4, 0.2]}]})
            metrics = requests.get(f"{base}/metrics", timeout=10).text

    assert configured_user(serving_image) == f"{NONROOT}:{NONROOT}"
    assert uid == NONROOT
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Model-Version"] == "v1"
    assert answer.json()["outputs"][0]["data"] == [0]  # setosa
    assert 'modelgate_requests_total{code="200",model="iris",version="v1"} 1.0' in metrics


def test_the_operator_image_reports_its_version_and_runs_against_the_sandbox(
        operator_image: str, tmp_path: Path) -> None:
    crd = yaml.safe_load((ROOT / "crds" / "modeldeployments.modelgate.dev.yaml").read_text())
    log = tmp_path / "operator.log"
    with container(operator_image) as name:
        version = subprocess.run(run(name, "modelgate", "--version"), capture_output=True,
                                 text=True, check=True).stdout
        with EmulatedCluster([crd], ["default"], tmp_path).running() as cluster:
            readable(tmp_path)
            assert cluster.emulator is not None
            operator = run(name, "modelgate", "run",
                           volumes=(f"{cluster.kubeconfig}:/kube/config:ro",),
                           env={"KUBECONFIG": "/kube/config",
                                "MODELGATE_OPERATOR_NAMESPACES": "default",
                                "MODELGATE_OPERATOR_STANDALONE": "true",
                                "MODELGATE_OPERATOR_TICK": "0.5",
                                "MODELGATE_OPERATOR_METRICS_PORT": str(free_port()),
                                "MODELGATE_OPERATOR_HEALTH_PORT": str(free_port())})
            with background(operator, log):
                _create(cluster)
                children = poll(lambda: cluster.emulator.snapshot(  # type: ignore[union-attr]
                    "apps/v1/deployments", "default"), 120, "the operator's Deployment", log)

    assert version.strip().startswith("modelgate ")
    assert configured_user(operator_image) == f"{NONROOT}:{NONROOT}"
    assert [d["metadata"]["name"] for d in children] == ["iris-stable"]
    owner = children[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("ModelDeployment", "iris")


def _create(cluster: EmulatedCluster) -> None:
    body = {"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris"},
            "spec": {"model": {"version": "v1", "uri": "file:///models/iris/v1/model.skops"}}}
    answer = requests.post(f"{cluster.url}/apis/modelgate.dev/v1alpha1/namespaces/default/"
                           "modeldeployments", json=body, timeout=10)
    assert answer.status_code == 201, answer.text
