"""
WAL streaming with ``pg_receivewal``: the alternative to ``archive_command``.

    rx = WalReceiver(url, spool, open_archive, synchronous=True).start()
    ...                           # completed segments reach the archive as they close
    rx.stop()                     # and the segment in progress, as <name>.partial

``pg_receivewal`` connects over the replication protocol (so it may run on the
agent's host, not the database's), holds a replication slot (``safehold``
by default; the server keeps WAL the receiver has not confirmed) and writes
WAL into ``<spool>/recv/`` as it arrives: the segment being written is
``<name>.partial``, renamed to ``<name>`` once complete. A thread moves each
completed segment to ``<spool>/out/``, where the spool's pusher
(``spool.run_pusher``) uploads it, exactly as for ``archive_command``; the
archive's layout and everything that reads it are unchanged.

**RPO.** Without ``synchronous``, a transaction is on the receiver's disk
within milliseconds of its commit (pg_receivewal flushes on each status
interval and segment end), and in the archive once its segment completes or
the receiver stops. With ``synchronous=True``, pg_receivewal flushes every
write at once and reports it; with ``synchronous_standby_names`` naming the
receiver's ``application_name`` (``safehold_receivewal``) on the primary, a
commit returns only after its WAL is on the receiver's disk: RPO 0 against the
loss of the primary. When the primary is gone (the stream ends), ``stop`` or
``push_partial`` stores the segment in progress as ``<name>.partial``, and a
restore serves it for ``<name>`` when the complete segment was never archived
(``prefetch``): recovery replays up to the last streamed commit. The price is
commit latency (one round trip and an fsync on the receiver), and a primary
that stops committing when the receiver is down (PostgreSQL's synchronous
replication semantics; list a second standby or use ``ANY 1 (...)`` to avoid it).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from safehold.db.errors import DbError
from safehold.db.pgwal import is_segment_name
from safehold.db.server import find_bindir
from safehold.db.spool import run_pusher, spool_dirs
from safehold.db.walstore import WalArchive

__all__ = ["APPLICATION_NAME", "WalReceiver", "cluster_stanza"]

APPLICATION_NAME = "safehold_receivewal"


class WalReceiver:
    """
    Runs ``pg_receivewal`` into a spool and pushes what it receives to the archive.

    *open_archive* opens the cluster's ``WalArchive`` (called by the pushing
    thread, so the repository is opened once per pusher session).
    """

    def __init__(
        self,
        url: str,
        spool: Path,
        open_archive: Callable[[], WalArchive],
        *,
        slot: str = "safehold",
        synchronous: bool = False,
        status_interval: int = 1,
        bindir: str | None = None,
    ) -> None:
        from safehold.db.postgres import _split_url

        self.url = url
        conninfo, self._env = _split_url(url)
        self.conninfo = f"{conninfo} application_name={APPLICATION_NAME}"
        self.spool = spool
        self.recv = spool / "recv"
        self.open_archive = open_archive
        self.slot = slot
        self.synchronous = synchronous
        self.status_interval = status_interval
        self.bindir = find_bindir(bindir)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="safehold-receivewal", daemon=True)
        self.log_path = spool / "receivewal.log"
        self.pushed = 0

    def _argv(self, *extra: str) -> list[str]:
        return [str(self.bindir / "pg_receivewal"), "-d", self.conninfo, *extra]

    def start(self) -> WalReceiver:
        """Create the slot if needed, start pg_receivewal, and the mover/pusher thread."""
        spool_dirs(self.spool)
        self.recv.mkdir(mode=0o700, exist_ok=True)
        env = {**os.environ, **self._env}
        if not self._reserve_slot():
            self._create_slot(env)
        argv = self._argv(
            "-D", str(self.recv), "-S", self.slot, "-n", "-s", str(self.status_interval)
        )
        if self.synchronous:
            argv.append("--synchronous")
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=fd, env=env)
        finally:
            os.close(fd)
        self._thread.start()
        return self

    def _reserve_slot(self) -> bool:
        """
        Create the slot over SQL with its WAL reserved at once (pg_receivewal's own
        ``--create-slot`` reserves nothing until it streams, so WAL written in
        between would never reach the archive); False if SQL is not allowed.
        """
        import psycopg

        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=30) as conn:
                conn.execute(
                    "SELECT pg_create_physical_replication_slot(%s, true) WHERE NOT EXISTS "
                    "(SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)",
                    (self.slot, self.slot),
                )
        except psycopg.Error:
            return False
        return True

    def _create_slot(self, env: dict[str, str]) -> None:
        made = subprocess.run(
            self._argv("--create-slot", "--if-not-exists", "-S", self.slot),
            capture_output=True,
            env=env,
            check=False,
        )
        if made.returncode != 0:
            tail = made.stderr.decode(errors="replace")[-400:].strip()
            raise DbError(f"pg_receivewal could not create slot {self.slot}: {tail}")

    @property
    def running(self) -> bool:
        """Whether pg_receivewal is still streaming."""
        return self._proc is not None and self._proc.poll() is None

    def stderr_tail(self) -> str:
        """The end of pg_receivewal's messages (``<spool>/receivewal.log``: why it stopped)."""
        try:
            return self.log_path.read_bytes()[-600:].decode(errors="replace").strip()
        except OSError:
            return ""

    def _move_completed(self) -> int:
        moved = 0
        for p in sorted(self.recv.iterdir()):
            if is_segment_name(p.name) or p.name.endswith(".history"):
                os.replace(p, self.spool / "out" / p.name)
                moved += 1
        return moved

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._move_completed():
                self.pushed += run_pusher(self.spool, self.open_archive, idle_exit=0.2)
            self._stop.wait(0.05)

    def push_partial(self) -> str | None:
        """
        Store the segment in progress as ``<name>.partial`` (replacing an older
        copy of it); return its name, or None if there is none.
        """
        partials = sorted(p for p in self.recv.iterdir() if p.name.endswith(".partial"))
        if not partials:
            return None
        p = partials[-1]
        archive = self.open_archive()
        listing = archive.list()
        if p.name in listing:
            archive.delete([listing[p.name]])
        archive.push(p.name, p.read_bytes())
        return p.name

    def stop(self, *, keep_partial: bool = True, timeout: float = 30.0) -> None:
        """Stop streaming; push what was completed and, with *keep_partial*, the partial segment."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._move_completed()
        deadline = time.monotonic() + timeout
        while any((self.spool / "out").iterdir()) and time.monotonic() < deadline:
            self.pushed += run_pusher(self.spool, self.open_archive, idle_exit=0.1)
        if keep_partial:
            self.push_partial()


def cluster_stanza(url: str) -> str:
    """The default stanza of the cluster at *url* (``pg-<system identifier>``), asked over SQL."""
    import psycopg

    from safehold.db.postgres import _redacted, stanza_for

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
    except psycopg.Error as exc:
        raise DbError(f"cannot ask {_redacted(url)} for its system identifier: {exc}") from exc
    assert row is not None
    return stanza_for(int(row[0]))
