"""Helpers of the console tests: sign in, visit a page with an axe-core check, screenshots."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from safehold.bootstrap import Controller

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
HTMX = ROOT / "src" / "safehold" / "web" / "static" / "vendor" / "htmx.min.js"

ADMIN = "console-admin-token"
OPERATOR = "console-operator-token"
READER = "console-reader-token"
TOKENS = {ADMIN: "admin", OPERATOR: "operator", READER: "reader"}

APP = "fabric:/Shop"
SERVICE = "fabric:/Shop/Orders"
GOOD = "11111111-1111-4111-8111-111111111111"
BAD = "22222222-2222-4222-8222-222222222222"

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)


@dataclass
class Fleet:
    """The live controller: its URL, its data directories and an admin API client."""

    url: str
    controller: Controller
    source: Path
    storage: Path
    api: httpx.Client


AXE_RUN = """
const done = arguments[arguments.length - 1];
axe.run(document, {resultTypes: ['violations']})
  .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                          nodes: v.nodes.map(n => n.target.join(' '))}))))
  .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));
"""


def check_page(driver: Any, shot: str | None = None) -> None:
    """Run axe-core on the current page: no serious or critical violation; maybe a screenshot."""
    if not driver.execute_script("return typeof axe !== 'undefined'"):
        driver.execute_script(AXE.read_text())
    violations = driver.execute_async_script(AXE_RUN)
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not bad, f"accessibility violations on {driver.current_url}: {bad}"
    screenshot(driver, shot)


def screenshot(driver: Any, shot: str | None) -> None:
    """Save the whole page as ``SHOT.png`` when ``SAFEHOLD_SCREENSHOTS`` names a folder."""
    folder = os.environ.get("SAFEHOLD_SCREENSHOTS")
    if not shot or not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    shot_png = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1280, "height": min(height, 2400), "scale": 1},
        },
    )
    (Path(folder) / f"{shot}.png").write_bytes(base64.b64decode(shot_png["data"]))


def visit(driver: Any, fleet: Fleet, path: str, shot: str | None = None) -> None:
    """Open *path* and check it."""
    driver.get(fleet.url + path)
    check_page(driver, shot)


def sign_in(driver: Any, fleet: Fleet, token: str, shot: str | None = None) -> None:
    """Sign out whoever is signed in, then sign in with *token*."""
    driver.delete_all_cookies()
    visit(driver, fleet, "/console/login", shot)
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "sign-in").click()
    wait_text(driver, "role", "Signed in as")


def wait_text(driver: Any, element_id: str, text: str, timeout: float = 60) -> str:
    """Wait until the element *element_id* shows *text* (pages may reload meanwhile)."""

    def found(d: Any) -> str | bool:
        elements = d.find_elements(By.ID, element_id)
        try:
            content: str = elements[0].text if elements else ""
        except Exception:  # the page was replaced while reading: look again
            return False
        return content if text in content else False

    return str(WebDriverWait(driver, timeout, poll_frequency=0.2).until(found))


def click(driver: Any, element_id: str) -> None:
    """Click the element *element_id*."""
    driver.find_element(By.ID, element_id).click()


def fill(driver: Any, name: str, value: str) -> None:
    """Replace the value of the form field *name*."""
    field = driver.find_element(By.NAME, name)
    field.clear()
    field.send_keys(value)


def element(driver: Any, element_id: str, timeout: float = 20) -> Any:
    """Wait for the element *element_id* to be on the page (after a navigation) and return it."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: (d.find_elements(By.ID, element_id) or [False])[0]
    )
