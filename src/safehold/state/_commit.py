"""
The SQL of a commit group, and the small pieces the writer runs around it.

``commit_items`` applies transactions in one SQLite transaction, each with its LSN,
log record and time; it writes no ``meta`` row (``_writer`` says why). The rest:
the write transaction of maintenance work, the tail written before the log may
lose it, change events, the commit time's text, background checkpoints, and the
translation of SQLite errors. Blocking; the writer calls these holding its
connection's lock.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, TypeVar

from safehold.core.snapshot import Epoch
from safehold.state._db import Changes, Meta, apply_changes, uri_rw
from safehold.state.errors import StateError

__all__ = [
    "Checkpoints",
    "Committed",
    "Event",
    "Item",
    "commit_items",
    "now_text",
    "translated",
    "write_tail",
    "write_transaction",
]

T = TypeVar("T")
Event = tuple[str, str, str, str | None]
"""A dictionary change: (dictionary, key, "add" | "update" | "remove", new value's text)."""


class Committed(NamedTuple):
    """
    A committed transaction: its LSN, commit time, and its events for the watched.

    ``seq`` numbers its SQLite commit for the WAL's syncs at FULL (``_durable``; 0 at NORMAL).
    """

    lsn: int
    time: str
    events: Sequence[Event] = ()
    seq: int = 0


Item = tuple[Changes, list[tuple[str, list[str]]], frozenset[str]]
"""What a commit takes of a transaction: its changes, its enqueues, the watched dictionaries."""
_CHECKPOINT_COMMITS = 1024  # commits between two checkpoints
_CHECKPOINT_ROWS = 8192  # or rows changed (large transactions)
_LOCK_WAIT = 0.05  # seconds a checkpoint waits for the writer connection's lock (FULL)
_INSERT_LOG = "INSERT INTO log (lsn, epoch_dl, epoch_cfg, time, ops) VALUES (?, ?, ?, ?, ?)"


def commit_items(
    conn: sqlite3.Connection, epoch: Epoch, lsn: int, items: Iterable[Item], seq: int = 0
) -> list[Committed]:
    """
    Commit transactions in one SQLite transaction; return each, numbered *seq*.

    They are applied one after another in submission order, each with the next
    LSN and its own log record and time, so the log is what committing them one
    by one would have written, the first with LSN *lsn* + 1, in *epoch*. ``meta``
    is not written (see ``_writer``). The caller holds the writer's ``conn_lock``.
    """
    dl, cfg = epoch.data_loss_number, epoch.configuration_number
    out: list[Committed] = []
    execute = conn.execute
    if not conn.in_transaction:  # else the caller's reads opened it (``read_point``)
        execute("BEGIN IMMEDIATE")
    try:
        for ch, enqueues, watch in items:
            lsn += 1
            now = now_text()
            for name, values in enqueues:
                (top,) = execute("SELECT MAX(seq) FROM queue WHERE name = ?", (name,)).fetchone()
                base = top or 0
                ch.enqs.extend((name, base + i, v) for i, v in enumerate(values, 1))
            events = _events(conn, ch, watch) if watch else ()
            apply_changes(conn, ch)
            execute(_INSERT_LOG, (lsn, dl, cfg, now, ch.ops_json()))
            out.append(Committed(lsn, now, events, seq))
        execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            execute("ROLLBACK")
        raise
    return out


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def write_tail(conn: sqlite3.Connection, meta: Meta) -> None:
    """Write the last LSN, epoch and time into ``meta``, before the log may lose its tail."""
    tail = meta.tail_epoch
    conn.execute(
        "UPDATE meta SET lsn = ?, tail_dl = ?, tail_cfg = ?, tail_time = ? WHERE id = 1",
        (
            meta.lsn,
            None if tail is None else tail.data_loss_number,
            None if tail is None else tail.configuration_number,
            meta.tail_time,
        ),
    )


def _events(conn: sqlite3.Connection, ch: Changes, watch: frozenset[str]) -> list[Event]:
    """What *ch* does to the watched dictionaries, read before it is applied."""
    out: list[Event] = []
    for name, key, value in ch.sets:
        if name in watch:
            out.append((name, key, "update" if _exists(conn, name, key) else "add", value))
    for name, key in ch.dels:
        if name in watch and _exists(conn, name, key):
            out.append((name, key, "remove", None))
    return out


def _exists(conn: sqlite3.Connection, name: str, key: str) -> bool:
    rows = conn.execute("SELECT 1 FROM dict WHERE name = ? AND key = ?", (name, key)).fetchall()
    return bool(rows)


def now_text() -> str:
    """
    ``format_time(datetime.now(UTC))``: the same clock and text, microseconds floored.

    It is on every commit's path, so the text up to the second is made once a second.
    """
    sec, ns = divmod(time.time_ns(), 1_000_000_000)
    cached = _SECOND[0]
    if cached[0] != sec:
        cached = (sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        _SECOND[0] = cached
    return f"{cached[1]}.{ns // 1000:06d}Z"


_SECOND: list[tuple[int, str]] = [(-1, "")]  # the last second's text, replaced whole


class Checkpoints:
    """
    Copy the WAL back into the database, beside the writer (PASSIVE checkpoints).

    The writer connection does not checkpoint by itself (``wal_autocheckpoint`` is
    off), so that no commit pays for it; any error is left for the next one. One is
    due every 1,024 commits, or sooner after large ones (8,192 rows changed, counted
    by ``total_changes``): a WAL of ~12 MB at most; at FULL also as soon as the WAL
    file grows past 4 MiB (*grew*, ``WalSync.grew``). The connection stays open between
    checkpoints of the same file (opening one reads the schema again). ``due`` and
    ``starting`` run on the event loop, the rest on the checkpointer thread.

    With *lock* (the writer connection's, at FULL), a checkpoint holds it, if it
    comes within a moment: no commit is made meanwhile, so the checkpoint copies the
    whole WAL and the next commit starts writing the WAL from its beginning again.
    Otherwise commits made during a checkpoint keep it from ever copying everything,
    the WAL grows by every commit, and each fsync of the WAL must then also journal
    the file's new size (a second disk write per commit; SQLite's own checkpoints run
    inside a commit, so its WAL is rewritten in place).
    """

    def __init__(
        self, lock: threading.RLock | None = None, grew: Callable[[], bool] | None = None
    ) -> None:
        self._held: tuple[Path, sqlite3.Connection] | None = None
        self._lock = lock
        self._grew = grew
        self._commits = 0
        self._changes_at = 0  # the writer connection's ``total_changes`` at the last start

    def due(self, commits: int, changes: int) -> bool:
        """Count *commits* more; whether a checkpoint is due (*changes*: ``total_changes``)."""
        self._commits += commits
        if changes < self._changes_at:  # a new connection (generation)
            self._changes_at = 0
        rows = changes - self._changes_at
        grew = self._grew is not None and self._grew()
        return grew or self._commits >= _CHECKPOINT_COMMITS or rows >= _CHECKPOINT_ROWS

    def starting(self, changes: int) -> None:
        """A checkpoint is handed to the thread now: count again from here."""
        self._commits, self._changes_at = 0, changes

    def run(self, db: Path) -> None:
        """Checkpoint the database *db*."""
        held = self._lock is not None and self._lock.acquire(timeout=_LOCK_WAIT)
        try:
            with contextlib.suppress(sqlite3.Error):
                if self._held is None or self._held[0] != db:
                    self.close()
                    conn = sqlite3.connect(
                        uri_rw(db), uri=True, isolation_level=None, check_same_thread=False
                    )
                    conn.execute("PRAGMA busy_timeout = 1000")
                    self._held = (db, conn)
                self._held[1].execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            if held:
                assert self._lock is not None
                self._lock.release()

    def close(self) -> None:
        """Close the connection, if open."""
        held, self._held = self._held, None
        if held is not None:
            held[1].close()


def translated(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except sqlite3.Error as exc:
        raise StateError(f"the state database failed: {exc}") from exc
