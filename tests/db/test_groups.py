"""
A consistency group on real stores: a PostgreSQL cluster whose rows name blob
files in a directory, written by an application thread during the group's
backup (blob first, then the row, as applications do). Restored to the group's
point, every restored row's blob is in the restored directory, and a validator
says so; the validator names a blob that is missing.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from safehold.db import PostgresSource, RecoveryTargetError
from safehold.db.groups import (
    DirMember,
    PgMember,
    backup_group,
    blob_paths_exist,
    group_points,
    restore_group,
    restore_group_at,
)
from tests.db.conftest import Env, needs_pg
from tests.db.helpers import sql

pytestmark = needs_pg


class App:
    """Writes blob files and the rows that point to them, until stopped."""

    def __init__(self, pg_url: str, blobs: Path) -> None:
        self.url, self.blobs = pg_url, blobs
        self.stop = threading.Event()
        self.written = 0
        self.thread = threading.Thread(target=self.run)

    def wait_for(self, n: int) -> None:
        deadline = time.monotonic() + 120
        while self.written < n and self.thread.is_alive():
            assert time.monotonic() < deadline, "the application wrote nothing"
            time.sleep(0.01)

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                self.written += 1
                name = f"b{self.written:05d}.bin"
                path = self.blobs / name
                with open(path, "wb") as f:
                    f.write(os.urandom(64))
                    f.flush()
                    os.fsync(f.fileno())
                conn.execute("INSERT INTO blobs VALUES (%s, %s)", (self.written, name))


def test_a_database_and_its_blobs_come_back_to_one_point(env: Env) -> None:
    pg = env.make_cluster()
    sql(pg, "CREATE TABLE blobs (id int PRIMARY KEY, path text NOT NULL)")
    blobs = env.root / "blobs"
    blobs.mkdir()
    members = [PgMember("orders", PostgresSource(pg.url)), DirMember("blobs", blobs)]
    app = App(pg.url, blobs)
    app.thread.start()
    try:
        app.wait_for(5)
        with env.open_repo() as repo:
            point = backup_group(repo, "shop", members)
        app.wait_for(app.written + 5)  # rows and blobs after the point
    finally:
        app.stop.set()
        app.thread.join()

    with env.open_repo() as repo:
        assert [p.snapshot_id for p in group_points(repo, "shop")] == [point.snapshot_id]
        check = blob_paths_exist("orders", "SELECT path FROM blobs", "blobs")
        targets = {"orders": env.root / "r-pg", "blobs": env.root / "r-files"}
        out = restore_group(repo, point, members, targets, validators=[check])
    server = out.members["orders"].server
    try:
        assert out.problems == []
        rows = [r[0] for r in sql(server, "SELECT id FROM blobs ORDER BY id")]
        assert rows == list(range(1, len(rows) + 1))  # a prefix of the application's writes
        assert 5 <= len(rows) < app.written  # the point, not the latest state
        restored = out.members["blobs"]
        assert all((restored / f"b{i:05d}.bin").is_file() for i in rows)
        # The validator names what is missing.
        (restored / f"b{rows[-1]:05d}.bin").unlink()
        assert check(out) == [f"blobs/b{rows[-1]:05d}.bin is missing (referenced by orders)"]
    finally:
        server.stop("immediate")

    # A time after the point: the group goes to the point before it.
    with env.open_repo() as repo:
        targets = {"orders": env.root / "t-pg", "blobs": env.root / "t-files"}
        later = point.time + timedelta(seconds=1)
        at = restore_group_at(repo, "shop", later, members, targets, validators=[check])
        with pytest.raises(RecoveryTargetError, match="no point at or before"):
            restore_group_at(repo, "shop", point.time - timedelta(days=1), members, targets)
    server = at.members["orders"].server
    try:
        assert at.problems == []
        assert len(sql(server, "SELECT id FROM blobs")) == len(rows)
    finally:
        server.stop("immediate")
