"""The krew archive of the kubectl plugin, byte for byte reproducible, and its manifest.

    python plugins/krew/build.py --out build/       # writes kubectl-modelgate.tar.gz
    python plugins/krew/build.py --check            # the manifest's sha256 matches the archive

The archive holds the shim `kubectl-modelgate` (it runs the modelgate package's plugin entry
point); krew installs it with `kubectl krew install --manifest=plugins/krew/modelgate.yaml
--archive=build/kubectl-modelgate.tar.gz`.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import tarfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SHIM = HERE / "kubectl-modelgate"
MANIFEST = HERE / "modelgate.yaml"
ARCHIVE = "kubectl-modelgate.tar.gz"


def archive() -> bytes:
    """A tar.gz of the shim with fixed owner, mode and times, so its sha256 is stable."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = SHIM.read_bytes()
        info = tarfile.TarInfo("kubectl-modelgate")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def manifest_sha256s() -> set[str]:
    plugin = yaml.safe_load(MANIFEST.read_text())
    return {platform["sha256"] for platform in plugin["spec"]["platforms"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="directory to write the archive into")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless the manifest's sha256 is the archive's")
    args = parser.parse_args(argv)
    data = archive()
    digest = hashlib.sha256(data).hexdigest()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / ARCHIVE).write_bytes(data)
        print(f"{args.out / ARCHIVE} sha256 {digest}")
    if args.check and manifest_sha256s() != {digest}:
        print(f"{MANIFEST.name}: sha256 {sorted(manifest_sha256s())} is not the archive's "
              f"{digest}: update the manifest (and release the archive)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
