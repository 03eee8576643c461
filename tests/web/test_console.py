"""
The operator console in headless Chromium, against a live controller with a real engine.

The tests run in order and share one controller: the admin creates a policy
(first with a validation error), enables it on the application, backs up a
partition and restores it; a failing partition's reason is shown; a reader
sees everything and can act on nothing, and a forged request gets 403.
Every page visited is checked with axe-core.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.web.browser import (
    ADMIN,
    APP,
    BAD,
    GOOD,
    OPERATOR,
    READER,
    Fleet,
    check_page,
    click,
    element,
    fill,
    screenshot,
    sign_in,
    visit,
    wait_text,
)

SECRET = "smb-password-never-shown"


def test_admin_creates_a_policy_and_sees_the_validation_error_beside_the_field(
    driver: Any, fleet: Fleet
) -> None:
    sign_in(driver, fleet, ADMIN, shot="login")
    check_page(driver)
    visit(driver, fleet, "/console/policies")
    click(driver, "new-policy")
    fill(driver, "Name", "nightly")
    fill(driver, "Interval", "PT10S")
    fill(driver, "Path", str(fleet.storage))
    fill(driver, "PrimaryUserName", "backup")
    fill(driver, "PrimaryPassword", SECRET)
    fill(driver, "RetentionDuration", "P30D")
    click(driver, "save-policy")

    error = element(driver, "e-Interval").text
    assert "Minimum time interval supported is 1 minute" in error
    assert driver.find_element(By.ID, "f-Interval").get_attribute("aria-invalid") == "true"
    assert SECRET not in driver.page_source  # not even echoed back into the form
    check_page(driver, "policy-validation-error")

    fill(driver, "Interval", "PT1H")
    fill(driver, "PrimaryPassword", SECRET)
    click(driver, "save-policy")
    assert "policy nightly created" in wait_text(driver, "main", "nightly created")
    assert "every PT1H" in driver.find_element(By.ID, "policies").text
    check_page(driver, "policies")

    # Editing shows the secret as stored but never renders it, and keeps it if not re-entered.
    driver.find_element(By.LINK_TEXT, "nightly").click()
    password = element(driver, "f-PrimaryPassword")
    assert password.get_attribute("value") == ""
    assert "****" in password.get_attribute("placeholder")
    assert SECRET not in driver.page_source
    # A new location is tried first when asked: an unusable one is refused and nothing changes.
    fill(driver, "Path", "/etc/hostname/not-a-directory")
    click(driver, "f-ValidateConnection")
    click(driver, "save-policy")
    assert "cannot use storage" in wait_text(driver, "main", "cannot use storage")
    check_page(driver, "policy-connection-test")
    fill(driver, "Path", str(fleet.storage))
    fill(driver, "MaxIncrementalBackups", "3")
    click(driver, "save-policy")
    wait_text(driver, "main", "policy nightly saved")
    stored = fleet.api.get("/BackupRestore/BackupPolicies/nightly?api-version=6.4").json()
    assert stored["MaxIncrementalBackups"] == 3
    assert stored["Storage"]["Path"] == str(fleet.storage)
    assert stored["Storage"]["PrimaryPassword"] == "****"  # still set, never shown


def test_admin_enables_the_policy_on_the_application(driver: Any, fleet: Fleet) -> None:
    visit(driver, fleet, "/console/tree")
    form = driver.find_element(By.CSS_SELECTOR, "section.app > .actions form")
    Select(form.find_element(By.TAG_NAME, "select")).select_by_visible_text("nightly")
    form.find_element(By.TAG_NAME, "button").click()
    wait_text(driver, "main", f"backup enabled on {APP} with nightly")
    rows = driver.find_element(By.CSS_SELECTOR, "table.parts").text
    assert rows.count("nightly (from application)") == 2
    check_page(driver, "tree")
    info = fleet.api.get(f"/Partitions/{GOOD}/$/GetBackupConfigurationInfo?api-version=6.4")
    assert info.json()["PolicyName"] == "nightly"


def test_backup_runs_with_live_progress_and_appears_in_the_timeline(
    driver: Any, fleet: Fleet
) -> None:
    visit(driver, fleet, f"/console/partitions/{GOOD}")
    click(driver, "backup-now")
    wait_text(driver, "main", "backup started")
    jobs = wait_text(driver, "job-rows", "Success")  # htmx reloads the page when the job ends
    assert "backup" in jobs
    assert driver.find_element(By.ID, "health").text == "Ok"
    timeline = driver.find_element(By.CSS_SELECTOR, "ol.timeline").text
    assert "Full" in timeline
    assert "LSN 1" in timeline
    check_page(driver, "partition")


def test_restore_asks_for_a_confirmation_naming_what_is_overwritten(
    driver: Any, fleet: Fleet
) -> None:
    (fleet.source / "orders.txt").write_text("a mistake\n")
    visit(driver, fleet, f"/console/partitions/{GOOD}")
    click(driver, "restore-next")
    warning = element(driver, "overwrite-warning").text
    assert GOOD in warning
    assert str(fleet.source) in warning
    assert "overwrites" in warning
    check_page(driver, "restore-confirm")
    click(driver, "confirm")
    click(driver, "confirm-restore")
    wait_text(driver, "main", "restore started")
    wait_text(driver, "job-rows", "restore Success")
    assert (fleet.source / "orders.txt").read_text() == "order 1\norder 2\n"


def test_a_failed_backup_shows_its_reason(driver: Any, fleet: Fleet) -> None:
    sign_in(driver, fleet, OPERATOR)
    visit(driver, fleet, f"/console/partitions/{BAD}")
    click(driver, "backup-now")
    jobs = wait_text(driver, "job-rows", "Failure")
    reason = driver.find_element(By.CSS_SELECTOR, "#jobs tbody tr td.reason").text
    assert reason, jobs
    assert "3" in reason  # the command's exit status
    check_page(driver, "failed-job")
    # The overview's health is the fleet view, refreshed in the background
    # (at most a second old): reload until the failure shows.
    for _ in range(50):
        driver.get(fleet.url + "/console/")
        if driver.find_elements(By.ID, "problems"):
            break
        time.sleep(0.2)
    assert "2 succeeded, 1 failed" in wait_text(driver, "activity-total", "failed")
    check_page(driver, "overview-with-failure")
    assert BAD in driver.find_element(By.ID, "problems").text


def test_suspend_resume_and_a_clean_up_that_needs_the_name_typed(driver: Any, fleet: Fleet) -> None:
    visit(driver, fleet, "/console/tree")
    driver.find_element(By.CSS_SELECTOR, f"button[aria-label='Suspend backup of {APP}']").click()
    wait_text(driver, "main", f"backup suspended on {APP}")
    assert "yes (at the application)" in driver.find_element(By.CSS_SELECTOR, "table.parts").text
    driver.find_element(By.CSS_SELECTOR, f"button[aria-label='Resume backup of {APP}']").click()
    wait_text(driver, "main", f"backup resumed on {APP}")

    # Deleting the backups too needs the application's name typed; without it nothing changes.
    driver.find_element(By.CSS_SELECTOR, f"a[aria-label='Disable backup on {APP}']").click()
    element(driver, "clean").click()
    check_page(driver, "disable-confirm")
    click(driver, "confirm-disable")
    wait_text(driver, "main", f"type {APP} to confirm")
    info = fleet.api.get(f"/Partitions/{GOOD}/$/GetBackupConfigurationInfo?api-version=6.4")
    assert info.json()["PolicyName"] == "nightly"


def test_a_reader_sees_everything_and_can_change_nothing(driver: Any, fleet: Fleet) -> None:
    sign_in(driver, fleet, READER)
    for path in ("/console/tree", f"/console/partitions/{GOOD}", "/console/policies/nightly"):
        visit(driver, fleet, path)
        buttons = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "main button")]
        assert buttons in ([], ["Filter"])  # the tree's search is the only button
        assert not driver.find_elements(By.CSS_SELECTOR, "main form[method=post]")
        assert not driver.find_elements(By.ID, "restore-next")
    visit(driver, fleet, "/console/agents", "agents")
    assert "alive" in driver.find_element(By.ID, "agents").text

    # A forged request, with the reader's own session and CSRF token, is refused.
    visit(driver, fleet, f"/console/partitions/{GOOD}", "reader-partition")
    assert "LSN 1" in driver.find_element(By.ID, "main").text  # a reader sees the backups
    csrf = driver.find_element(By.CSS_SELECTOR, "form.signout input[name=csrf]").get_attribute(
        "value"
    )
    status = driver.execute_async_script(
        """
        const [url, csrf, done] = arguments;
        fetch(url, {method: 'POST', body: new URLSearchParams({csrf, type: 'Full'}),
                    redirect: 'manual'}).then(r => done(r.status));
        """,
        f"{fleet.url}/console/partitions/{GOOD}/backup",
        csrf,
    )
    assert status == 403


def test_cookie_flags_csrf_and_the_api_refusing_the_cookie(fleet: Fleet) -> None:
    with httpx.Client(base_url=fleet.url) as h:
        assert h.post("/console/login", data={"token": "wrong"}).status_code == 401
        r = h.post("/console/login", data={"token": ADMIN})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "path=/console" in cookie
        assert "secure" not in cookie  # plain HTTP here; under TLS the cookie is Secure
        assert h.get("/console/").status_code == 200
        # Every action needs the session's CSRF token, whatever the role.
        no_token = {"type": "Full"}
        assert h.post(f"/console/partitions/{GOOD}/backup", data=no_token).status_code == 403
        forged = {"csrf": "not-the-token", "type": "Full"}
        assert h.post(f"/console/partitions/{GOOD}/backup", data=forged).status_code == 403
        # The REST API wants a bearer token: the console's cookie is no credential there.
        assert h.get("/safehold/agents").status_code == 401
        h.post("/console/logout", data={"csrf": "wrong"})
        assert h.get("/console/").status_code == 200  # a bad CSRF token signs nobody out
        missing = h.get("/console/partitions/33333333-3333-4333-8333-333333333333")
        assert missing.status_code == 404
        assert "text/html" in missing.headers["content-type"]
        page = h.get("/console/").text
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        old = h.cookies["safehold_session"]
        assert h.post("/console/logout", data={"csrf": csrf}).status_code == 303
        h.cookies.clear()
        h.cookies.set("safehold_session", old)
        gone = h.get("/console/")  # the old cookie was forgotten on the server
        assert gone.status_code == 303
        assert gone.headers["location"].endswith("/console/login")


def test_browsers_asking_for_the_root_get_the_console_and_the_docs_are_local(
    fleet: Fleet,
) -> None:
    with httpx.Client(base_url=fleet.url) as h:
        r = h.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
        assert r.status_code == 303
        assert r.headers["location"] == "/console/"
        assert h.get("/", headers={"Accept": "application/json"}).status_code != 303
        for page, asset in (
            ("/docs", "/console/static/vendor/swagger-ui/swagger-ui-bundle.js"),
            ("/redoc", "/console/static/vendor/redoc/redoc.standalone.js"),
        ):
            html = h.get(page).text
            assert asset in html
            assert "cdn." not in html
            assert "fonts.googleapis" not in html
            assert h.get(asset).status_code == 200
        doc = h.get("/openapi.json").json()
        assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
        assert doc["security"] == [{"bearerAuth": []}]


def test_swagger_ui_authorize_sends_the_bearer_token(driver: Any, fleet: Fleet) -> None:
    driver.get(fleet.url + "/docs")
    wait_text(driver, "swagger-ui", "Authorize")
    driver.find_element(By.CSS_SELECTOR, "button.authorize").click()
    driver.find_element(By.CSS_SELECTOR, ".modal-ux input[type=text]").send_keys(READER)
    driver.find_element(By.CSS_SELECTOR, ".modal-ux button.authorize").click()
    driver.find_element(By.CSS_SELECTOR, ".modal-ux button.btn-done").click()
    # "Try it out" on a reader's route now gets 200, with the token sent as a bearer.
    op = element(driver, "operations-Agents-Agents-list_agents")
    op.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    WebDriverWait(driver, 10).until(lambda d: op.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
    op.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    op.find_element(By.CSS_SELECTOR, "button.execute").click()
    WebDriverWait(driver, 20).until(
        lambda d: op.find_elements(
            By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status"
        )
    )
    status = op.find_element(By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status")
    assert status.text.strip() == "200"
    assert f"Bearer {READER}" in op.find_element(By.CSS_SELECTOR, ".curl-command").text
    # Swagger UI's own markup is not ours to fix (axe finds contrast issues in it).
    screenshot(driver, "docs")
