"""Pure parts of the MariaDB, Redis and source-spec code, and the binlog archive in memory."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from safehold.agent.sources import DbSourceError, parse_spec
from safehold.core.snapshot import Snapshot, SnapshotSizes
from safehold.db import DbError, WalConflict, WalMissing
from safehold.db.binlog import BinlogArchive, binlog_number
from safehold.db.mariadb import MariaDbBackup, expire_binlogs
from safehold.db.mysqld import ClientOptions, binlog_times
from safehold.repo import KdfParams, Repository
from safehold.storage.memory import MemoryStorage


def test_client_options_parse_urls_and_never_show_the_password() -> None:
    c = ClientOptions.from_url("mysql://backup:s3cr%40t@db1:3307")
    assert (c.user, c.password, c.host, c.port) == ("backup", "s3cr@t", "db1", 3307)
    assert "s3cr" not in repr(c)
    assert "s3cr" not in c.where
    with c.args() as argv:
        assert not any("s3cr" in a for a in argv)  # it is in the private defaults file
        assert argv[0].startswith("--defaults-extra-file=")
    with pytest.raises(DbError):
        ClientOptions.from_url("postgresql://db1")


def test_binlog_times_read_event_headers() -> None:
    def event(ts: int, size: int = 19) -> bytes:
        return struct.pack("<IBIII H", ts, 15, 1, size, 0, 0)[:19] + b"\0" * (size - 19)

    data = b"\xfebin" + event(100, 40) + event(105) + event(107)
    assert binlog_times(data) == (100, 107)
    assert binlog_times(b"not a binlog") is None
    assert binlog_times(b"\xfebin") is None


def test_source_specs_take_known_options_only() -> None:
    spec = "postgres:postgresql://b@db1/postgres#stanza=main&wal_timeout=30"
    url, opts = parse_spec(spec, ("stanza", "wal_timeout"))
    assert url == "postgresql://b@db1/postgres"
    assert opts == {"stanza": "main", "wal_timeout": "30"}
    with pytest.raises(DbSourceError, match="unknown option 'stanz'"):
        parse_spec("pgdata:/srv/pg#stanz=x", ("port",))


def _backup(snap_id: str, binlog: str) -> MariaDbBackup:
    snap = Snapshot(
        id=snap_id, time=datetime(2026, 1, 1, tzinfo=UTC),
        host="h", user="u", paths=("mariadb.mbstream",), tree="00", source_kind="stdin",
        tags=("mariadb-base", "mariadb-stanza=s", "mariadb-stop-time=2026-01-01T00:00:00.000000Z",
              f"mariadb-binlog={binlog}:4"),
        sizes=SnapshotSizes(),
    )  # fmt: skip
    b = MariaDbBackup.from_snapshot(snap)
    assert b is not None
    return b


def test_binlog_archive_and_its_retention() -> None:
    repo = Repository.init(MemoryStorage(), "pw", kdf=KdfParams(n=1024, r=8, p=1))
    archive = BinlogArchive(repo, "s")
    for n in range(1, 5):
        assert archive.push(f"binlog.{n:06d}", b"\xfebin" + bytes([n]) * 50)
    assert not archive.push("binlog.000001", b"\xfebin" + bytes([1]) * 50)  # the same again
    with pytest.raises(WalConflict):
        archive.push("binlog.000001", b"something else")
    assert archive.get("binlog.000003") == b"\xfebin" + bytes([3]) * 50
    with pytest.raises(WalMissing):
        archive.get("binlog.000009")
    with pytest.raises(DbError):
        binlog_number("../etc/passwd")
    kept = [_backup("a" * 64, "binlog.000003")]
    assert kept[0].binlog_file == "binlog.000003"
    assert kept[0].binlog_pos == 4
    assert expire_binlogs(archive, kept) == 2
    assert sorted(archive.list()) == ["binlog.000003", "binlog.000004"]
    assert expire_binlogs(archive, []) == 0
