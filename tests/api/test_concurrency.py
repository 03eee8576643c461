"""Many clients at once against a controller with its scheduler and embedded agent running."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from safehold.bootstrap import Controller, Settings, build_controller
from safehold.testing import serve_in_thread
from tests.api.conftest import auth
from tests.service.catalogs import catalog_url, pg_database

__all__ = ["catalog_url", "pg_database"]

V = {"api-version": "6.4"}
PIDS = [f"5e5e5e5e-0000-4000-8000-00000000000{i}" for i in range(1, 5)]


@pytest.fixture
def busy_controller(settings: Settings, catalog_url: str) -> Iterator[Controller]:
    """A controller on SQLite or PostgreSQL."""
    settings.catalog = catalog_url
    c = build_controller(settings)
    yield c
    c.close()


def test_parallel_clients_never_see_a_server_error(
    busy_controller: Controller, tmp_path: Path
) -> None:
    """Backups, progress polls and listings from 8 threads: only 2xx, 404 (no job yet) and 409."""
    controller = busy_controller
    with serve_in_thread(controller.app) as url, httpx.Client(base_url=url, headers=auth()) as c:
        for pid in PIDS:
            src = tmp_path / pid
            src.mkdir()
            (src / "f").write_bytes(pid.encode() * 1000)
            r = c.post(
                "/safehold/partitions",
                json={
                    "ApplicationName": "fabric:/Busy",
                    "ServiceName": "fabric:/Busy/Svc",
                    "PartitionId": pid,
                    "Source": f"dir:{src}",
                },
            )
            assert r.status_code == 201
        policy = {
            "Name": "busy",
            "AutoRestoreOnDataLoss": False,
            "MaxIncrementalBackups": 3,
            "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT1M"},
            "Storage": {"StorageKind": "FileShare", "Path": str(tmp_path / "store")},
        }
        assert (
            c.post("/BackupRestore/BackupPolicies/$/Create", params=V, json=policy).status_code
            == 201
        )
        assert (
            c.post(
                "/Applications/Busy/$/EnableBackup", params=V, json={"BackupPolicyName": "busy"}
            ).status_code
            == 202
        )
        codes: Counter[int] = Counter()
        lock = threading.Lock()
        stop = time.monotonic() + 6

        def worker(i: int) -> None:
            with httpx.Client(base_url=url, headers=auth(), timeout=30) as w:
                n = 0
                while time.monotonic() < stop:
                    pid = PIDS[(i + n) % len(PIDS)]
                    n += 1
                    r = call(w, n % 5, pid)
                    with lock:
                        codes[r.status_code] += 1

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(codes) <= {200, 202, 404, 409}, codes
        assert codes[202] >= 1
        done = c.get("/Applications/Busy/$/GetBackups", params=V).json()["Items"]
        assert {b["PartitionInformation"]["Id"] for b in done} == set(PIDS)


def call(w: httpx.Client, which: int, pid: str) -> httpx.Response:
    """One of the five requests the clients mix."""
    if which == 0:
        return w.post(f"/Partitions/{pid}/$/Backup", params=V)
    if which == 1:
        return w.get(f"/Partitions/{pid}/$/GetBackupProgress", params=V)
    if which == 2:
        return w.get("/Applications/Busy/$/GetBackups", params=V)
    if which == 3:
        return w.get("/safehold/health")
    return w.get(f"/Partitions/{pid}/$/GetBackupConfigurationInfo", params=V)
