"""Build the two images on a machine without a Docker engine: buildah (`--isolation chroot`) on a
Debian bookworm base that debootstrap makes locally, because registry bases cannot be pulled
here. `make images` runs this when `docker info` fails.

The base: `debootstrap --variant=minbase` of bookworm with Python 3.11 (python3, python3-venv,
python-is-python3), apt caches removed, stored as a tarball under
`${XDG_CACHE_HOME:-~/.cache}/modelgate/` and imported into buildah's store as
`localhost/modelgate-base:bookworm-<key>`, where <key> is a hash of everything that makes it
(suite, variant, packages, mirror, architecture). Change any of those and a new base is made;
otherwise the cached one is reused. Both Dockerfiles take it as `PYTHON_IMAGE`.

pip inside the build may need the host's CA bundle (TLS-inspecting proxies): it is given to
the build only, as a build secret that the Dockerfiles mount for the `pip install` step, and
never lands in a layer.

    PYTHONPATH=tests python -m support.images [serving|operator ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
MIRROR = os.environ.get("MODELGATE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CA_BUNDLE = Path(os.environ.get("MODELGATE_BUILD_CA_BUNDLE",
                                "/etc/ssl/certs/ca-certificates.crt"))
TAG = os.environ.get("IMAGE_TAG", "dev")


@dataclass(frozen=True)
class Image:
    name: str
    dockerfile: str

    @property
    def ref(self) -> str:
        return f"localhost/modelgate/{self.name}:{TAG}"


IMAGES = {"serving": Image("serving", "serving-image/Dockerfile"),
          "operator": Image("operator", "operator/Dockerfile")}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelgate"


def base_key() -> str:
    recipe = json.dumps({"suite": SUITE, "variant": VARIANT, "packages": PACKAGES,
                         "mirror": MIRROR, "arch": platform.machine()}, sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def base_ref() -> str:
    return f"localhost/modelgate-base:{SUITE}-{base_key()}"


def _run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(args), file=sys.stderr, flush=True)
    return subprocess.run(args, check=True, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]


def has_image(ref: str) -> bool:
    return subprocess.run(["buildah", "inspect", "--type", "image", ref],
                          capture_output=True, check=False).returncode == 0


def ensure_base() -> str:
    """The base image reference, made (debootstrap, about a minute) only if not cached."""
    ref = base_ref()
    if has_image(ref):
        return ref
    tarball = cache_dir() / f"base-{SUITE}-{base_key()}.tar"
    if not tarball.exists():
        tarball.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="modelgate-base-") as work:
            target = Path(work) / "root"
            _run("debootstrap", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}",
                 SUITE, str(target), MIRROR, stdout=subprocess.DEVNULL)
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (target / leftover).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            partial = tarball.with_suffix(".partial")
            _run("tar", "-C", str(target), "--numeric-owner", "-cf", str(partial), ".")
            partial.rename(tarball)
    container = _run("buildah", "from", "scratch", capture_output=True).stdout.strip()
    try:
        # buildah add unpacks a local tar archive (Debian's buildah 1.28 has no `import`)
        _run("buildah", "add", "--quiet", container, str(tarball), "/",
             stdout=subprocess.DEVNULL)
        _run("buildah", "config", "--cmd", "/bin/bash", "--env",
             "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", container)
        _run("buildah", "commit", "--quiet", "--rm", container, ref, stdout=subprocess.DEVNULL)
    except BaseException:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
        raise
    return ref


def build(image: Image) -> str:
    """Build one image with buildah, reusing cached layers; returns its reference."""
    args = ["buildah", "bud", "--isolation", "chroot", "--layers", "--network", "host",
            "--build-arg", f"PYTHON_IMAGE={ensure_base()}", "-f", image.dockerfile,
            "-t", image.ref]
    if CA_BUNDLE.exists():
        args += ["--secret", f"id=pip-ca,src={CA_BUNDLE}"]
    _run(*args, ".", cwd=ROOT)
    return image.ref


def size(ref: str) -> str:
    """The image's size as `buildah images` reports it, for example "416 MB"."""
    listing = _run("buildah", "images", "--json", ref, capture_output=True).stdout
    return str(json.loads(listing)[0]["size"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", choices=list(IMAGES))
    chosen = parser.parse_args().images or list(IMAGES)
    if shutil.which("buildah") is None or shutil.which("debootstrap") is None:
        print("make images: needs Docker, or buildah and debootstrap (make tools installs "
              "them on Debian)", file=sys.stderr)
        return 1
    for name in chosen:
        ref = build(IMAGES[name])
        print(f"{ref}: {size(ref)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
