"""/t.js in a real headless browser (Debian's chromium + chromedriver, driven by selenium): a
shop page served from another origin, under a strict Content-Security-Policy, includes the
script; its page view, a single-page-app navigation (history.pushState, then back) and a custom
event arrive at a real server with the right keys and properties. A page of an origin the
server does not allow is refused: its beacons are answered 403 and stored nowhere, and its
fetch() cannot pass the preflight.
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
import tarfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ServerProcess, eventually, free_port, http_json

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WRITE_KEY = "page-write-key-0000001"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them: apt-get install -y chromium chromium-driver)",
)

RECORD_CSP_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""


class Site:
    """A web site on its own origin (127.0.0.1 and a port of its own) whose pages include t.js."""

    def __init__(
        self, tlytics_url: str, port: int | None = None, files: dict[str, tuple[bytes, str]] | None = None
    ) -> None:
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Shop</title>"
            f"<script defer src='{tlytics_url}/t.js' data-key='{WRITE_KEY}'></script>"
            "</head><body><h1>Shop</h1></body></html>"
        ).encode()
        policy = f"default-src 'none'; script-src 'self' {tlytics_url}; connect-src {tlytics_url}"
        served = {"/": (page, "text/html; charset=utf-8")}
        served.update(files or {})

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body, content_type = served.get(self.path.split("?")[0], (b"", ""))
                self.send_response(200 if content_type else 404)
                self.send_header("Content-Type", content_type or "text/plain")
                self.send_header("Content-Security-Policy", policy)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.port = port or free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def sites(server_factory: Any) -> Iterator[tuple[ServerProcess, Site, Site]]:
    """The server, a site it allows (--cors-origin) and one it does not."""
    allowed_port = free_port()
    server = server_factory(
        flush="50ms",
        extra_args=["--write-key", WRITE_KEY, "--cors-origin", f"http://127.0.0.1:{allowed_port}"],
    ).start()
    allowed = Site(server.url, allowed_port)
    other = Site(server.url)
    yield server, allowed, other
    allowed.close()
    other.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_CSP_VIOLATIONS})
    try:
        yield driver
    finally:
        driver.quit()


def refused_beacons(server: ServerProcess) -> float:
    """How many POST /v1/batch the server answered 403, by its own metrics."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tlytics_request_duration_seconds_count")
        and 'route="/v1/batch"' in line
        and 'status="403"' in line
    )


def stored(server: ServerProcess) -> list[dict[str, Any]]:
    status, body = http_json("GET", f"{server.url}/view?page_size=100")
    assert status == 200, body
    events: list[dict[str, Any]] = body["events"]
    return events


def test_page_views_navigation_and_an_event_arrive(sites: tuple[ServerProcess, Site, Site], browser: Any) -> None:
    server, allowed, _ = sites
    browser.get(allowed.origin + "/")
    eventually(lambda: browser.execute_script("return typeof window.tlytics.page === 'function'"), what="t.js ran")
    browser.execute_script("history.pushState({}, '', '/pricing?plan=pro')")
    browser.execute_script("tlytics('signup', {plan: 'pro'})")
    eventually(lambda: len(stored(server)) >= 3, what="3 events stored")
    events = stored(server)
    assert len(events) == 3
    pages = sorted(event["data"]["path"] for event in events if event["key"] == "$page")
    assert pages == ["/", "/pricing"]
    [signup] = [event for event in events if event["key"] == "signup"]
    assert signup["data"]["plan"] == "pro"
    assert signup["data"]["context"]["page"]["path"] == "/pricing"
    assert len({event["data"]["anonymousId"] for event in events}) == 1  # one visitor, no cookie
    browser.execute_script("history.back()")  # popstate: a page view of / again
    eventually(lambda: len(stored(server)) == 4, what="the popstate page view")
    assert browser.execute_script("return window.cspViolations") == []
    assert browser.get_cookies() == []


def test_a_page_of_another_origin_is_refused(sites: tuple[ServerProcess, Site, Site], browser: Any) -> None:
    server, _, other = sites
    browser.get(other.origin + "/")
    eventually(lambda: browser.execute_script("return typeof window.tlytics.page === 'function'"), what="t.js ran")
    # Its beacon went out (sendBeacon needs no preflight) and the server refused it.
    eventually(lambda: refused_beacons(server) >= 1, what="the beacon refused")
    error = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch(arguments[0] + "/v1/track", {method: "POST", headers: {"Content-Type": "application/json"},
              body: JSON.stringify({type: "track", event: "x", userId: "u"})})
          .then((response) => done("answered " + response.status), (error) => done(String(error)));
        """,
        server.url,
    )
    assert "TypeError" in error  # the preflight was refused: the page never saw an answer
    assert stored(server) == []


def test_do_not_track_sends_nothing(sites: tuple[ServerProcess, Site, Site], browser: Any) -> None:
    server, allowed, _ = sites
    do_not_track = browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {"source": "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'});"},
    )
    try:
        browser.get(allowed.origin + "/")
        eventually(lambda: browser.execute_script("return typeof window.tlytics === 'function'"), what="t.js ran")
        assert browser.execute_script("return navigator.doNotTrack") == "1"
        assert browser.execute_script("return window.tlytics.page") is None  # switched off
        browser.execute_script("tlytics('signup', {plan: 'pro'})")  # a no-op
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": do_not_track["identifier"]})
    browser.get(allowed.origin + "/")  # the same visit without Do Not Track: its page view arrives
    eventually(lambda: len(stored(server)) >= 1, what="the page view without Do Not Track")
    assert [event["key"] for event in stored(server)] == ["$page"]


@pytest.fixture(scope="module")
def posthog_js(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """posthog-js's browser bundle, from the npm registry (served by the test site, no CDN)."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("needs npm to fetch posthog-js")
    directory = tmp_path_factory.mktemp("npm")
    packed = subprocess.run(
        [npm, "pack", "posthog-js@1", "--silent"], cwd=directory, capture_output=True, text=True, timeout=300
    )
    if packed.returncode != 0:
        pytest.skip(f"npm pack posthog-js failed: {packed.stderr[-500:]}")
    with tarfile.open(directory / packed.stdout.strip().splitlines()[-1]) as archive:
        member = archive.extractfile("package/dist/array.js")
        assert member is not None
        return member.read()


def test_posthog_js_page_view_and_event(server_factory: Any, browser: Any, posthog_js: bytes) -> None:
    port = free_port()
    server = server_factory(
        flush="50ms", extra_args=["--write-key", WRITE_KEY, "--cors-origin", f"http://127.0.0.1:{port}"]
    ).start()
    app = (
        f"posthog.init('{WRITE_KEY}', {{api_host: '{server.url}', autocapture: false, persistence: 'memory',"
        " disable_session_recording: true, disable_surveys: true, advanced_disable_flags: true,"
        " advanced_disable_decide: true, request_batching: false,"
        # Headless Chromium's user agent says HeadlessChrome: posthog-js drops a bot's events.
        " opt_out_useragent_filter: true});"
    ).encode()
    page = b"<!doctype html><title>SDK</title><script src='/posthog.js'></script><script src='/app.js'></script>"
    files = {
        "/sdk": (page, "text/html"),
        "/posthog.js": (posthog_js, "text/javascript"),
        "/app.js": (app, "text/javascript"),
    }
    site = Site(server.url, port, files=files)
    try:
        browser.get(site.origin + "/sdk")
        eventually(lambda: browser.execute_script("return !!(window.posthog && window.posthog.__loaded)"), what="init")
        browser.execute_script("posthog.capture('signup', {plan: 'pro'})")
        eventually(lambda: {"$pageview", "signup"} <= {e["key"] for e in stored(server)}, what="posthog-js events")
    finally:
        site.close()
    events = {event["key"]: event for event in stored(server)}
    assert events["signup"]["data"]["plan"] == "pro"
    assert events["signup"]["data"]["distinct_id"] == events["$pageview"]["data"]["distinct_id"]
    assert events["$pageview"]["data"]["$current_url"].startswith(site.origin)
    assert WRITE_KEY not in str(events)  # posthog-js's token is never stored
