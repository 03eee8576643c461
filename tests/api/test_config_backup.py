"""Configuration backup to a named blob and restore into a new controller, APIM style."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from safehold.bootstrap import Settings, build_controller
from safehold.testing import serve_in_thread
from tests.api.conftest import auth

V = {"api-version": "6.4"}
PID = "abababab-0000-4000-8000-000000000001"


def poll(c: httpx.Client, location: str) -> dict[str, Any]:
    """GET the operation until it stops answering 202."""
    for _ in range(200):
        r = c.get(location, headers=auth())
        if r.status_code != 202:
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body
        assert r.headers["Location"] == location
        time.sleep(0.05)
    raise AssertionError("the operation never finished")


def test_backup_then_restore_into_a_new_controller(
    client: httpx.Client, tmp_path: Path, settings: Settings
) -> None:
    """A fresh controller gets the policies (with working secrets), partitions and mappings back."""
    store = tmp_path / "config-store"
    (tmp_path / "src").mkdir()
    r = client.post(
        "/safehold/partitions",
        json={
            "ApplicationName": "fabric:/Cfg",
            "ServiceName": "fabric:/Cfg/Svc",
            "PartitionId": PID,
            "Source": f"dir:{tmp_path / 'src'}",
        },
        headers=auth(),
    )
    assert r.status_code == 201
    policy = {
        "Name": "cfg",
        "AutoRestoreOnDataLoss": False,
        "MaxIncrementalBackups": 0,
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT1H"},
        "Storage": {
            "StorageKind": "FileShare",
            "Path": str(tmp_path / "s"),
            "PrimaryPassword": "keep-me",
        },
    }
    client.post("/BackupRestore/BackupPolicies/$/Create", params=V, json=policy, headers=auth())
    client.post(
        "/Services/Cfg~Svc/$/EnableBackup",
        params=V,
        json={"BackupPolicyName": "cfg"},
        headers=auth(),
    )
    client.post("/Services/Cfg~Svc/$/SuspendBackup", params=V, headers=auth())

    body = {"Storage": {"StorageKind": "FileShare", "Path": str(store)}, "BackupName": "nightly"}
    r = client.post("/safehold/config/$/Backup", json=body, headers=auth())
    assert r.status_code == 202
    done = poll(client, r.headers["Location"])
    assert done["Status"] == "Succeeded", done

    settings.data_dir = tmp_path / "new-controller"
    fresh = build_controller(settings)
    try:
        with serve_in_thread(fresh.app, lifespan="off") as url, httpx.Client(base_url=url) as c2:
            assert (
                c2.get("/BackupRestore/BackupPolicies", params=V, headers=auth()).json()["Items"]
                == []
            )
            r = c2.post("/safehold/config/$/Restore", json=body, headers=auth())
            assert r.status_code == 202
            assert poll(c2, r.headers["Location"])["Status"] == "Succeeded"
            info = c2.get(
                f"/Partitions/{PID}/$/GetBackupConfigurationInfo", params=V, headers=auth()
            ).json()
            assert (info["PolicyName"], info["PolicyInheritedFrom"]) == ("cfg", "Service")
            assert info["SuspensionInfo"]["IsSuspended"]
            shown = c2.get("/BackupRestore/BackupPolicies/cfg", params=V, headers=auth()).json()
            assert shown["Storage"]["PrimaryPassword"] == "****"
            missing = c2.post(
                "/safehold/config/$/Restore", json={**body, "BackupName": "nope"}, headers=auth()
            )
            failed = poll(c2, missing.headers["Location"])
            assert failed["Status"] == "Failed"
            assert "nope" in failed["Error"]["Message"]
        with fresh.ctx.uow() as uow:
            from safehold.service.policies import load_policy

            assert load_policy(fresh.ctx, uow, "cfg").storage.primary_password == "keep-me"  # type: ignore[union-attr]
    finally:
        fresh.close()


@pytest.mark.parametrize(
    "body",
    [
        None,
        {"BackupName": "x"},
        {"Storage": {"StorageKind": "FileShare", "Path": "/tmp/x"}, "BackupName": "a/b"},
    ],
)
def test_bad_requests(client: httpx.Client, body: Any) -> None:
    """Missing storage or a bad name is a 400; an unknown operation is a 404."""
    r = client.post("/safehold/config/$/Backup", json=body, headers=auth())
    assert r.status_code == 400, r.text
    assert client.get("/safehold/config/operations/nope", headers=auth()).status_code == 404
