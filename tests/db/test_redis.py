"""
Redis RDB backups and restores with real servers of the test's own (redis-server
on free ports, in temporary directories); the machine's server at 6379 is not touched.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.db import DbError, free_port
from safehold.db.redis import RedisServer, RedisSource, is_redis_backup, restore_redis
from safehold.repo import Repository
from safehold.storage.file import FileStorage
from tests.db.conftest import FAST_KDF, PASSWORD

pytestmark = pytest.mark.skipif(
    not all(shutil.which(p) for p in ("redis-server", "redis-cli", "redis-check-rdb")),
    reason="Redis is not installed",
)


def cli(port: int, *args: str) -> str:
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.fixture
def root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="safehold-redis-", dir="/tmp"))
    try:
        yield d
    finally:
        for pidfile in d.rglob("redis.pid"):
            RedisServer(pidfile.parent, 0).stop()
        shutil.rmtree(d, ignore_errors=True)


def test_rdb_backup_and_restore_into_a_new_server(root: Path) -> None:
    """The restored server holds exactly the keys of the backup, in every database number."""
    live = RedisServer(root / "live", free_port())
    live.start("--repl-diskless-sync-delay", "0")  # the default waits 5 s for more replicas
    cli(live.port, "SET", "order:1", "paid")
    cli(live.port, "RPUSH", "queue", "a", "b")
    cli(live.port, "-n", "3", "SET", "other-db", "kept")
    with Repository.init(FileStorage(root / "repo"), PASSWORD, kdf=FAST_KDF) as repo:
        snap = RedisSource(f"redis://127.0.0.1:{live.port}").backup(repo, tags=("hourly",)).snapshot
        assert is_redis_backup(snap)
        assert "hourly" in snap.tags
        cli(live.port, "SET", "order:1", "refunded")  # after the backup
        cli(live.port, "SET", "order:2", "new")
        target = root / "restored"
        restore_redis(repo, snap, target)
        copy = RedisServer(target, free_port())
        copy.start()
        assert cli(copy.port, "GET", "order:1") == "paid"
        assert cli(copy.port, "EXISTS", "order:2") == "0"
        assert cli(copy.port, "LRANGE", "queue", "0", "-1").split() == ["a", "b"]
        assert cli(copy.port, "-n", "3", "GET", "other-db") == "kept"
        # A running server's directory is never written under it.
        with pytest.raises(DbError, match="is running"):
            restore_redis(repo, snap, target)


def test_a_server_that_is_not_there_fails_the_backup_and_stores_nothing(root: Path) -> None:
    with Repository.init(FileStorage(root / "repo"), PASSWORD, kdf=FAST_KDF) as repo:
        with pytest.raises(DbError):
            RedisSource(f"redis://127.0.0.1:{free_port()}").backup(repo)
        assert list(repo.snapshots()) == []
