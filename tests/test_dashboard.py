"""The dashboard in a real headless browser (Debian's chromium + chromedriver, driven by
selenium): it loads, draws the chart from real data, fills its tables, logs no console
error, and runs under its Content-Security-Policy without a single violation. The screenshot is kept in test-artifacts/dashboard.png."""

from __future__ import annotations

import shutil
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import http_json

# Registered before any script of the page runs (through the DevTools protocol, which the
# page's CSP does not govern): every CSP violation the page causes is recorded.
RECORD_CSP_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(event.violatedDirective + " " + (event.blockedURI || "inline") + " " + event.sourceFile + ":" + event.lineNumber);
});
"""

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them: apt-get install -y chromium chromium-driver)",
)


def test_dashboard_loads_and_draws_real_data(server_factory: Any) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    server = server_factory(flush="50ms").start()
    now = datetime.now(UTC)
    events = [
        {
            "key": "page_view" if n % 3 else "signup",
            "timestamp": (now - timedelta(minutes=7 * n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": {"path": f"/page/{n % 4}", "user_id": n % 5},
        }
        for n in range(150)  # spread over the last ~17 hours
    ]
    assert http_json("POST", server.url + "/events", events)[0] == 200
    server.wait_drained()
    with urllib.request.urlopen(server.url + "/", timeout=10) as page:
        policy = page.headers["Content-Security-Policy"]
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_CSP_VIOLATIONS})
        driver.get(server.url + "/")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and driver.execute_script("return document.body.dataset.loaded") != "true":
            time.sleep(0.1)
        assert driver.execute_script("return document.body.dataset.loaded") == "true", driver.find_element(
            "id", "status"
        ).text
        assert driver.find_element("id", "total").text.replace(",", "") == "150"
        assert int(driver.execute_script("return document.body.dataset.chartPoints")) >= 24
        assert int(driver.execute_script("return document.body.dataset.chartEvents")) == 150  # all within the last day
        assert driver.find_elements("css selector", "#chart canvas"), "uPlot drew no canvas"
        key_rows = [row.text for row in driver.find_elements("css selector", "#keys tbody tr")]
        assert key_rows[0].startswith("page_view 100") and key_rows[1].startswith("signup 50")
        assert len(driver.find_elements("css selector", "#latest tbody tr")) == 20
        assert len(driver.find_elements("css selector", "#breakdown tbody tr")) == 4
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        assert driver.execute_script("return window.cspViolations") == []
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()
