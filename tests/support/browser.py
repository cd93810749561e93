"""A real headless Chromium (Debian's `chromium`, which `make tools` installs), driven over
the Chrome DevTools Protocol with websocket-client (pinned in constraints.txt).

Why the DevTools protocol and not Selenium: it is Chromium's own interface (the same build
speaks it, so no driver can be out of step with the browser), it needs no chromedriver
process and no Selenium dependency tree, and it has what the tests need beyond WebDriver:
device metrics for a phone's width and full-page screenshots.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websocket

CHROMIUM = os.environ.get("MODELGATE_CHROMIUM") or next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)
"""Debian's chromium (Ubuntu calls it chromium-browser); MODELGATE_CHROMIUM names another."""


def require_chromium() -> str:
    """Chromium's path; a skip naming the reason where it is missing, a failure in CI."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI without chromium (make tools installs it)")
        pytest.skip("chromium is not installed (make tools installs it)")
    return CHROMIUM


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless Chromium with a profile of its own in `workdir`, and its one page."""

    def __init__(self, workdir: Path, width: int = 1280, height: int = 900) -> None:
        binary = require_chromium()
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        self.log = (workdir / "chromium.log").open("w")
        self.process = subprocess.Popen(
            [binary, "--headless", "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "--no-first-run", "--no-default-browser-check", "--disable-gpu",
             "--disable-extensions", "--disable-background-networking", "--disable-sync",
             "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars",
             # the sandbox needs user namespaces, which containers (and root) may not have
             *(["--no-sandbox"] if os.geteuid() == 0 else []), "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self._id = 0
        try:
            port = self._port(profile / "DevToolsActivePort")
            self.socket = websocket.create_connection(self._page(port), timeout=30,
                                                      suppress_origin=True)
            self.call("Page.enable")
            self.call("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def _port(self, active: Path, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited with {self.process.returncode}; see "
                                   f"{self.log.name}")
            lines = active.read_text().splitlines() if active.exists() else []
            if lines and lines[0].isdigit():
                return int(lines[0])
            time.sleep(0.1)
        raise BrowserError(f"chromium did not open its DevTools port within {timeout:g}s")

    @staticmethod
    def _page(port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as reply:
            targets = json.load(reply)
        pages = [target for target in targets if target.get("type") == "page"]
        if not pages:
            raise BrowserError(f"no page among chromium's targets: {targets}")
        return str(pages[0]["webSocketDebuggerUrl"])

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command and its result (events in between are dropped)."""
        self._id += 1
        self.socket.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return dict(message.get("result") or {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, timeout: float = 60) -> None:
        """Navigate and wait until the document has loaded (images included)."""
        navigated = self.call("Page.navigate", url=url)
        if navigated.get("errorText"):
            raise BrowserError(f"{url}: {navigated['errorText']}")
        self.wait_for(f"{url} to load", "document.readyState === 'complete' "
                      f"&& location.href === {json.dumps(url)}", timeout)

    def wait_for(self, what: str, expression: str, timeout: float = 120,
                 every: float = 0.2) -> Any:
        """Poll `expression` in the page until it is truthy; fail naming `what`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(every)
        pytest.fail(f"timed out after {timeout:g}s waiting for {what}")

    def viewport(self, width: int, height: int, mobile: bool = False) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=3 if mobile else 1, mobile=mobile)

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            width, height = self.evaluate(
                "[document.documentElement.clientWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        data = self.call("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Close the browser: politely over the protocol, then by its PID (and its own
        process group: the renderers it started)."""
        socket = getattr(self, "socket", None)
        if socket is not None:
            with contextlib.suppress(OSError, websocket.WebSocketException, BrowserError):
                self.call("Browser.close")
            socket.close()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)
        self.log.close()


