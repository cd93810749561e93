"""Model files: fetched by scheme, checked against their digest before anything is
deserialised, loaded only when their types are trusted."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import joblib
import pytest
import skops.io
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier
from support.serving import save_skops, serving

from modelgate_serving import loader
from modelgate_serving.settings import ModelFormat, Settings

# one xdist worker runs every serving test, so the session's servers start once
pytestmark = pytest.mark.xdist_group("serving")

WRONG_DIGEST = "0" * 64


def test_digest_mismatch_never_becomes_ready(models, logs) -> None:
    model = models["classifier"]
    with serving(model.uri, logs, name="iris", args=["--sha256", WRONG_DIGEST],
                 ready=False) as served:
        served.wait_until("/v2/health/live", 200)
        ready = served.wait_until("/v2/health/ready", 503, containing="SHA-256")
        assert "SHA-256 is " + model.sha256 in ready.json()["error"]
        assert WRONG_DIGEST in ready.json()["error"]
        infer = served.predict_v1([[1, 2, 3, 4]])
        assert infer.status_code == 503
        assert "not ready" in infer.json()["error"]
        assert "refusing to load" in served.log()
        assert "modelgate_model_info{" not in served.metrics()


def test_digest_is_checked_before_deserialising(monkeypatch, models) -> None:
    calls: list[bytes] = []
    monkeypatch.setattr(loader, "deserialise", lambda data, settings: calls.append(data))
    settings = Settings(model_uri=models["classifier"].uri, sha256=WRONG_DIGEST)
    with pytest.raises(loader.LoadError, match="refusing to load"):
        loader.load_model(settings)
    assert calls == []


def test_untrusted_skops_type_is_refused(tmp_path: Path, logs) -> None:
    x, y = load_iris(return_X_y=True)
    path = tmp_path / "tree.skops"
    save_skops(DecisionTreeClassifier().fit(x, y), path)
    assert "sklearn.tree._tree.Tree" in skops.io.get_untrusted_types(file=path)
    with serving(path.as_uri(), logs, ready=False) as served:
        error = served.wait_until("/v2/health/ready", 503, containing="trusted").json()["error"]
        assert "not trusted: sklearn.tree._tree.Tree" in error
        assert "trustedTypes" in error


def test_listed_trusted_type_is_loaded(tmp_path: Path, logs) -> None:
    x, y = load_iris(return_X_y=True)
    path = tmp_path / "tree.skops"
    save_skops(DecisionTreeClassifier(random_state=0).fit(x, y), path)
    with serving(path.as_uri(), logs, args=["--trusted-types", "sklearn.tree._tree.Tree"]) \
            as served:
        assert served.predict_v1(x[:3].tolist()).json()["predictions"] == [0, 0, 0]


@pytest.fixture
def joblib_model(tmp_path: Path) -> Path:
    x, y = load_iris(return_X_y=True)
    path = tmp_path / "model.joblib"
    joblib.dump(DecisionTreeClassifier(random_state=0).fit(x, y), path)
    return path


def test_joblib_without_trust_refuses_to_start(joblib_model: Path) -> None:
    import subprocess

    from support.serving import serve_command

    done = subprocess.run([serve_command(), "--model-uri", joblib_model.as_uri(),
                           "--model-format", "joblib"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert "joblib files run code when loaded" in done.stderr


def test_joblib_marked_trusted_is_served(joblib_model: Path, logs) -> None:
    with serving(joblib_model.as_uri(), logs,
                 args=["--model-format", "joblib", "--trusted", "true"]) as served:
        assert served.predict_v1([[5.1, 3.5, 1.4, 0.2]]).json()["predictions"] == [0]


def test_skops_reader_refuses_a_pickle() -> None:
    import pickle

    data = pickle.dumps(DecisionTreeClassifier())
    settings = Settings(model_uri="file:///x", model_format=ModelFormat.SKOPS)
    with pytest.raises(loader.LoadError, match="not a readable skops file"):
        loader.deserialise(data, settings)


class _Files(http.server.BaseHTTPRequestHandler):
    """Serves one file; the first request of each path fails with 503 to exercise retries."""

    content = b""
    failed: ClassVar[set[str]] = set()

    def do_GET(self) -> None:
        if self.path.startswith("/flaky") and self.path not in self.failed:
            self.failed.add(self.path)
            self.send_response(503)
            self.end_headers()
            return
        if self.path.startswith("/token") and \
                self.headers.get("Authorization") != "Bearer s3cret-token":
            self.send_response(401)
            self.end_headers()
            return
        if self.path.startswith("/missing"):
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.content)))
        self.end_headers()
        self.wfile.write(self.content)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def file_server(models) -> Iterator[str]:
    _Files.content = models["classifier"].path.read_bytes()
    _Files.failed = set()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_model_is_fetched_with_retries_and_verified(file_server: str, models) -> None:
    settings = Settings(model_uri=f"{file_server}/flaky/iris.skops",
                        sha256=models["classifier"].sha256, download_retries=2)
    estimator, digest = loader.load_model(settings)
    assert digest == models["classifier"].sha256
    assert estimator.predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == [0]


def test_http_size_limit_and_errors_name_the_problem(file_server: str) -> None:
    with pytest.raises(loader.LoadError, match="over the limit of 100"):
        loader.fetch(f"{file_server}/iris.skops",
                     Settings(model_uri="-", max_model_bytes=100))
    with pytest.raises(loader.LoadError, match="HTTP 404"):
        loader.fetch(f"{file_server}/missing.skops", Settings(model_uri="-"))


def test_a_download_token_is_sent_as_a_bearer_and_never_shown(file_server: str,
                                                             models) -> None:
    settings = Settings(model_uri=f"{file_server}/token/iris.skops",
                        sha256=models["classifier"].sha256, download_token="s3cret-token")
    assert loader.load_model(settings)[1] == models["classifier"].sha256
    assert "s3cret-token" not in repr(settings)
    with pytest.raises(loader.LoadError, match="HTTP 401") as refused:
        loader.fetch(f"{file_server}/token/iris.skops",
                     Settings(model_uri="-", download_token="wrong-token"))
    assert "wrong-token" not in str(refused.value)


def test_credentials_in_a_uri_never_reach_messages(file_server: str) -> None:
    host = file_server.removeprefix("http://")
    with pytest.raises(loader.LoadError) as raised:
        loader.fetch(f"http://user:s3cret@{host}/missing.skops?sig=topsecret",
                     Settings(model_uri="-"))
    assert "s3cret" not in str(raised.value)
    assert "topsecret" not in str(raised.value)


@pytest.mark.parametrize(("uri", "words"), [
    ("s3://bucket/model.skops", "scheme s3:// is not supported; use one of file://, http://"),
    ("/models/iris.skops", "scheme (none) is not supported"),
    ("file:///nonexistent/model.skops", "no such file"),
    ("file://otherhost/model.skops", "not a host"),
])
def test_unusable_uris_are_explained(uri: str, words: str) -> None:
    with pytest.raises(loader.LoadError, match=words.replace("(", r"\(").replace(")", r"\)")):
        loader.fetch(uri, Settings(model_uri=uri))


def test_file_over_the_size_limit_is_refused(models) -> None:
    with pytest.raises(loader.LoadError, match="over the limit"):
        loader.fetch(models["classifier"].uri, Settings(model_uri="-", max_model_bytes=10))
