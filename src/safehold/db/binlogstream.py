"""
MariaDB binary log streaming: ``mariadb-binlog --stop-never`` as a replica, into the archive.

    rx = BinlogReceiver(source, spool, open_archive).start()
    ...                # each binlog file reaches the archive when the server rotates it
    rx.stop()          # and the one in progress, as <name>.partial

``mariadb-binlog --read-from-remote-server --raw --stop-never`` connects with
the replication protocol (a replica's server id of its own) and writes the
server's binlog files into ``<spool>/recv/`` as events arrive. It starts at the
oldest binlog the server still has that the archive lacks, so nothing between
the last archived file and the stream is skipped. A thread pushes every file
but the newest (which the server is still writing) to the ``BinlogArchive``.

The RPO is the replication delay (milliseconds) rather than the time between
``FLUSH BINARY LOGS``: when the server is lost, the stream ends, and ``stop``
stores the file in progress as ``<name>.partial``; a restore replays it when
the complete file never reached the archive. MariaDB sends binlog events to
replicas after the commit, so this is asynchronous: a transaction committed in
the instant before a crash can be missing (semi-synchronous replication, which
``mariadb-binlog`` does not acknowledge, would be needed for RPO 0).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from safehold.db.binlog import BinlogArchive, binlog_number
from safehold.db.errors import DbError
from safehold.db.mariadb import MariaDbSource

__all__ = ["BinlogReceiver"]


class BinlogReceiver:
    """Streams a MariaDB server's binlogs into its archive until stopped."""

    def __init__(
        self,
        source: MariaDbSource,
        spool: Path,
        open_archive: Callable[[], BinlogArchive],
        *,
        replica_id: int = 4_200_000_017,
    ) -> None:
        self.source = source
        self.recv = spool / "recv"
        self.log_path = spool / "binlogstream.log"
        self.open_archive = open_archive
        self.replica_id = replica_id
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="safehold-binlogs", daemon=True)
        self._archive: BinlogArchive | None = None
        self._resources = ExitStack()
        self.pushed: list[str] = []

    def start(self) -> BinlogReceiver:
        """Find where to start, start ``mariadb-binlog``, and the pushing thread."""
        c = self.source.client
        if c.query("SELECT @@log_bin")[0][0] != "1":
            raise DbError(f"the binary log of {c.where} is off: nothing to stream")
        logs = [row[0] for row in c.query("SHOW BINARY LOGS")]
        self._archive = self.open_archive()
        have = self._archive.list()
        first = next((n for n in logs if n not in have), logs[-1])
        binlog_number(first)
        self.recv.mkdir(parents=True, exist_ok=True)
        opts = self._resources.enter_context(c.args())  # the password file, while streaming
        err = self._resources.enter_context(self.log_path.open("ab"))
        self._proc = subprocess.Popen(
            ["mariadb-binlog", *opts, "--read-from-remote-server", "--raw", "--stop-never",
             f"--stop-never-slave-server-id={self.replica_id}",
             f"--result-file={self.recv}/", first],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )  # fmt: skip
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """Whether the stream is still open."""
        return self._proc is not None and self._proc.poll() is None

    def received(self) -> list[Path]:
        """The files received so far, oldest first (the last one may be in progress)."""
        files = [p for p in self.recv.iterdir() if p.is_file()]
        return sorted(files, key=lambda p: binlog_number(p.name))

    def _push_completed(self) -> None:
        assert self._archive is not None
        for p in self.received()[:-1]:
            self._archive.push(p.name, p.read_bytes())
            self.pushed.append(p.name)
            p.unlink()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self._push_completed()
            except Exception as exc:  # the storage is away: the files wait in recv/
                with self.log_path.open("a") as f:
                    f.write(f"{time.strftime('%FT%TZ', time.gmtime())} push failed: {exc}\n")

    def stop(self, *, keep_partial: bool = True) -> None:
        """End the stream; archive every file, the one in progress as ``<name>.partial``."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(30)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            if self._archive is not None:
                self._push_completed()
                last = self.received()
                if keep_partial and last:
                    self._archive.push_partial(last[-1].name, last[-1].read_bytes())
        finally:
            self._resources.close()
