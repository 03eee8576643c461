"""
Base backups and restores of a real PostgreSQL cluster, through WAL archived
by the real archive_command hook. One cluster serves the module (it is slow to
make); each restore gets its own data directory and port.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safehold.db import (
    BackupId,
    Latest,
    LocalServer,
    Lsn,
    Name,
    PgBackup,
    PostgresSource,
    RecoveryTargetError,
    Target,
    Time,
    WalArchive,
    recoverable_window,
)
from safehold.repo import Repository
from tests.db.conftest import Env, make_env, needs_pg
from tests.db.helpers import sql, switch_and_wait

pytestmark = needs_pg


@dataclass
class World:
    env: Env
    pg: LocalServer
    repo: Repository
    backup: PgBackup
    lsn_after_2: str
    markers: list[tuple[int, datetime]]  # (id, commit time), ids 100.. in commit order
    n: int = 0

    def restore(self, to: Target) -> LocalServer:
        self.n += 1
        out = PostgresSource(self.pg.url).restore(self.repo, self.env.root / f"r{self.n}", to=to)
        assert out.server is not None
        return out.server

    def drop(self, server: LocalServer) -> None:
        server.stop("immediate")
        shutil.rmtree(server.datadir, ignore_errors=True)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with make_env() as env:
        pg = env.make_cluster()
        sql(pg, "CREATE TABLE t (id int PRIMARY KEY, v text)")
        sql(pg, "INSERT INTO t VALUES (1, 'in backup')")
        repo = env.open_repo()
        res = PostgresSource(pg.url).backup(repo, tags=("nightly",))
        backup = PgBackup.from_snapshot(res.snapshot)
        assert backup is not None
        sql(pg, "INSERT INTO t VALUES (2, 'after backup')")
        lsn = sql(pg, "SELECT pg_current_wal_insert_lsn()::text")[0][0]
        sql(pg, "INSERT INTO t VALUES (3, 'after lsn')")
        sql(pg, "SELECT pg_create_restore_point('before-markers')")
        markers = []
        for i in range(100, 110):
            row = sql(
                pg,
                "INSERT INTO t VALUES (%s, 'marker') RETURNING pg_xact_commit_timestamp(xmin)",
                i,
            )
            assert row[0][0] is None  # not committed yet inside its own statement
            ts = sql(pg, "SELECT pg_xact_commit_timestamp(xmin) FROM t WHERE id = %s", i)[0][0]
            markers.append((i, ts.astimezone(UTC)))
            time.sleep(0.02)
        # PostgreSQL stops at the first commit after a target time; without one
        # in the archive it cannot tell that nothing else happened before it.
        time.sleep(0.02)
        sql(pg, "INSERT INTO t VALUES (999, 'after the markers')")
        switch_and_wait(pg, repo)
        yield World(env, pg, repo, backup, lsn, markers)
        repo.close()


def ids(server: LocalServer) -> list[int]:
    return [r[0] for r in sql(server, "SELECT id FROM t ORDER BY id")]


def test_backup_is_complete_and_tagged(world: World) -> None:
    b = world.backup
    assert "nightly" in b.snapshot.tags
    assert b.start_lsn <= b.stop_lsn
    assert b.snapshot.source_kind == "dir"
    listing = WalArchive(world.repo, b.stanza).list()
    assert all(s.name in listing for s in b.needed_segments())
    window = recoverable_window(world.repo, b.stanza)
    assert window is not None
    assert window.start == b.stop_time
    assert window.end_lsn > b.stop_lsn


def test_restore_latest_has_every_committed_row_and_takes_writes(world: World) -> None:
    server = world.restore(Latest())
    try:
        assert ids(server) == [1, 2, 3, *(i for i, _ in world.markers), 999]
        sql(server, "INSERT INTO t VALUES (0, 'writable')")  # promoted, not read-only
    finally:
        world.drop(server)


@pytest.mark.parametrize(
    ("target", "expected"),
    [("backup", [1]), ("lsn", [1, 2]), ("name", [1, 2, 3])],
)
def test_restore_to_a_backup_an_lsn_and_a_restore_point(
    world: World, target: str, expected: list[int]
) -> None:
    to: Target = {
        "backup": BackupId(world.backup.snapshot.id[:12]),
        "lsn": Lsn(world.lsn_after_2),
        "name": Name("before-markers"),
    }[target]
    server = world.restore(to)
    try:
        assert ids(server) == expected
    finally:
        world.drop(server)


@settings(
    max_examples=3,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_pitr_finds_exactly_the_rows_committed_by_the_time(
    world: World, data: st.DataObject
) -> None:
    """Property: restoring to time t yields exactly the markers whose commit time is <= t."""
    i = data.draw(st.integers(0, len(world.markers) - 1), label="marker")
    exact = data.draw(st.booleans(), label="at its commit time")
    ts = world.markers[i][1]
    if not exact:  # halfway to the next commit (or a little after the last one)
        nxt = (
            world.markers[i + 1][1]
            if i + 1 < len(world.markers)
            else ts + timedelta(microseconds=10)
        )
        ts = ts + (nxt - ts) / 2
    server = world.restore(Time(ts))
    try:
        got = [x for x in ids(server) if 100 <= x < 999]
        assert got == [m for m, when in world.markers if when <= ts]
    finally:
        world.drop(server)


def test_pitr_just_after_the_last_marker_has_them_all(world: World) -> None:
    """The edge a random draw may miss: a time after the last marker's commit."""
    server = world.restore(Time(world.markers[-1][1] + timedelta(microseconds=1)))
    try:
        assert [x for x in ids(server) if x >= 100] == [m for m, _ in world.markers]
    finally:
        world.drop(server)


def test_targets_outside_the_window_are_clear_errors(world: World) -> None:
    src = PostgresSource(world.pg.url)
    before = world.backup.stop_time - timedelta(hours=1)
    with pytest.raises(RecoveryTargetError, match="before the recoverable window"):
        src.restore(world.repo, world.env.root / "early", to=Time(before))
    with pytest.raises(RecoveryTargetError, match="before the recoverable window"):
        src.restore(world.repo, world.env.root / "early", to=Lsn("0/1"))
    assert not (world.env.root / "early").exists()
    # After the newest archived WAL: PostgreSQL says so; nothing is left behind.
    future = datetime.now(UTC) + timedelta(days=1)
    with pytest.raises(RecoveryTargetError, match="after the end of the recoverable window"):
        src.restore(world.repo, world.env.root / "late", to=Time(future))
    assert not (world.env.root / "late").exists()
    with pytest.raises(RecoveryTargetError, match="time zone"):
        src.restore(world.repo, world.env.root / "late", to=Time(datetime(2030, 1, 1)))
