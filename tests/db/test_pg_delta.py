"""
Delta restore: a base backup (then WAL) restored over the changed data directory
of the same cluster, reading only the chunks that differ. A real cluster made
with initdb; the bytes read from the repository are counted at the storage.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from safehold.db import DbError, Lsn, PostgresSource
from safehold.repo import Repository, restore
from safehold.storage.file import FileStorage
from tests.db.conftest import PASSWORD, Env, needs_pg
from tests.db.helpers import sql, switch_and_wait

pytestmark = needs_pg


class CountingStorage:
    """A FileStorage that counts the bytes read from packs (``data/``)."""

    def __init__(self, path: Path) -> None:
        self._inner = FileStorage(path)
        self._lock = threading.Lock()
        self.data_bytes = 0

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        out = self._inner.get(name, offset, length)
        if name.startswith("data/"):
            with self._lock:
                self.data_bytes += len(out)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _rows(server: Any) -> list[tuple[int, int]]:
    return [(r[0], r[1]) for r in sql(server, "SELECT id, n FROM t ORDER BY id")]


def test_delta_restore_fetches_only_changed_chunks_and_recovers_exactly(env: Env) -> None:
    pg = env.make_cluster()
    sql(pg, "CREATE TABLE t (id int PRIMARY KEY, n int, pad text)")
    fill = "SELECT i, 0, md5(i::text) || md5((-i)::text) FROM generate_series(1, 100000) i"
    sql(pg, f"INSERT INTO t {fill}")
    sql(pg, "VACUUM t")  # hint bits set now, not by the first scan after the backup
    sql(pg, "CHECKPOINT")
    repo = env.open_repo()
    src = PostgresSource(pg.url)
    backup = src.backup(repo).snapshot
    sql(pg, "INSERT INTO t VALUES (0, 1, 'after the backup')")
    lsn = str(sql(pg, "SELECT pg_current_wal_insert_lsn()::text")[0][0])
    sql(pg, "UPDATE t SET n = 7 WHERE id % 5000 = 1")  # 20 rows on 20 pages, after the target
    sql(pg, "DELETE FROM t WHERE id > 99990")
    switch_and_wait(pg, repo)
    sql(pg, "CHECKPOINT")  # the changes reach the data files
    expected = [(0, 1), *((i, 0) for i in range(1, 100001))]

    # A server running in the target: refused, nothing touched.
    with pytest.raises(DbError, match="running"):
        src.restore(repo, pg.datadir, to=Lsn(lsn), delta=True)
    assert len(_rows(pg)) == 99991
    pg.stop()
    (pg.datadir / "base" / "stray-file").write_bytes(b"not in the backup")
    os.truncate(pg.datadir / "global" / "pg_control", 8192 + 8)  # longer than backed up
    (pg.datadir / "PG_VERSION").unlink()  # missing: fetched whole
    elsewhere = env.root / "wal-elsewhere"  # pg_wal on another disk: the link is kept
    shutil.move(pg.datadir / "pg_wal", elsewhere)
    (pg.datadir / "pg_wal").symlink_to(elsewhere)
    (elsewhere / "stale").write_bytes(b"not in the backup")

    # Another cluster's directory: refused (through the command line).
    other = env.root / "other"
    (other / "global").mkdir(parents=True)
    (other / "global" / "pg_control").write_bytes((12345).to_bytes(8, "little") + bytes(100))
    cli = [sys.executable, "-m", "safehold", "pg", "restore", str(other), "--delta"]
    cli += ["--lsn", lsn, "--repo", str(env.repo_path), "--password-file", str(env.password_file)]
    out = subprocess.run(cli, capture_output=True, text=True, check=False)
    assert out.returncode != 0
    assert "holds cluster 12345, not" in " ".join(out.stderr.split())
    assert sorted(p.name for p in other.rglob("*")) == ["global", "pg_control"]  # untouched

    counted = CountingStorage(env.repo_path)
    with Repository.open(counted, PASSWORD) as r2:  # type: ignore[arg-type]
        res = src.restore(r2, pg.datadir, to=Lsn(lsn), delta=True, keep_running=True)
        delta = res.delta
        assert delta is not None
        assert res.server is not None
        try:
            assert _rows(res.server) == expected
            sql(res.server, "INSERT INTO t VALUES (-1, 0, 'writable')")
        finally:
            res.server.stop()
        assert counted.data_bytes == delta.bytes_fetched  # the counter is what was read
        assert not (pg.datadir / "base" / "stray-file").exists()
        assert (pg.datadir / "PG_VERSION").read_text().strip().isdigit()
        assert (pg.datadir / "pg_wal").is_symlink()
        assert not (elsewhere / "stale").exists()
        assert delta.removed >= 1
        assert 0 < delta.chunks_fetched < delta.chunks // 10

        # A full restore of the same backup reads every blob at least once.
        counted.data_bytes = 0
        restore(r2, r2.find_snapshot(backup.id), env.root / "full")
        full = counted.data_bytes
    assert full >= delta.full_bytes * 0.9
    assert delta.bytes_fetched * 10 < full, (delta.bytes_fetched, full)
    repo.close()
