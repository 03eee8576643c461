"""
WAL archiving faults, archive-get, and block-level deduplication, on real clusters.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from safehold.db import PostgresSource, WalArchive, check_wal, expire_wal, pg_backups, stanza_for
from tests.db.conftest import Env, needs_pg, python_argv
from tests.db.helpers import sql, switch, switch_and_wait, sysid, wait_archived

SEGMENT = 16 * 1024 * 1024

pytestmark = needs_pg


def _archived(pg: object) -> tuple[int, int]:
    row = sql(pg, "SELECT archived_count, failed_count FROM pg_stat_archiver")[0]  # type: ignore[arg-type]
    return int(row[0]), int(row[1])


def _wait(cond: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _cli(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [*python_argv(), "-m", "safehold", "pg", *args]
    argv += ["--repo", str(env.repo_path), "--password-file", str(env.password_file)]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


def test_unreachable_storage_spools_wal_and_a_full_spool_drops_without_stalling(env: Env) -> None:
    pg = env.make_cluster(spool_max=2 * SEGMENT + SEGMENT // 2)  # room for two segments
    sql(pg, "CREATE TABLE t (id int)")
    with env.open_repo() as repo:
        switch_and_wait(pg, repo)
        stanza = stanza_for(sysid(pg))
        spool = env.spool / stanza

        # The archive storage becomes unreachable: a file where the repository was.
        away = env.repo_path.with_name("repo.away")
        env.repo_path.rename(away)
        env.repo_path.write_text("not a directory")
        done0, failed0 = _archived(pg)
        names = []
        for i in range(4):
            sql(pg, "INSERT INTO t VALUES (%s)", i)
            names.append(sql(pg, "SELECT pg_walfile_name(pg_switch_wal())")[0][0])
        # PostgreSQL does not stall: every segment is acknowledged, none failed.
        _wait(lambda: _archived(pg)[0] >= done0 + 4, "PostgreSQL to archive 4 segments")
        assert _archived(pg)[1] == failed0
        held = sorted(p.name for p in (spool / "out").iterdir() if not p.name.startswith("."))
        assert held == names[:2]  # the spool holds what fits ...
        dropped = (spool / "dropped").read_text()
        assert all(n in dropped for n in names[2:])  # ... and records what it dropped

        # The storage comes back. The next push is still dropped (the spool is
        # full until it drains) but starts a pusher, which empties the spool.
        env.repo_path.unlink()
        away.rename(env.repo_path)
        sql(pg, "INSERT INTO t VALUES (5)")
        names.append(sql(pg, "SELECT pg_walfile_name(pg_switch_wal())")[0][0])
        _wait(lambda: not any((spool / "out").iterdir()), "the spool to empty")
        switch_and_wait(pg, repo)
        listing = WalArchive(repo, stanza).list()
        assert all(n in listing for n in names[:2])

        # check names exactly the segments that were dropped (the last one only
        # if the pusher had not made room yet when it came).
        dropped_names = [line.split()[1] for line in (spool / "dropped").read_text().splitlines()]
        assert dropped_names[:2] == names[2:4]
        report = check_wal(WalArchive(repo, stanza), [])
        assert report.missing == dropped_names
        out = _cli(env, "check", "--stanza", stanza)
        assert out.returncode == 1
        assert all(f"missing WAL segment {n}" in out.stdout for n in dropped_names)


def test_archive_get_prefetches_and_reports_missing_files(env: Env) -> None:
    pg = env.make_cluster()
    sql(pg, "CREATE TABLE t (id int)")
    with env.open_repo() as repo:
        names = []
        for i in range(3):
            sql(pg, "INSERT INTO t VALUES (%s)", i)
            names.append(switch(pg))
        wait_archived(pg, repo, names[-1])
        wait_archived(pg, repo, names[0])
        stanza = stanza_for(sysid(pg))
        archive = WalArchive(repo, stanza)
        dest = env.root / "got"
        out = _cli(env, "archive-get", names[0], str(dest), "--spool", str(env.spool),
                   "--stanza", stanza, "--prefetch", "2")  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert dest.read_bytes() == archive.get(names[0])
        # The next two were fetched ahead: the hook answers from the spool alone.
        inn = env.spool / stanza / "in"
        assert sorted(p.name for p in inn.iterdir()) == names[1:3]
        hook = [*python_argv(), "-m", "safehold.db.hook", "get", names[1], str(dest),
                "--spool", str(env.spool), "--stanza", stanza]  # fmt: skip
        assert subprocess.run(hook, check=False).returncode == 0
        assert dest.read_bytes() == archive.get(names[1])
        assert not (inn / names[1]).exists()
        missing = "0000000100000000000000FF"
        out = _cli(env, "archive-get", missing, str(dest), "--stanza", stanza)
        assert out.returncode == 16
        assert missing in out.stderr


def test_a_thousand_random_updates_store_little(env: Env) -> None:
    pg = env.make_cluster()
    pg.run("pgbench", "-i", "-s", "4", "-q", "-h", "127.0.0.1", "-p", str(pg.port), "postgres")
    src = PostgresSource(pg.url)
    with env.open_repo() as repo:
        first = src.backup(repo).snapshot
        sql(
            pg,
            "DO $$ DECLARE r int; BEGIN FOR i IN 1..1000 LOOP "
            "r := 1 + floor(random() * 400000)::int; "
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = r; "
            "COMMIT; END LOOP; END $$",
        )
        second = src.backup(repo).snapshot
        assert len(pg_backups(repo.snapshots())) == 2
    assert first.sizes.logical > 60_000_000
    # 1,000 updated rows touch about 1,000 heap pages and their index pages.
    assert second.sizes.stored < 4_000_000
    assert second.sizes.new < first.sizes.new / 3


def test_hook_push_without_spool_dir_errors_cleanly(env: Env, tmp_path: Path) -> None:
    hook = [*python_argv(), "-m", "safehold.db.hook", "push", str(tmp_path / "nope"),
            "--spool", str(env.spool), "--stanza", "x"]  # fmt: skip
    out = subprocess.run(hook, capture_output=True, text=True, check=False)
    assert out.returncode == 1
    assert "cannot spool nope" in out.stderr


def test_check_names_a_deleted_segment_and_expire_keeps_what_backups_need(env: Env) -> None:
    pg = env.make_cluster()
    sql(pg, "CREATE TABLE t (id int)")
    src = PostgresSource(pg.url)
    with env.open_repo() as repo:
        src.backup(repo)
        names = []
        for i in range(3):
            sql(pg, "INSERT INTO t VALUES (%s)", i)
            names.append(switch(pg))
        wait_archived(pg, repo, names[-1])
        second = src.backup(repo).snapshot
        backups = pg_backups(repo.snapshots())
        archive = WalArchive(repo, backups[0].stanza)
        assert check_wal(archive, backups).ok

        repo.storage.delete(archive.lookup(names[1]).key)
        report = check_wal(archive, backups)
        assert report.missing == [names[1]]
        assert report.unrestorable == []  # the gap is between the backups, not inside one

        # Retention: with the first backup forgotten, the WAL before the second goes.
        kept = [b for b in backups if b.snapshot.id == second.id]
        assert expire_wal(archive, kept) >= 3
        left = archive.list()
        assert min(n for n in left if len(n) == 24) == kept[0].start_segment.name
        assert all(s.name in left for s in kept[0].needed_segments())
        assert check_wal(archive, kept).ok
        assert expire_wal(archive, []) == 0  # nothing kept: nothing deleted
