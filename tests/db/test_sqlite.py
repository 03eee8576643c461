"""SQLite online backups: consistent while the application writes, restored atomically."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from safehold.db import DbError, SqliteSource
from safehold.repo import KdfParams, Repository
from safehold.storage.memory import MemoryStorage


@pytest.fixture
def mem_repo() -> Repository:
    return Repository.init(MemoryStorage(), "pw", kdf=KdfParams(n=1024, r=8, p=1))


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_backup_while_writing_is_one_committed_state(
    mem_repo: Repository, tmp_path: Path, journal: str
) -> None:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.execute("CREATE TABLE t (batch int, n int, pad blob)")
    conn.commit()
    stop = threading.Event()
    batches = [0]

    def writer() -> None:
        w = sqlite3.connect(db, timeout=30)
        while not stop.is_set():
            b = batches[0] + 1
            with w:  # each batch is one transaction of 50 rows
                w.executemany(
                    "INSERT INTO t VALUES (?, ?, randomblob(500))", [(b, i) for i in range(50)]
                )
            batches[0] = b
        w.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        while batches[0] < 20:
            stop.wait(0.01)
        results = [SqliteSource(db).backup(mem_repo, tags=("app",)) for _ in range(3)]
    finally:
        stop.set()
        t.join()
    for i, res in enumerate(results):
        assert "app" in res.snapshot.tags
        out = SqliteSource(db).restore(mem_repo, res.snapshot, tmp_path / f"r{i}.db")
        r = sqlite3.connect(out)
        counts = r.execute("SELECT batch, count(*) FROM t GROUP BY batch").fetchall()
        r.close()
        assert counts, "the backup holds committed rows"
        assert all(n == 50 for _, n in counts)  # no batch is torn
        assert [b for b, _ in counts] == list(range(1, len(counts) + 1))  # no gap


def test_restore_refuses_a_damaged_file_and_other_snapshots(
    mem_repo: Repository, tmp_path: Path
) -> None:
    from safehold.repo import backup_stream

    junk = tmp_path / "junk"
    junk.write_bytes(b"SQLite format 3\x00" + b"\x01" * 4000)
    with junk.open("rb") as f:
        snap = backup_stream(mem_repo, f, name="junk").snapshot
    with pytest.raises(DbError, match="not a SQLite backup"):
        SqliteSource(junk).restore(mem_repo, snap)
    target = tmp_path / "live.db"
    target.write_bytes(b"old")
    forged = snap.__class__(**{**snap.__dict__, "tags": ("sqlite",)})
    with pytest.raises(DbError):
        SqliteSource(target).restore(mem_repo, forged)
    assert target.read_bytes() == b"old"  # untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".live")] == []
    with pytest.raises(DbError, match="does not exist"):
        SqliteSource(tmp_path / "none.db").backup(mem_repo)
