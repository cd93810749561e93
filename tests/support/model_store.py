"""`make model-store`: the README's kind quickstart needs model files a pod can read. This
builds the example iris models (`sandbox.models`: v1, a retrained v2, and v3, which shifts its
predictions), serves them in the cluster of the current kubectl context exactly as the
end-to-end suite does (a ConfigMap served over http by the serving image, Deployment and
Service `model-store` in the default namespace) and writes ModelDeployments of them, with
their sha256 digests, to the output directory.

    PYTHONPATH=tests python -m support.model_store --out .kind/examples
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml
from sandbox.models import build
from support.e2e import E2ECluster

VERSIONS = {"v1": "the first model", "v2": "a retrained model, as good",
            "v3-shifted": "a model whose predictions shift: the analysis rolls it back"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    out: Path = options.out
    out.mkdir(parents=True, exist_ok=True)
    cluster = E2ECluster(kind="kind", env=dict(os.environ))
    print(f"model-store: building the example models in {out / 'models'}", file=sys.stderr)
    models = build(out / "models")
    print("model-store: serving them in the cluster (deployment/model-store, namespace default)",
          file=sys.stderr)
    cluster.start_model_store(models)
    for version, what in VERSIONS.items():
        # the end-to-end suite's settings: a canary at 50% and checks loose enough to
        # decide within a few minutes at the quickstart's traffic (about 20 requests a second)
        spec = cluster.md("iris", version)["spec"]
        del spec["serving"]  # the CRD's defaults: two pods of the serving image kind-load loaded
        body = {"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelDeployment",
                "metadata": {"name": "iris"}, "spec": spec}
        path = out / f"iris-{version}.yaml"
        path.write_text(f"# iris {version}: {what}, from the model store of `make model-store`."
                        "\n" + yaml.safe_dump(body, sort_keys=False))
        print(f"model-store: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
