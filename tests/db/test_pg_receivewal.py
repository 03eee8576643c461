"""
WAL streaming with pg_receivewal instead of archive_command, on a real cluster:
with ``synchronous`` and the primary's ``synchronous_standby_names`` naming the
receiver, every commit that returned is recoverable after the primary is killed
(RPO 0), through the ``.partial`` segment pushed when the stream ended.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

from safehold.db import Latest, PostgresSource, WalArchive, stanza_for
from safehold.db.receivewal import APPLICATION_NAME, WalReceiver
from safehold.repo import Repository
from safehold.storage.file import FileStorage
from tests.db.conftest import PASSWORD, Env, needs_pg
from tests.db.helpers import sql, switch, sysid

pytestmark = needs_pg


def test_synchronous_streaming_loses_no_committed_transaction(env: Env) -> None:
    pg = env.make_cluster(
        "pg",
        "archive_mode = off",  # pg_receivewal is the only way WAL leaves the server
        f"synchronous_standby_names = '{APPLICATION_NAME}'",
    )
    stanza = stanza_for(sysid(pg))

    def open_archive() -> WalArchive:
        return WalArchive(Repository.open(FileStorage(env.repo_path), PASSWORD), stanza)

    rx = WalReceiver(pg.url, env.root / "rx", open_archive, synchronous=True).start()
    try:
        sql(pg, "CREATE TABLE t (id int PRIMARY KEY)")  # waits for the receiver's flush
        state = sql(
            pg,
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s",
            APPLICATION_NAME,
        )
        assert state == [("sync",)]
        with env.open_repo() as repo:
            PostgresSource(pg.url, wal_timeout=120).backup(repo)
        for i in range(1, 6):
            sql(pg, "INSERT INTO t VALUES (%s)", i)  # returned: the commit is on the receiver
        pg.stop("immediate")  # the primary is lost at once, no shutdown checkpoint
        deadline = time.monotonic() + 60
        while rx.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not rx.running, "pg_receivewal did not notice the primary was gone"
    finally:
        rx.stop()
    shutil.rmtree(pg.datadir)  # nothing of the primary is left but the archive

    with env.open_repo() as repo:
        names = WalArchive(repo, stanza).list()
        assert any(n.endswith(".partial") for n in names)
        out = PostgresSource(pg.url).restore(repo, env.root / "restored", to=Latest())
        assert out.server is not None
        try:
            rows = sql(out.server, "SELECT id FROM t ORDER BY id")
            assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
        finally:
            out.server.stop("immediate")


def test_receive_wal_command_streams_until_stopped_and_keeps_the_partial(env: Env) -> None:
    """``safehold pg receive-wal``: completed segments and, on SIGTERM, the partial one."""
    pg = env.make_cluster("pg", "archive_mode = off")
    stanza = stanza_for(sysid(pg))
    argv = [
        sys.executable, "-m", "safehold", "pg", "receive-wal", pg.url,
        "--spool", str(env.root / "rx"), "--repo", str(env.repo_path),
        "--password-file", str(env.password_file),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not sql(pg, "SELECT 1 FROM pg_stat_replication WHERE application_name = %s",
                      APPLICATION_NAME):  # fmt: skip
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "pg_receivewal did not connect"
            time.sleep(0.1)
        sql(pg, "CREATE TABLE t (id int)")
        done = switch(pg)  # a completed segment
        deadline = time.monotonic() + 60
        while True:
            with env.open_repo() as repo:
                if done in WalArchive(repo, stanza).list():
                    break
            assert time.monotonic() < deadline, f"{done} was not archived"
            time.sleep(0.1)
        sql(pg, "INSERT INTO t VALUES (1)")
        recv = env.root / "rx" / stanza / "recv"
        while not any(p.name.endswith(".partial") for p in recv.iterdir()):
            assert time.monotonic() < deadline, "the stream did not start the next segment"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    with env.open_repo() as repo:
        names = WalArchive(repo, stanza).list()
    assert any(n.endswith(".partial") for n in names), names
