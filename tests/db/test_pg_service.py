"""
A ``postgres:`` partition through the service: a live controller with its embedded
agent, a real cluster made with initdb, the real archive_command hook pushing WAL
into the policy's storage. A scheduled base backup, rows inserted after it, then
restores requested over the SF API: to a RestorePointTime between two commits
(exactly the rows committed before it come back), and to the backup itself.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from safehold.bootstrap import Settings, build_controller
from safehold.core.snapshot import format_time
from safehold.db import LocalServer, free_port
from safehold.db.server import find_bindir
from safehold.testing import serve_in_thread
from tests.db.conftest import PASSWORD, Env, make_env, needs_pg
from tests.db.helpers import sql, switch_and_wait

pytestmark = needs_pg

PID = "0b0b0b0b-7777-4000-8000-000000000011"
ADMIN = "admin-token-for-db-tests"


def api(url: str, method: str, path: str, **kw: Any) -> Any:
    r = httpx.request(
        method,
        url + path,
        params={"api-version": "6.4", **kw.pop("params", {})},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
        **kw,
    )
    assert r.status_code < 400, r.text
    return r.json() if r.content else None


def poll(what: str, probe: Any, limit: float = 240.0) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {limit:.0f} s")


def restore(url: str, **params: str) -> dict[str, Any]:
    """Request a restore of the partition; wait for it to end; return its progress."""
    before = api(url, "GET", f"/Partitions/{PID}/$/GetRestoreProgress").get("TimeStampUtc")

    api(url, "POST", f"/Partitions/{PID}/$/Restore", params=params, json={})

    def ended() -> dict[str, Any] | None:
        info: dict[str, Any] = api(url, "GET", f"/Partitions/{PID}/$/GetRestoreProgress")
        done = info.get("RestoreState") in ("Success", "Failure", "Timeout")
        return info if done and info.get("TimeStampUtc") != before else None

    result: dict[str, Any] = poll("the restore", ended)
    return result


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Env, str]]:
    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    monkeypatch.setenv("SAFEHOLD_SECRET_KEY", base64.urlsafe_b64encode(b"d" * 32).decode())
    monkeypatch.delenv("SAFEHOLD_TOKENS", raising=False)
    settings = Settings(
        data_dir=tmp_path / "ctl",
        tokens={ADMIN: "admin"},
        tick_seconds=0.2,
        schedule_spread=0,
        fast_kdf=True,
    )
    controller = build_controller(settings)
    try:
        with make_env() as env, serve_in_thread(controller.app, lifespan="on") as url:
            yield env, url
    finally:
        controller.close()


def ids(server: LocalServer) -> list[int]:
    return [r[0] for r in sql(server, "SELECT id FROM t ORDER BY id")]


def commit_time(pg: LocalServer, row: int) -> datetime:
    sql(pg, "INSERT INTO t VALUES (%s)", row)
    ts: datetime = sql(pg, "SELECT pg_xact_commit_timestamp(xmin) FROM t WHERE id = %s", row)[0][0]
    return ts.astimezone(UTC)


def test_scheduled_backup_and_point_in_time_restore_through_the_controller(
    world: tuple[Env, str],
) -> None:
    env, url = world
    pg = env.make_cluster()
    sql(pg, "CREATE TABLE t (id int PRIMARY KEY)")
    sql(pg, "INSERT INTO t VALUES (1)")
    target = env.root / "restored"
    port = free_port()
    api(
        url,
        "POST",
        "/safehold/partitions",
        json={
            "ApplicationName": "fabric:/Pg",
            "ServiceName": "fabric:/Pg/Db",
            "PartitionId": PID,
            "Source": f"postgres:{pg.url}#wal_timeout=120",
            "RestoreTo": f"pgdata:{target}#port={port}",
        },
    )
    policy = {
        "Name": "pg-nightly",
        "AutoRestoreOnDataLoss": False,
        "MaxIncrementalBackups": 0,
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT12H"},
        "Storage": {"StorageKind": "FileShare", "Path": str(env.repo_path)},
    }
    api(url, "POST", "/BackupRestore/BackupPolicies/$/Create", json=policy)
    api(url, "POST", f"/Partitions/{PID}/$/EnableBackup", json={"BackupPolicyName": "pg-nightly"})
    backups = poll(
        "a scheduled base backup",
        lambda: api(url, "GET", f"/Partitions/{PID}/$/GetBackups")["Items"],
    )
    assert len(backups) == 1

    t2 = commit_time(pg, 2)
    time.sleep(0.05)  # two distinct commit timestamps, whatever the clock's grain
    t3 = commit_time(pg, 3)
    time.sleep(0.05)
    sql(pg, "INSERT INTO t VALUES (4)")  # a commit after the target, so it is confirmed
    with env.open_repo() as repo:
        switch_and_wait(pg, repo)
    assert t2 < t3

    # RestorePointTime between the commits of rows 2 and 3: exactly 1 and 2 come back.
    at = t2 + (t3 - t2) / 2
    info = restore(url, RestorePointTime=format_time(at))
    assert info["RestoreState"] == "Success", info
    restored = LocalServer(target, port, find_bindir())
    restored.start()
    try:
        assert ids(restored) == [1, 2]
        sql(restored, "INSERT INTO t VALUES (100)")  # promoted: it takes writes
    finally:
        restored.stop()

    # The newest backup itself (Latest): the rows at the backup, and the
    # previous restore is replaced whole.
    info = restore(url, Latest="true")
    assert info["RestoreState"] == "Success", info
    restored.start()
    try:
        assert ids(restored) == [1]
    finally:
        restored.stop()

    # A time after the archived WAL is a clear failure, and the target is kept.
    info = restore(url, RestorePointTime="2100-01-01T00:00:00Z")
    assert info["RestoreState"] == "Failure", info
    assert info["FailureError"]["Code"] == "SAFEHOLD_E_RECOVERY_TARGET"
    assert "after the end of the recoverable window" in info["FailureError"]["Message"]

    # A server running in the target is never restored over.
    restored.start()
    try:
        info = restore(url, Latest="true")
        assert info["RestoreState"] == "Failure"
        assert "is running in" in info["FailureError"]["Message"]
        assert ids(restored) == [1]
    finally:
        restored.stop()
