"""
``safehold mariadb receive-binlog`` on a MariaDB server of the test's own: a
rotated binlog reaches the archive while the command runs, and on SIGTERM the
file in progress is stored as ``<name>.partial`` and the command exits 0.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from safehold.db import free_port
from safehold.db.binlog import BinlogArchive
from safehold.db.mariadb import MariaDbSource
from safehold.db.mysqld import MariaDbServer
from safehold.repo import Repository
from safehold.storage.file import FileStorage
from tests.db.conftest import FAST_KDF, PASSWORD

pytestmark = pytest.mark.skipif(
    not all(shutil.which(p) for p in ("mariadbd", "mariadb-binlog")),
    reason="MariaDB's server and mariadb-binlog are not installed",
)


def test_receive_binlog_archives_rotated_files_and_the_partial_on_sigterm() -> None:
    root = Path(tempfile.mkdtemp(prefix="safehold-mdbrx-", dir="/tmp"))
    root.chmod(0o755)
    server = MariaDbServer(root / "data", free_port())
    proc: subprocess.Popen[str] | None = None
    try:
        server.install()
        server.start("--log-bin=binlog", "--server-id=1")
        db = server.client()
        db.query("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB")
        url = f"mysql://root@127.0.0.1:{server.port}"
        stanza = MariaDbSource(url).archive_stanza()
        Repository.init(FileStorage(root / "repo"), PASSWORD, kdf=FAST_KDF).close()
        (root / "pw").write_text(PASSWORD)

        def archived() -> dict[str, str]:
            with Repository.open(FileStorage(root / "repo"), PASSWORD) as repo:
                return BinlogArchive(repo, stanza).list()

        argv = [
            sys.executable, "-m", "safehold", "mariadb", "receive-binlog", url,
            "--spool", str(root / "rx"), "--repo", str(root / "repo"),
            "--password-file", str(root / "pw"),
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = db.query("SHOW MASTER STATUS")[0][0]
        db.query("INSERT INTO app.t VALUES (1)")
        recv = root / "rx" / stanza / "recv"
        deadline = time.monotonic() + 60
        while not (recv / first).exists():  # connected and streaming
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "mariadb-binlog did not connect"
            time.sleep(0.1)
        db.query("FLUSH BINARY LOGS")  # *first* is complete now
        while first not in archived():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"{first} was not archived"
            time.sleep(0.1)
        current = db.query("SHOW MASTER STATUS")[0][0]
        db.query("INSERT INTO app.t VALUES (2)")
        while not (recv / current).exists():
            assert time.monotonic() < deadline, "the stream did not start the next file"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert f"{current}.partial" in archived()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
