"""
A ``mariadb:`` partition restored through the controller to SF's RestorePointTime:
a live controller with its embedded agent, a MariaDB server of the test's own
(mariadb-install-db, mariadbd on a free port with its binary log), a scheduled
physical backup, and a RestorePointTime between two later commits. Exactly the
rows committed before it come back: the binlogs are replayed to the time, not
the newest backup before it restored (``EXACT_PITR_SOURCES``).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest

from safehold.core.snapshot import format_time
from safehold.db import free_port
from safehold.db.mariadb import MariaDbSource
from safehold.db.mysqld import MariaDbServer
from tests.db import test_pg_service
from tests.db.conftest import Env, needs_pg
from tests.db.test_mariadb import _next_second
from tests.db.test_pg_service import PID, api, poll, restore

world = test_pg_service.world  # the fixture: a controller with its agent, a repository

pytestmark = [
    needs_pg,  # the world fixture's environment
    pytest.mark.skipif(
        not all(
            shutil.which(p) for p in ("mariadbd", "mariadb-backup", "mbstream", "mariadb-binlog")
        ),
        reason="MariaDB's server and mariadb-backup are not installed",
    ),
]


def _ids(server: MariaDbServer) -> list[int]:
    return [int(r[0]) for r in server.client().query("SELECT id FROM shop.t ORDER BY id")]


def test_a_mariadb_partition_restores_to_exactly_the_restore_point_time(
    world: tuple[Env, str],
) -> None:
    env, url = world
    live = MariaDbServer(env.root / "maria", free_port())
    target = env.root / "restored"
    port = free_port()
    copy = MariaDbServer(target, port)
    try:
        live.install()
        live.start("--log-bin=binlog", "--server-id=1")
        db = live.client()
        db.query("CREATE DATABASE shop")
        db.query("CREATE TABLE shop.t (id INT PRIMARY KEY) ENGINE=InnoDB")
        db.query("INSERT INTO shop.t VALUES (1)")
        source = f"mysql://root@127.0.0.1:{live.port}"
        api(
            url,
            "POST",
            "/safehold/partitions",
            json={
                "ApplicationName": "fabric:/Maria",
                "ServiceName": "fabric:/Maria/Db",
                "PartitionId": PID,
                "Source": f"mariadb:{source}",
                "RestoreTo": f"mysqldata:{target}#port={port}&start=1",
            },
        )
        policy = {
            "Name": "maria-nightly",
            "AutoRestoreOnDataLoss": False,
            "MaxIncrementalBackups": 0,
            "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT12H"},
            "Storage": {"StorageKind": "FileShare", "Path": str(env.repo_path)},
        }
        api(url, "POST", "/BackupRestore/BackupPolicies/$/Create", json=policy)
        api(
            url,
            "POST",
            f"/Partitions/{PID}/$/EnableBackup",
            json={"BackupPolicyName": "maria-nightly"},
        )
        backups = poll(
            "a scheduled backup",
            lambda: api(url, "GET", f"/Partitions/{PID}/$/GetBackups")["Items"],
        )
        assert len(backups) == 1

        # Binlog events are stamped in whole seconds: rows 2 and 3 in seconds of
        # their own, the restore point in a second between them.
        db.query("INSERT INTO shop.t VALUES (2)")
        _next_second()
        between = datetime.now(UTC)
        _next_second()
        db.query("INSERT INTO shop.t VALUES (3)")
        with env.open_repo() as repo:
            assert MariaDbSource(source).archive_binlogs(repo)  # as a later backup would

        info = restore(url, RestorePointTime=format_time(between))
        assert info["RestoreState"] == "Success", info
        assert copy.running()  # start=1
        assert _ids(copy) == [1, 2]  # the backup holds [1]: row 2 came from the binlog
        copy.stop()

        # The backup itself: only its rows.
        info = restore(url, Latest="true")
        assert info["RestoreState"] == "Success", info
        assert _ids(copy) == [1]
    finally:
        copy.stop()
        live.stop()
