"""
MariaDB backups and restores on a server of the test's own: a data directory made
with mariadb-install-db, mariadbd on a free port with its binary log on. Real
mariadb-backup, mbstream and mariadb-binlog; nothing mocked. The machine's server
at 3306 is not touched.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from safehold.db import BackupId, Latest, RecoveryTargetError, Time, free_port
from safehold.db.binlog import BinlogArchive
from safehold.db.mariadb import MariaDbBackup, MariaDbSource, restore_mariadb
from safehold.db.mysqld import MariaDbServer, binlog_times
from safehold.repo import Repository
from safehold.storage.file import FileStorage
from tests.db.conftest import FAST_KDF, PASSWORD

pytestmark = pytest.mark.skipif(
    not all(shutil.which(p) for p in ("mariadbd", "mariadb-backup", "mbstream", "mariadb-binlog")),
    reason="MariaDB's server and mariadb-backup are not installed",
)


@dataclass
class World:
    root: Path
    server: MariaDbServer
    source: MariaDbSource
    repo: Repository
    backup: MariaDbBackup
    between: datetime  # after row 2's second, before row 3's
    n: int = 0

    def restore(self, to: Time | BackupId | Latest) -> list[int]:
        """Restore to *to* on a port of its own; return the ids in t; remove it."""
        self.n += 1
        target = self.root / f"r{self.n}"
        out = restore_mariadb(self.repo, target, to=to, keep_running=True)
        assert out.server is not None
        try:
            rows = out.server.client().query("SELECT id FROM shop.t ORDER BY id")
            return [int(r[0]) for r in rows]
        finally:
            out.server.stop()
            shutil.rmtree(target, ignore_errors=True)


def _next_second() -> None:
    """Sleep into the next whole second (binlog events are stamped in seconds)."""
    time.sleep(1.05 - (time.time() % 1.0))


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = Path(tempfile.mkdtemp(prefix="safehold-mariadb-", dir="/tmp"))
    root.chmod(0o755)
    server = MariaDbServer(root / "data", free_port())
    repo = Repository.init(FileStorage(root / "repo"), PASSWORD, kdf=FAST_KDF)
    try:
        server.install()
        server.start("--log-bin=binlog", "--server-id=1")
        db = server.client()
        db.query("CREATE DATABASE shop")
        db.query("CREATE TABLE shop.t (id INT PRIMARY KEY) ENGINE=InnoDB")
        db.query("INSERT INTO shop.t VALUES (1)")
        source = MariaDbSource(db_url(server))
        result = source.backup(repo, tags=("nightly",))
        backup = MariaDbBackup.from_snapshot(result.snapshot)
        assert backup is not None
        db.query("INSERT INTO shop.t VALUES (2)")
        _next_second()
        between = datetime.now(UTC)
        _next_second()
        db.query("INSERT INTO shop.t VALUES (3)")
        source.archive_binlogs(repo)
        yield World(root, server, source, repo, backup, between)
    finally:
        repo.close()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def db_url(server: MariaDbServer) -> str:
    return f"mysql://root@127.0.0.1:{server.port}"


def test_backup_records_its_binlog_position_and_archives_closed_binlogs(world: World) -> None:
    b = world.backup
    assert "nightly" in b.snapshot.tags
    assert b.binlog_file is not None
    assert b.binlog_pos is not None
    archive = BinlogArchive(world.repo, world.source.archive_stanza())
    listing = archive.list()
    assert b.binlog_file in listing  # closed by the flush after the inserts
    times = binlog_times(archive.get(b.binlog_file))
    assert times is not None
    assert times[0] <= times[1]
    assert world.source.archive_binlogs(world.repo) != []  # a flush closes one more
    assert world.source.archive_binlogs(world.repo, flush=False) == []  # nothing new


def test_restore_to_the_backup_the_latest_state_and_a_time(world: World) -> None:
    assert world.restore(BackupId(world.backup.snapshot.id[:10])) == [1]
    assert world.restore(Latest()) == [1, 2, 3]
    assert world.restore(Time(world.between)) == [1, 2]


def test_times_outside_the_window_are_refused(world: World) -> None:
    with pytest.raises(RecoveryTargetError, match="before the oldest MariaDB backup"):
        world.restore(Time(datetime(2000, 1, 1, tzinfo=UTC)))
    with pytest.raises(RecoveryTargetError, match="after the end of the recoverable window"):
        world.restore(Time(datetime(2100, 1, 1, tzinfo=UTC)))
    assert not (world.root / f"r{world.n}").exists()  # nothing half-restored is left


def test_the_machines_server_backs_up_and_restores_into_a_scratch_server() -> None:
    """127.0.0.1:3306 (binary log off): a database of our own comes back in a scratch copy."""
    source = MariaDbSource("mysql://root@127.0.0.1:3306", stanza="machine-3306")
    try:
        source.client.query("SELECT 1")
    except Exception:
        pytest.skip("no MariaDB server at 127.0.0.1:3306")
    name = f"safehold_test_{secrets.token_hex(4)}"
    source.client.query(
        f"CREATE DATABASE {name}; CREATE TABLE {name}.t (id INT PRIMARY KEY) ENGINE=InnoDB;"
        f"INSERT INTO {name}.t VALUES (7), (8)"
    )
    root = Path(tempfile.mkdtemp(prefix="safehold-mariadb-", dir="/tmp"))
    root.chmod(0o755)
    try:
        with Repository.init(FileStorage(root / "repo"), PASSWORD, kdf=FAST_KDF) as repo:
            snap = source.backup(repo).snapshot
            source.client.query(f"DELETE FROM {name}.t")  # after the backup
            out = restore_mariadb(repo, root / "copy", to=BackupId(snap.id), keep_running=True)
            assert out.server is not None
            try:
                rows = out.server.client().query(f"SELECT id FROM {name}.t ORDER BY id")
                assert [r[0] for r in rows] == ["7", "8"]
            finally:
                out.server.stop()
    finally:
        source.client.query(f"DROP DATABASE IF EXISTS {name}")
        shutil.rmtree(root, ignore_errors=True)
