"""
``mariadb:`` and ``redis:`` partition sources through the agent's work items
(``agent.worker.execute`` with the real engine and file storage), on servers of
the test's own; and what the catalog refuses for database sources.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from safehold.agent.worker import execute
from safehold.bootstrap import open_policy_storage
from safehold.core.policy import PolicyError
from safehold.core.progress import CountingProgress
from safehold.core.snapshot import format_time
from safehold.core.work import Outcome, WorkItem
from safehold.db import free_port
from safehold.db.mysqld import MariaDbServer
from safehold.db.redis import RedisServer
from safehold.repo.keys import KdfParams
from safehold.service.engine import RepoEngine
from safehold.service.partitions import check_restore_to, check_source

PID = "0c0c0c0c-8888-4000-8000-000000000021"


@pytest.fixture
def root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="safehold-dbsrc-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        for pidfile in d.rglob("redis.pid"):
            RedisServer(pidfile.parent, 0).stop()
        for run in d.rglob("*.run"):
            MariaDbServer(run.with_name(run.name[: -len(".run")]), 0).stop()
        shutil.rmtree(d, ignore_errors=True)


def job(kind: str, source: str, target: str, store: Path, params: dict[str, Any]) -> WorkItem:
    return WorkItem.model_validate(
        {
            "JobId": f"job-{kind}",
            "Kind": kind,
            "Deadline": "2100-01-01T00:00:00Z",
            "Partition": {
                "PartitionId": PID,
                "ApplicationName": "fabric:/Db",
                "ServiceName": "fabric:/Db/Svc",
                "Source": source,
                "RestoreTo": target,
            },
            "Storage": {"StorageKind": "FileShare", "Path": str(store)},
            "Params": params,
        }
    )


def run(item: WorkItem) -> Outcome:
    engine = RepoEngine("db sources test password", kdf=KdfParams(n=1024))
    return execute(
        item, engine=engine, open_storage=open_policy_storage, progress=CountingProgress()
    )


def redis(port: int, *args: str) -> str:
    argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(not shutil.which("redis-server"), reason="Redis is not installed")
def test_a_redis_partition_backs_up_and_restores_through_work_items(root: Path) -> None:
    live = RedisServer(root / "live", free_port())
    live.start("--repl-diskless-sync-delay", "0")
    redis(live.port, "SET", "k", "v1")
    src, target = f"redis:redis://127.0.0.1:{live.port}", f"dir:{root / 'restored'}"
    out = run(job("backup", src, target, root / "store", {"backup_type": "Full"}))
    assert out.State == "Success", out
    assert out.Snapshot is not None
    redis(live.port, "SET", "k", "v2")
    out = run(job("restore", src, target, root / "store", {"snapshot_id": out.Snapshot.Id}))
    assert out.State == "Success", out
    copy = RedisServer(root / "restored", free_port())
    copy.start()
    assert redis(copy.port, "GET", "k") == "v1"


needs_mariadb = pytest.mark.skipif(
    not all(shutil.which(p) for p in ("mariadbd", "mariadb-backup", "mbstream")),
    reason="MariaDB's server and mariadb-backup are not installed",
)


@needs_mariadb
def test_a_mariadb_partition_restores_to_a_time_through_work_items(root: Path) -> None:
    live = MariaDbServer(root / "live", free_port())
    live.install()
    live.start("--log-bin=binlog", "--server-id=1")
    db = live.client()
    db.query(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1)"
    )
    port = free_port()
    src = f"mariadb:mysql://root@127.0.0.1:{live.port}"
    target = f"mysqldata:{root / 'restored'}#port={port}&start=1"
    store = root / "store"
    out = run(job("backup", src, target, store, {"backup_type": "Full"}))
    assert out.State == "Success", out
    assert out.Snapshot is not None
    db.query("INSERT INTO app.t VALUES (2)")
    at = datetime.now(UTC)
    time.sleep(1.05 - at.timestamp() % 1.0 + 1.0)  # row 3 in a later second than *at*
    db.query("INSERT INTO app.t VALUES (3)")
    db.query("FLUSH BINARY LOGS")
    # The next backup archives the closed binlogs (and is itself a backup).
    assert run(job("backup", src, target, store, {"backup_type": "Full"})).State == "Success"
    params = {"snapshot_id": out.Snapshot.Id, "restore_time": format_time(at)}
    restored = run(job("restore", src, target, store, params))
    assert restored.State == "Success", restored
    copy = MariaDbServer(root / "restored", port)
    try:
        assert copy.running()  # start=1
        assert [r[0] for r in copy.client().query("SELECT id FROM app.t ORDER BY id")] == ["1", "2"]
    finally:
        copy.stop()


def test_the_catalog_takes_database_sources_without_passwords() -> None:
    assert check_source("postgres:postgresql://backup@db1/postgres").startswith("postgres:")
    assert check_source("redis:redis://cache1:6379") == "redis:redis://cache1:6379"
    assert check_restore_to("pgdata:/srv/pg/data#port=5433") == "pgdata:/srv/pg/data#port=5433"
    assert check_restore_to("mysqldata:/srv/mysql") == "mysqldata:/srv/mysql"
    for secret in (
        "postgres:postgresql://backup:hunter2@db1/postgres",
        "mariadb:mysql://root:hunter2@db1:3306",
        "redis:redis://:hunter2@cache1:6379",
    ):
        with pytest.raises(PolicyError, match="must not carry a password") as err:
            check_source(secret)
        assert "hunter2" not in str(err.value)
