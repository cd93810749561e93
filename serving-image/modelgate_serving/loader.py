"""Fetch a model file, check its digest, deserialise it safely.

One resolver maps a URI scheme to a fetcher returning bytes; a new scheme (s3://, gs://) joins
by adding an entry to FETCHERS. Nothing is deserialised before the digest, when one is given,
matches: a file that is not the declared one never reaches skops or joblib.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from modelgate_serving.settings import ModelFormat, Settings

log = logging.getLogger(__name__)


class LoadError(Exception):
    """The model cannot be served; the message says why and what to change."""


Fetcher = Callable[[str, Settings], bytes]


def _fetch_file(uri: str, settings: Settings) -> bytes:
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise LoadError(f"{uri}: file URIs name a local path (file:///models/m.skops), "
                        f"not a host ({parsed.netloc!r})")
    path = Path(unquote(parsed.path))
    try:
        size = path.stat().st_size
        if size > settings.max_model_bytes:
            raise LoadError(f"{uri}: {size} bytes is over the limit of "
                            f"{settings.max_model_bytes} (--max-model-bytes)")
        return path.read_bytes()
    except FileNotFoundError:
        raise LoadError(f"{uri}: no such file") from None
    except IsADirectoryError:
        raise LoadError(f"{uri}: is a directory; point at the model file") from None
    except PermissionError:
        raise LoadError(f"{uri}: permission denied") from None


def _fetch_http(uri: str, settings: Settings) -> bytes:
    retry = Retry(total=settings.download_retries, backoff_factor=0.5,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=("GET",),
                  raise_on_status=False)
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        if settings.download_token:
            # a registry's bearer token; never in a message (errors name the exception type only)
            session.headers["Authorization"] = f"Bearer {settings.download_token}"
        try:
            with session.get(uri, stream=True, timeout=settings.download_timeout) as response:
                if response.status_code != 200:
                    raise LoadError(f"{_redact(uri)}: HTTP {response.status_code} "
                                    f"{response.reason}")
                declared = int(response.headers.get("Content-Length") or 0)
                if declared > settings.max_model_bytes:
                    raise LoadError(f"{_redact(uri)}: {declared} bytes is over the limit of "
                                    f"{settings.max_model_bytes} (--max-model-bytes)")
                buffer = io.BytesIO()
                for chunk in response.iter_content(chunk_size=1 << 20):
                    buffer.write(chunk)
                    if buffer.tell() > settings.max_model_bytes:
                        raise LoadError(f"{_redact(uri)}: more than "
                                        f"{settings.max_model_bytes} bytes (--max-model-bytes)")
                return buffer.getvalue()
        except requests.RequestException as error:
            raise LoadError(f"{_redact(uri)}: download failed: "
                            f"{type(error).__name__}") from None


def _redact(uri: str) -> str:
    """The URI without credentials or query (presigned URLs carry secrets there)."""
    parsed = urlparse(uri)
    host = parsed.hostname or ""
    if parsed.port:
        host = f"{host}:{parsed.port}"
    return parsed._replace(netloc=host, query="", fragment="").geturl()


FETCHERS: dict[str, Fetcher] = {
    "file": _fetch_file,
    "http": _fetch_http,
    "https": _fetch_http,
}


def fetch(uri: str, settings: Settings) -> bytes:
    """The bytes of the model file at `uri`, by its scheme's fetcher."""
    scheme = urlparse(uri).scheme
    fetcher = FETCHERS.get(scheme)
    if fetcher is None:
        supported = ", ".join(f"{name}://" for name in FETCHERS)
        raise LoadError(f"{_redact(uri)}: scheme {scheme + '://' if scheme else '(none)'} "
                        f"is not supported; use one of {supported}")
    return fetcher(uri, settings)


def verify(data: bytes, expected: str | None, uri: str) -> str:
    """The file's SHA-256; raises when it is not the expected one."""
    digest = hashlib.sha256(data).hexdigest()
    if expected is not None and digest != expected:
        raise LoadError(f"{_redact(uri)}: SHA-256 is {digest}, the deployment declares "
                        f"{expected}; refusing to load a file that is not the declared model")
    return digest


def deserialise(data: bytes, settings: Settings) -> Any:
    """The estimator in `data`, by the configured format and trust."""
    if settings.model_format is ModelFormat.JOBLIB:
        if not settings.trusted:
            raise LoadError("joblib files run code when loaded; mark the model trusted or "
                            "use skops")
        import joblib

        return joblib.load(io.BytesIO(data))
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as error:
        raise LoadError(f"not a readable skops file ({type(error).__name__}: {error}); "
                        f"is --model-format right?") from None
    refused = sorted(set(untrusted) - set(settings.trusted_types))
    if refused:
        raise LoadError(f"the skops file holds types that are not trusted: "
                        f"{', '.join(refused)}; if you built this file, list them in "
                        f"model.trustedTypes (--trusted-types)")
    try:
        return skops.io.loads(data, trusted=list(untrusted))
    except Exception as error:
        raise LoadError(f"the skops file could not be loaded ({type(error).__name__}: "
                        f"{error})") from None


def load_model(settings: Settings) -> tuple[Any, str]:
    """Fetch, verify and deserialise the configured model: (estimator, sha256)."""
    data = fetch(settings.model_uri, settings)
    digest = verify(data, settings.sha256, settings.model_uri)
    if settings.sha256 is None:
        log.warning("no --sha256 given: serving %s unverified (sha256 %s)",
                    _redact(settings.model_uri), digest)
    return deserialise(data, settings), digest
