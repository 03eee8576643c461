"""
The console's storage-and-keys, configuration-backup, drill and recovery-point pages.

They share the package's live controller with ``test_console.py`` but set up
their own application (``fabric:/Ops``), policy and partitions, so they run
alone too. An admin rotates the repository key and the repository itself says
the generation went up; a reader has no button and a forged POST gets 403; the
key routes of the API answer 403, 404, 409 and 503 as documented; a drill run
from the console shows its outcome and measured RTO; a configuration backup
started from the console is listed; a late partition's recovery point comes
first on the overview. Every page is checked with axe-core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from safehold.core.policy import EntityRef
from safehold.service import policies, protection
from tests.web.browser import (
    ADMIN,
    OPERATOR,
    READER,
    Fleet,
    check_page,
    click,
    element,
    fill,
    sign_in,
    visit,
    wait_text,
)

OPS_APP = "fabric:/Ops"
OPS_SERVICE = "fabric:/Ops/Ledger"
OPS_GOOD = "44444444-4444-4444-8444-444444444444"
OPS_LATE = "55555555-5555-4555-8555-555555555555"
V = {"api-version": "6.4"}


def _policy(name: str, path: Path) -> dict[str, Any]:
    return {
        "Name": name,
        "AutoRestoreOnDataLoss": False,
        "MaxIncrementalBackups": 0,
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT1H"},
        "Storage": {"StorageKind": "FileShare", "Path": str(path)},
    }


def _wait_backup(api: httpx.Client, pid: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = api.get(f"/Partitions/{pid}/$/GetBackupProgress", params=V).json()
        if state.get("BackupState") == "Success":
            return
        assert state.get("BackupState") not in ("Failure", "Timeout"), state
        time.sleep(0.3)
    raise AssertionError(f"the backup of {pid} did not finish")


@pytest.fixture(scope="module")
def ops(fleet: Fleet) -> Path:
    """Policy ``ops`` (its repository created) on fabric:/Ops, two partitions, one backed up."""
    ctx = fleet.controller.ctx
    root = fleet.storage.parent
    store = root / "ops-backups"
    policies.create_policy(ctx, _policy("ops", store), validate_connection=True)
    for pid in (OPS_GOOD, OPS_LATE):
        src = root / f"ops-{pid[:4]}"
        src.mkdir(exist_ok=True)
        (src / "data.txt").write_text(f"ledger of {pid}\n")
        r = fleet.api.post(
            "/safehold/partitions",
            json={
                "ApplicationName": OPS_APP,
                "ServiceName": OPS_SERVICE,
                "PartitionId": pid,
                "Source": f"dir:{src}",
            },
        )
        assert r.status_code == 201, r.text
    protection.enable_backup(ctx, EntityRef("Application", OPS_APP), "ops")
    assert fleet.api.post(f"/Partitions/{OPS_GOOD}/$/Backup", params=V).status_code == 202
    _wait_backup(fleet.api, OPS_GOOD)
    return store


def _key_list(store: Path) -> list[int]:
    """The key generations as ``safehold key list`` reads them from the repository."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "safehold"), "key", "list", "--json"],
        env={**os.environ, "SAFEHOLD_REPO": str(store)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    gens: list[int] = json.loads(out.stdout)["generations"]
    return gens


def _forge(driver: Any, fleet: Fleet, path: str, **fields: str) -> int:
    """POST *fields* to *path* with the signed-in session's own CSRF token; the status."""
    csrf = driver.find_element(By.CSS_SELECTOR, "form.signout input[name=csrf]").get_attribute(
        "value"
    )
    status: int = driver.execute_async_script(
        """
        const [url, body, done] = arguments;
        fetch(url, {method: 'POST', body: new URLSearchParams(body), redirect: 'manual'})
          .then(r => done(r.status));
        """,
        fleet.url + path,
        {"csrf": csrf, **fields},
    )
    return status


def test_admin_rotates_the_repository_key(driver: Any, fleet: Fleet, ops: Path) -> None:
    assert _key_list(ops) == [1]
    sign_in(driver, fleet, ADMIN)
    visit(driver, fleet, "/console/policies")
    driver.find_element(By.CSS_SELECTOR, "a[aria-label='Storage and keys of ops']").click()
    assert element(driver, "key-generation").text == "1"
    check_page(driver, "keys")
    click(driver, "rotate-key")  # not confirmed: nothing happens
    assert "tick the box" in wait_text(driver, "main", "tick the box")
    assert _key_list(ops) == [1]
    click(driver, "confirm-rotate")
    click(driver, "rotate-key")
    wait_text(driver, "main", "key rotated: new data is written under key generation 2")
    assert driver.find_element(By.ID, "key-generation").text == "2"
    assert _key_list(ops) == [1, 2]  # the repository itself says so
    # A backup after the rotation works (written under generation 2).
    assert fleet.api.post(f"/Partitions/{OPS_GOOD}/$/Backup", params=V).status_code == 202
    _wait_backup(fleet.api, OPS_GOOD)


def test_a_reader_cannot_rotate_and_a_forged_request_gets_403(
    driver: Any, fleet: Fleet, ops: Path
) -> None:
    sign_in(driver, fleet, READER)
    visit(driver, fleet, "/console/policies/ops/keys", "keys-reader")
    assert driver.find_element(By.ID, "key-generation").text == "2"
    assert not driver.find_elements(By.ID, "rotate-key")
    assert not driver.find_elements(By.CSS_SELECTOR, "main form[method=post]")
    assert _forge(driver, fleet, "/console/policies/ops/keys/rotate", confirm="on") == 403
    assert _key_list(ops) == [1, 2]


def test_the_key_routes_of_the_api(fleet: Fleet, ops: Path) -> None:
    ctx = fleet.controller.ctx
    root = fleet.storage.parent
    (root / "empty-store").mkdir(exist_ok=True)
    policies.create_policy(ctx, _policy("no-repo-yet", root / "empty-store"))
    policies.create_policy(ctx, _policy("unreachable", Path("/etc/hostname/not-a-dir")))
    with httpx.Client(base_url=fleet.url) as h:
        reader = {"Authorization": f"Bearer {READER}"}
        admin = {"Authorization": f"Bearer {ADMIN}"}
        rotate = "/safehold/policies/{}/keys/$/Rotate"
        assert h.post(rotate.format("ops"), headers=reader).status_code == 403
        r = h.post(rotate.format("ops"), headers=admin)
        assert r.status_code == 200, r.text
        assert r.json() == {"PolicyName": "ops", "KeyGeneration": 3, "KeyGenerations": [1, 2, 3]}
        assert h.get("/safehold/policies/ops/keys", headers=reader).json()["KeyGeneration"] == 3
        missing = h.post(rotate.format("nosuch"), headers=admin)
        assert missing.status_code == 404
        assert missing.json()["Error"]["Code"] == "FABRIC_E_BACKUP_POLICY_NOT_EXISTING"
        empty = h.post(rotate.format("no-repo-yet"), headers=admin)
        assert empty.status_code == 409
        assert "holds no repository yet" in empty.json()["Error"]["Message"]
        down = h.post(rotate.format("unreachable"), headers=admin)
        assert down.status_code == 503
        assert "nothing was changed" in down.json()["Error"]["Message"]
        doc = h.get("/openapi.json").json()
        op = doc["paths"]["/safehold/policies/{name}/keys/$/Rotate"]["post"]
        assert {"403", "404", "409", "503"} <= set(op["responses"])
    assert _key_list(ops) == [1, 2, 3]
    for name in ("no-repo-yet", "unreachable"):
        policies.delete_policy(ctx, name)


def test_a_drill_run_from_the_console_shows_its_outcome_and_rto(
    driver: Any, fleet: Fleet, ops: Path
) -> None:
    sandbox = fleet.storage.parent / "drill-sandbox"
    r = fleet.api.post(
        "/safehold/drills/policies",
        json={
            "Name": "ops-drill",
            "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT12H"},
            "Sandbox": {"Directory": str(sandbox)},
            "Validators": [{"Kind": "Files", "Exist": ["data.txt"], "MinFiles": 1}],
            "Objectives": {"Rpo": "PT2H", "Rto": "PT10M"},
        },
    )
    assert r.status_code == 201, r.text
    attach = fleet.api.post(
        "/safehold/drills/policies/ops-drill/$/Attach", json={"PartitionId": OPS_GOOD}
    )
    assert attach.status_code == 204, attach.text

    sign_in(driver, fleet, READER)
    visit(driver, fleet, "/console/drills")
    assert not driver.find_elements(By.ID, "run-drill")  # a reader runs no drill
    assert _forge(driver, fleet, "/console/drills/run", partition=OPS_GOOD) == 403

    sign_in(driver, fleet, OPERATOR)
    visit(driver, fleet, "/console/drills")
    assert f"partition {OPS_GOOD}" in driver.find_element(By.ID, "drill-policies").text
    fill(driver, "partition", OPS_GOOD)
    click(driver, "run-drill")
    wait_text(driver, "main", f"drill of {OPS_GOOD} started")
    runs = wait_text(driver, "drill-runs", "Success", timeout=120)  # htmx polls the runs
    assert OPS_GOOD in runs
    row = driver.find_element(By.CSS_SELECTOR, "#drill-runs tbody tr")
    rto = row.find_element(By.CSS_SELECTOR, "td.rto").text
    assert rto.split()[0] != "—"
    assert " s" in rto or "min" in rto
    assert "Files passed" in row.text
    check_page(driver, "drills")
    # The partition's own page lists its drills, and runs one too.
    visit(driver, fleet, f"/console/partitions/{OPS_GOOD}")
    assert "Success" in driver.find_element(By.ID, "partition-drills").text
    click(driver, "drill-now")
    wait_text(driver, "main", f"drill of {OPS_GOOD} started")
    states: list[str] = []
    for _ in range(200):  # reload until the second drill has ended
        rows = driver.find_elements(By.CSS_SELECTOR, "#partition-drills tbody tr")
        states = [r.text for r in rows]
        if len(states) == 2 and all("Success" in t for t in states):
            break
        time.sleep(0.3)
        driver.refresh()
    assert [t.count("Success") for t in states] == [1, 1]
    # The recovery points show the partition's last drill RTO too.
    visit(driver, fleet, "/console/recovery")
    assert OPS_GOOD in driver.find_element(By.ID, "rpo-all").text


def test_a_configuration_backup_is_listed_after_back_up_now(
    driver: Any, fleet: Fleet, ops: Path
) -> None:
    sign_in(driver, fleet, READER)
    visit(driver, fleet, "/console/config?policy=ops")
    assert not driver.find_elements(By.ID, "config-backup-now")
    assert _forge(driver, fleet, "/console/config/backup", policy="ops", BackupName="x") == 403

    sign_in(driver, fleet, ADMIN)
    visit(driver, fleet, "/console/config?policy=ops")
    fill(driver, "BackupName", "console-config-1")
    click(driver, "config-backup-now")
    wait_text(driver, "main", "configuration backup console-config-1 started")
    wait_text(driver, "config-ops", "Succeeded")  # htmx polls while it runs
    listed = wait_text(driver, "config-backups", "console-config-1")
    assert "console-config-1" in listed
    check_page(driver, "config-backup")


def test_the_overview_lists_a_late_partitions_recovery_point_first(
    driver: Any, fleet: Fleet, ops: Path
) -> None:
    ctx = fleet.controller.ctx
    five_hours_ago = ctx.clock() - timedelta(hours=5)
    with ctx.uow() as uow:
        uow.partitions.record_backup_outcome(
            OPS_LATE, state="Success", failure=None, good_at=five_hours_ago
        )
        uow.commit()
    sign_in(driver, fleet, READER)
    first = ""
    for _ in range(60):  # the recovery points are shared for a second
        visit(driver, fleet, "/console/")
        first = driver.find_element(By.CSS_SELECTOR, "#rpo tbody tr").text
        if OPS_LATE in first:
            break
        time.sleep(0.3)
    assert OPS_LATE in first
    assert "late" in first
    assert "5 h / 1 h" in first  # its age against the policy's interval
    assert int(driver.find_element(By.ID, "late-count").text) >= 1
    check_page(driver, "overview-rpo")
    visit(driver, fleet, "/console/recovery?late=true", "recovery")
    rows = driver.find_elements(By.CSS_SELECTOR, "#rpo-all tbody tr")
    assert OPS_LATE in rows[0].text
    assert all("late" in r.text for r in rows)
    # The partition list shows it late too.
    visit(driver, fleet, "/console/tree?q=fabric:/Ops")
    row = driver.find_element(By.XPATH, f"//tr[td/a[text()='{OPS_LATE}']]")
    assert "late" in row.find_element(By.CSS_SELECTOR, "td.rpo").text
