"""`modelgate dashboard` in a real headless Chromium (Debian's), against the sandbox: the
page follows a rollout v1 -> v2 to its promotion without a reload, and is usable at a phone's
width. The dashboard runs as a user runs it (the console script, on a free port)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.browser import CHROMIUM, Chromium, require_chromium
from support.kubectl import Kubectl

# its own group (its own sandbox in `make test`): a rollout long enough to be a critical path
# beside the other kubectl tests, and test_undeploy.py removes every ModelDeployment of its
# sandbox
pytestmark = [pytest.mark.kubectl, pytest.mark.xdist_group("kubectl-dashboard")]

NAME = "dashed"
BIN = Path(sys.executable).parent
PHONE = (390, 844)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),  # in CI, the browser fixture fails instead
    reason="chromium is not installed (make tools installs it)")


def example(env: dict[str, str], version: str) -> str:
    body = yaml.safe_load((Path(env["MODELGATE_SANDBOX"]) / "examples"
                           / f"iris-{version}.yaml").read_text())
    body["metadata"]["name"] = NAME
    return yaml.safe_dump(body)


@pytest.fixture(scope="module")
def dashboard(sandbox_env: dict[str, str]) -> Iterator[str]:
    """`modelgate dashboard --port 0`: its URL, from the line it prints."""
    process = subprocess.Popen([str(BIN / "modelgate"), "dashboard", "--port", "0",
                                "--interval", "0.5"], env=sandbox_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(process.stdout.readline()
                                                          if process.stdout else ""))
    reader.start()
    reader.join(timeout=60)
    try:
        found = re.search(r"(http://127\.0\.0\.1:\d+/) \(namespace default; read-only",
                          first[0] if first else "")
        assert found, f"{first} {process.stderr.read() if process.poll() is not None else ''}"
        yield found.group(1)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    """One headless Chromium for the module."""
    require_chromium()
    chromium = Chromium(tmp_path_factory.mktemp("chromium"))
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def healthy_v1(kubectl: Kubectl, sandbox_env: dict[str, str]) -> Iterator[None]:
    kubectl("apply", "-f", "-", stdin=example(sandbox_env, "v1"))
    try:
        kubectl("wait", f"md/{NAME}", "--for=jsonpath={.status.phase}=Healthy",
                "--timeout=180s")
        yield
    finally:
        kubectl("delete", "md", NAME, "--ignore-not-found", "--wait=false")


def text(selector: str) -> str:
    return f"(document.querySelector({json.dumps(selector)}) || {{innerText: ''}}).innerText"


@needs_chromium
def test_the_page_follows_a_rollout_to_its_promotion_without_a_reload(
        browser: Chromium, healthy_v1: None, dashboard: str, kubectl: Kubectl,
        sandbox_env: dict[str, str], tmp_path: Path) -> None:
    browser.viewport(1280, 900)
    browser.open(dashboard)
    assert NAME in browser.evaluate(text("table.list"))
    browser.evaluate(f"document.querySelector('a[href=\"/md/default/{NAME}\"]').click()")
    browser.wait_for("the detail page", f"location.pathname === '/md/default/{NAME}' && "
                     "document.readyState === 'complete'")
    assert "stable v1" in browser.evaluate(text("#versions"))
    # a mark on this very document: a reload or a navigation would drop it
    browser.evaluate("window.sameDocument = 'yes'")

    kubectl("apply", "-f", "-", stdin=example(sandbox_env, "v2"))
    browser.wait_for("the canary to appear", f"{text('#versions')}.includes('canary v2')")
    browser.wait_for("a step marked current", f"{text('ol.steps')}.includes('▶')")
    browser.wait_for("a metric verdict", "document.querySelectorAll('.metric').length > 0")
    browser.wait_for("the plot of the running rollout",
                     "(document.querySelector('#plot') || {}).naturalWidth > 0")
    browser.wait_for("the promotion", f"{text('#phase')}.includes('Healthy') && "
                     f"{text('#versions')}.includes('stable v2') && "
                     f"!{text('#versions')}.includes('canary')", timeout=300)
    browser.wait_for("the promotion in the history",
                     f"/v2\\s+Promoted/.test({text('#history')})")
    browser.wait_for("the final plot", "(document.querySelector('#plot') || {}).complete && "
                     "document.querySelector('#plot').naturalWidth > 0 && "
                     f"{text('main')}.includes('Healthy')")
    assert browser.evaluate("window.sameDocument") == "yes", "the page was reloaded"
    assert "read" in browser.evaluate(text("#updated"))
    shot = browser.screenshot(tmp_path / "dashboard-promoted.png")
    assert shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")


@needs_chromium
def test_the_page_is_usable_at_a_phones_width(browser: Chromium, healthy_v1: None,
                                              dashboard: str, tmp_path: Path) -> None:
    width, height = PHONE
    browser.viewport(width, height, mobile=True)
    try:
        for path in ("", f"md/default/{NAME}"):
            browser.open(dashboard + path)
            assert browser.evaluate("window.innerWidth") == width
            overflow = browser.evaluate(
                "[document.documentElement.scrollWidth, document.body.scrollWidth, "
                "innerWidth]")
            assert max(overflow[:2]) <= overflow[2], f"/{path} overflows: {overflow}"
            # nothing drawn past the right edge, and text large enough to read
            outside = browser.evaluate(
                "[...document.querySelectorAll('body *')].filter(e => "
                "e.getBoundingClientRect().right > innerWidth + 0.5).map(e => e.tagName)")
            assert outside == [], f"/{path}: {outside}"
            smallest = browser.evaluate(
                "Math.min(...[...document.querySelectorAll('main *')].filter(e => "
                "e.childNodes.length && [...e.childNodes].some(n => n.nodeType === 3 && "
                "n.textContent.trim())).map(e => parseFloat(getComputedStyle(e).fontSize)))")
            assert smallest >= 12, f"/{path}: text of {smallest}px"
            browser.screenshot(tmp_path / f"phone-{path.replace('/', '-') or 'list'}.png")
        assert NAME in browser.evaluate("document.title")
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride")


def test_the_dashboard_is_read_only(dashboard: str) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        request = urllib.request.Request(dashboard + "api/list", data=b"{}", method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 405, method
    with urllib.request.urlopen(dashboard, timeout=30) as reply:
        policy = reply.headers["Content-Security-Policy"]
        page = reply.read().decode()
    assert "default-src 'none'" in policy
    assert "Read-only" in page
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"https?://", page)
