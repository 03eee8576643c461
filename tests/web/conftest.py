"""
A real controller (real engine, file storage, SQLite catalog, embedded agent) and a headless
Chromium driven by Selenium through Debian's chromedriver, shared by the console tests.

Every page a test visits is checked with axe-core (from the npm registry,
``node_modules/axe-core``): no serious or critical violation. With
``SAFEHOLD_SCREENSHOTS=DIR`` (``make console-screenshots``) the pages named by
the tests are saved there as PNG files.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from safehold.bootstrap import Settings, build_controller
from safehold.testing import serve_in_thread
from tests.web.browser import (
    ADMIN,
    APP,
    AXE,
    BAD,
    CHROMEDRIVER,
    CHROMIUM,
    CHROMIUM_FLAGS,
    GOOD,
    HTMX,
    SERVICE,
    TOKENS,
    Fleet,
)


def _missing() -> str | None:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        return "Debian's chromium and chromium-driver are not installed (scripts/test-deps.sh)"
    if not AXE.exists() or not HTMX.exists():
        return "the console's npm packages are not built (scripts/build-console.sh)"
    return None


@pytest.fixture(scope="package")
def fleet() -> Iterator[Fleet]:
    """A controller serving the console, with two registered partitions: one fails its backups."""
    why = _missing()
    if why:
        pytest.skip(why)
    tmp = Path(tempfile.mkdtemp(prefix="safehold-web-"))
    saved = {k: os.environ.get(k) for k in ("SAFEHOLD_PASSWORD", "SAFEHOLD_SECRET_KEY")}
    os.environ["SAFEHOLD_PASSWORD"] = "repository password for console tests"
    os.environ["SAFEHOLD_SECRET_KEY"] = base64.urlsafe_b64encode(b"w" * 32).decode()
    source = tmp / "orders"
    source.mkdir()
    (source / "orders.txt").write_text("order 1\norder 2\n")
    storage = tmp / "backups"
    settings = Settings(
        data_dir=tmp / "data", tokens=dict(TOKENS), tick_seconds=3600, fast_kdf=True
    )
    controller = build_controller(settings)
    controller.app.state.console_activity_ttl = 0  # the 24 h chart uncached: tests see each job
    controller.app.state.console_health_keep = 0  # the overview asks the FleetView each time
    try:
        with (
            serve_in_thread(controller.app, lifespan="on") as url,
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as api,
        ):
            for pid, src in ((GOOD, f"dir:{source}"), (BAD, "command:exit 3")):
                r = api.post(
                    "/safehold/partitions",
                    json={
                        "ApplicationName": APP,
                        "ServiceName": SERVICE,
                        "PartitionId": pid,
                        "Source": src,
                    },
                )
                assert r.status_code == 201, r.text
            yield Fleet(url, controller, source, storage, api)
    finally:
        controller.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="package")
def driver(fleet: Fleet) -> Iterator[Any]:
    """One headless Chromium for every console test (a fresh profile)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="safehold-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    d = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    d.set_page_load_timeout(30)
    d.set_script_timeout(30)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)
