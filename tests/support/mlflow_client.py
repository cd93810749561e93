"""The real MLflow client, run by the MLflow venv's python (tests/support/mlflow_server.py).

    mlflow_client.py URL register NAME FILE ARTIFACT   -> {"version": "3"}
    mlflow_client.py URL get NAME VERSION              -> {"tags": {...}, "aliases": [...]}
    mlflow_client.py URL alias NAME ALIAS              -> {"version": "3" | null}
    mlflow_client.py URL set-alias NAME ALIAS VERSION  -> {}

One JSON object on the last line of stdout. Not imported by the tests (their venv has no mlflow).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path


def main(argv: list[str]) -> dict[str, object]:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    url, command, *args = argv
    mlflow.set_tracking_uri(url)
    client = MlflowClient(url)
    if command == "register":
        name, file, artifact = args
        experiment = mlflow.set_experiment("modelgate-tests")
        with tempfile.TemporaryDirectory() as directory:
            staged = Path(directory) / "model"
            staged.mkdir()
            shutil.copyfile(file, staged / artifact)
            with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
                mlflow.log_artifacts(str(staged), artifact_path="model")
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name)
        version = client.create_model_version(
            name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        return {"version": version.version}
    if command == "get":
        name, version = args
        found = client.get_model_version(name, version)
        return {"tags": dict(found.tags), "aliases": list(found.aliases)}
    if command == "alias":
        name, alias = args
        try:
            return {"version": client.get_model_version_by_alias(name, alias).version}
        except MlflowException:
            return {"version": None}
    if command == "set-alias":
        name, alias, version = args
        client.set_registered_model_alias(name, alias, version)
        return {}
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
