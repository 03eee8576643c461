"""
MariaDB binlog streaming (``BinlogReceiver``) on a server of the test's own: rows
committed after the last backup, the server killed (SIGKILL), its data directory
gone, and the latest state restored from the repository alone has them all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from safehold.db import Latest, free_port
from safehold.db.binlog import BinlogArchive
from safehold.db.binlogstream import BinlogReceiver
from safehold.db.mariadb import MariaDbSource, restore_mariadb
from safehold.db.mysqld import MariaDbServer
from safehold.repo import Repository
from safehold.storage.file import FileStorage
from tests.db.conftest import FAST_KDF, PASSWORD

pytestmark = pytest.mark.skipif(
    not all(shutil.which(p) for p in ("mariadbd", "mariadb-backup", "mbstream", "mariadb-binlog")),
    reason="MariaDB's server and mariadb-backup are not installed",
)


def test_streamed_binlogs_recover_the_commits_of_a_killed_server() -> None:
    root = Path(tempfile.mkdtemp(prefix="safehold-mdbstream-", dir="/tmp"))
    root.chmod(0o755)
    server = MariaDbServer(root / "data", free_port())
    rx: BinlogReceiver | None = None
    try:
        server.install()
        server.start("--log-bin=binlog", "--server-id=1")
        db = server.client()
        db.query("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB")
        source = MariaDbSource(f"mysql://root@127.0.0.1:{server.port}")
        with Repository.init(FileStorage(root / "repo"), PASSWORD, kdf=FAST_KDF) as repo:
            source.backup(repo)

        def open_archive() -> BinlogArchive:
            r = Repository.open(FileStorage(root / "repo"), PASSWORD)
            return BinlogArchive(r, source.archive_stanza())

        rx = BinlogReceiver(source, root / "spool", open_archive).start()
        db.query("INSERT INTO app.t VALUES (1), (2)")
        db.query("FLUSH BINARY LOGS")  # one file rotates: archived by the stream
        db.query("INSERT INTO app.t VALUES (3)")
        db.query("INSERT INTO app.t VALUES (4)")
        position = int(db.query("SHOW MASTER STATUS")[0][1])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the stream has what the server wrote
            files = rx.received()
            if files and files[-1].stat().st_size >= position:
                break
            time.sleep(0.05)
        pid = server.pid()
        assert pid is not None
        os.kill(pid, 9)  # lost at once
        deadline = time.monotonic() + 60
        while rx.running and time.monotonic() < deadline:
            time.sleep(0.05)
        rx.stop()
        rx = None
        shutil.rmtree(server.datadir)

        with Repository.open(FileStorage(root / "repo"), PASSWORD) as repo:
            names = BinlogArchive(repo, source.archive_stanza()).list()
            assert any(n.endswith(".partial") for n in names)
            out = restore_mariadb(repo, root / "restored", to=Latest(), keep_running=True)
            assert out.server is not None
            try:
                rows = out.server.client().query("SELECT id FROM app.t ORDER BY id")
                assert [r[0] for r in rows] == ["1", "2", "3", "4"]
            finally:
                out.server.stop()
    finally:
        if rx is not None:
            rx.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
