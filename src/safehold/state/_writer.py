"""
The store's writer thread, its group commit, and the connections that read beside it.

Every SQLite write of the live database runs on the one writer thread, which owns
the writer connection; ``meta`` and ``generation`` change only there.

**Group commit.** A transaction that ends hands its changes to ``submit`` and
releases the store's write lock at once; the next transaction starts while the
first is being made durable. One flusher task takes everything submitted so far
and commits it in one SQLite transaction (one fsync at ``synchronous=FULL``);
what arrives meanwhile goes in the next group. Each transaction still gets its
own LSN, log record and time, and its ``commit`` returns only once its group is
durable: the durability promise is per transaction, the fsync is shared.

**The overlay.** Between ``submit`` and its group's SQLite commit, the changes of
a transaction are visible to the transactions after it through ``overlay``
(``(dictionary, key) -> encoded value or None``), so they read what they would
read had the commit been finished. Reads the overlay cannot answer exactly
(enumerations, counts, queues) ``drain`` first. If a group fails, it and every
transaction submitted after it fail (they may have read its changes), and
``failures`` moves so that transactions running now fail at their commit.

**Readers.** Point reads of a write transaction run on ``reader()``, a second
connection used inline on the event loop: a primary-key lookup in WAL mode takes
microseconds and never waits for the writer, far less than a hop to a thread.
Snapshot transactions lease their own connections (``lease``), which hold one
WAL read transaction each.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

from safehold.core.snapshot import Epoch
from safehold.state import _files
from safehold.state._db import (
    Changes,
    Durability,
    Meta,
    apply_changes,
    connect,
    connect_reader,
    read_meta,
    uri_rw,
)
from safehold.state.backup import BackupInfo
from safehold.state.errors import StateError, StoreClosed

__all__ = ["Committed", "Event", "Pending", "Writer", "remove_db_files"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
Event = tuple[str, str, str, str | None]
"""A dictionary change: (dictionary, key, "add" | "update" | "remove", new value's text)."""
_POOL = 4
_CHECKPOINT_EVERY = 256  # commits between background checkpoints


def _holding_conn(fn: F) -> F:
    """Run the method holding the writer connection's lock (see ``Writer``)."""

    @functools.wraps(fn)
    def wrapper(self: Writer, *args: Any, **kwargs: Any) -> Any:
        with self.conn_lock:
            return fn(self, *args, **kwargs)

    return cast(F, wrapper)


@dataclass
class Pending:
    """A transaction submitted for commit: its changes and who waits for it."""

    changes: Changes
    enqueues: list[tuple[str, list[str]]]
    watch: frozenset[str]  # dictionaries whose change events someone listens to
    future: asyncio.Future[Committed]
    ticket: int = 0


@dataclass(frozen=True)
class Committed:
    """A committed transaction: its LSN, commit time, and its events for the watched."""

    lsn: int
    time: str
    events: list[Event] = field(default_factory=list)


class Writer:
    """
    The writer thread of the store in *root*.

    Args:
        root: the store's directory.
        partition: the partition id, for messages and ``CURRENT``.
        durability: the writer connection's synchronous level.
        truncate_log: whether accepting a backup drops the log up to it.
        on_commit: called on the event loop with each group's results, in LSN order.
    """

    def __init__(
        self,
        root: Path,
        partition: str,
        durability: Durability,
        truncate_log: bool,
        on_commit: Callable[[list[Committed]], None] | None = None,
    ) -> None:
        self.root = root
        self.partition = partition
        self.durability: Durability = durability
        self.truncate = truncate_log
        self.generation = 0
        self.meta: Meta | None = None
        self.overlay: dict[tuple[str, str], tuple[str | None, int]] = {}
        self.failures = 0
        self._on_commit = on_commit
        self._conn: sqlite3.Connection | None = None
        self._reader: tuple[int, sqlite3.Connection] | None = None
        self._pool: list[tuple[int, sqlite3.Connection]] = []
        self._queue: list[Pending] = []
        self._tickets = 0
        self._flusher: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix=f"state-{partition}"
        )
        # The writer connection is used by the writer thread and, for inline commits
        # at NORMAL, by the event loop: never by both at once.
        self.conn_lock = threading.RLock()
        self._inline = durability == "normal"
        self._inline_scheduled = False
        self._since_checkpoint = 0
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix=f"state-ckpt-{partition}")
        self._checkpointing: asyncio.Future[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the thread still takes work."""
        return self._executor is not None

    async def call(self, fn: Callable[[], T]) -> T:
        """Run *fn* on the writer thread; SQLite errors become ``StateError``."""
        if self._executor is None:
            raise StoreClosed(f"the state store of partition {self.partition} is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, _translated, fn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run *fn* with the writer connection on the writer thread."""

        def job() -> T:
            with self.conn_lock:
                return fn(self.conn())

        return await self.call(job)

    def between_commits(self, fn: Callable[[], T]) -> T:
        """Run *fn* where no commit is under way (on the writer thread; backups' views)."""
        with self.conn_lock:
            return fn()

    async def shutdown(self) -> None:
        """Finish the submitted commits, close the connections and stop the thread."""
        if self._executor is not None:
            await self.drain()
            await self.call(self.close_conn)
            for _, conn in self._pool:
                conn.close()
            self._pool.clear()
            self._executor.shutdown()
            self._executor = None
            self._checkpointer.shutdown()

    # -- group commit (event loop side) ---------------------------------------------

    def submit(
        self,
        changes: Changes,
        enqueues: list[tuple[str, list[str]]],
        watch: frozenset[str],
        *,
        more_coming: bool = True,
    ) -> asyncio.Future[Committed]:
        """
        Queue a transaction's changes for the next group; its future gives its LSN.

        The caller holds the store's write lock, so submission order is the
        serial order. The changes are visible in ``overlay`` until they are in SQLite.
        At NORMAL, with *more_coming* False (no other transaction waits for the
        lock), the group is committed at once instead of at the loop's next turn.
        """
        if self._executor is None:
            raise StoreClosed(f"the state store of partition {self.partition} is closed")
        self._tickets += 1
        fut: asyncio.Future[Committed] = asyncio.get_running_loop().create_future()
        p = Pending(changes, enqueues, watch, fut, self._tickets)
        for name, key, value in changes.sets:
            self.overlay[(name, key)] = (value, p.ticket)
        for name, key in changes.dels:
            self.overlay[(name, key)] = (None, p.ticket)
        self._queue.append(p)
        if self._flushing:
            return fut  # the running flusher takes it next
        if self._inline:
            if not more_coming and not self._inline_scheduled:
                self._flush_inline()
            elif not self._inline_scheduled:
                self._inline_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_inline)
        else:
            self._start_flusher()
        return fut

    @property
    def _flushing(self) -> bool:
        return self._flusher is not None and not self._flusher.done()

    def _start_flusher(self) -> None:
        name = f"state-commit-{self.partition}"
        self._flusher = asyncio.create_task(self._flush(), name=name)

    @property
    def pending(self) -> bool:
        """Whether submitted transactions are not yet in SQLite."""
        return bool(self._queue) or self._flushing

    async def drain(self) -> None:
        """Wait until every submitted transaction is committed (or has failed)."""
        while self.pending:
            if self._flusher is not None and not self._flusher.done():
                await asyncio.wait({self._flusher})
            else:
                await asyncio.sleep(0)  # an inline group is scheduled on the loop

    def _flush_inline(self) -> None:
        """
        At NORMAL: commit the queued group right here, on the event loop.

        A NORMAL commit writes a few pages into the OS cache without fsync, which
        costs less than handing it to the writer thread (the hand-off and the GIL
        going back and forth cost more than the commit). Checkpoints, which fsync,
        run on their own thread. If the writer thread holds the connection (a
        backup being accepted, a log truncation), the group goes there instead.
        """
        self._inline_scheduled = False  # a scheduled call finding the queue empty does nothing
        if not self._queue or self._flushing or self._executor is None:
            return
        if not self.conn_lock.acquire(blocking=False):
            self._start_flusher()
            return
        batch, self._queue = self._queue, []
        try:
            results = _translated(partial(self.commit_batch, batch))
        except Exception as exc:
            self._fail(batch, exc)
            return
        finally:
            self.conn_lock.release()
        self._done(batch, results)

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                results = await self.call(partial(self.commit_batch, batch))
            except BaseException as exc:
                self._fail(batch, exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            self._done(batch, results)

    def _done(self, batch: list[Pending], results: list[Committed]) -> None:
        overlay = self.overlay
        for p in batch:
            for name, key, *_ in (*p.changes.sets, *p.changes.dels):
                found = overlay.get((name, key))
                if found is not None and found[1] == p.ticket:  # not overwritten since
                    del overlay[(name, key)]
        if not overlay:
            # A fresh dict: one emptied by deletions keeps its capacity, and scanning
            # it would cost what it once held.
            self.overlay = {}
        for p, r in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(r)
        if self._on_commit is not None:
            self._on_commit(results)
        self._since_checkpoint += len(batch)
        if self._since_checkpoint >= _CHECKPOINT_EVERY and (
            self._checkpointing is None or self._checkpointing.done()
        ):
            self._since_checkpoint = 0
            loop = asyncio.get_running_loop()
            self._checkpointing = loop.run_in_executor(
                self._checkpointer, _checkpoint, self.db_path()
            )

    def _fail(self, batch: list[Pending], exc: BaseException) -> None:
        """A group failed: it and everything submitted after it fail; the overlay goes."""
        later, self._queue = self._queue, []
        self.overlay.clear()
        self.failures += 1
        err = exc if isinstance(exc, StateError) else StateError(f"the commit failed: {exc!r}")
        for p in (*batch, *later):
            if not p.future.done():
                p.future.set_exception(err)
                p.future.exception()  # retrieved: a waiter that went away is no error

    # -- readers (event loop side) ----------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        """The connection for a write transaction's reads, on the live generation."""
        if self._reader is None or self._reader[0] != self.generation:
            self._close_reader()
            self._reader = (self.generation, connect_reader(self.db_path()))
        return self._reader[1]

    def read_point(self, fn: Callable[..., T], *args: object) -> T:
        """
        Run a short read inline, on the writer connection if it is free, else ``reader()``.

        The writer connection's page cache stays warm; a second connection's cache
        is dropped at every commit of the first, so its lookups go to the OS again.
        """
        conn = self._conn
        if conn is not None and self.conn_lock.acquire(blocking=False):
            try:
                return fn(conn, *args)
            finally:
                self.conn_lock.release()
        return fn(self.reader(), *args)

    def lease(self) -> tuple[int, sqlite3.Connection]:
        """A connection of the live generation for a snapshot; give it back with ``release``."""
        self.live_meta()
        while self._pool:
            gen, conn = self._pool.pop()
            if gen == self.generation:
                return gen, conn
            conn.close()
        return self.generation, connect_reader(self.db_path())

    def release(self, gen: int, conn: sqlite3.Connection) -> None:
        """Return a leased connection (its read transaction ended)."""
        if gen == self.generation and len(self._pool) < _POOL and self._executor is not None:
            self._pool.append((gen, conn))
        else:
            conn.close()

    def prune_pool(self) -> None:
        """Close idle connections of replaced generations (after a restore or a loss)."""
        keep = [(g, c) for g, c in self._pool if g == self.generation]
        for g, c in self._pool:
            if g != self.generation:
                c.close()
        self._pool = keep

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader[1].close()
            self._reader = None

    # -- on the writer thread --------------------------------------------------------

    def db_path(self, gen: int | None = None) -> Path:
        """The database file of generation *gen* (by default the live one)."""
        return self.root / f"state-{self.generation if gen is None else gen}.db"

    @_holding_conn
    def open_conn(self, gen: int) -> None:
        """Open generation *gen* as the live database."""
        conn = connect(self.db_path(gen), durability=self.durability)
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # _checkpoint does it, off the commit path
        try:
            self.meta = read_meta(conn)
        except BaseException:
            conn.close()
            raise
        self._conn, self.generation = conn, gen

    @_holding_conn
    def close_conn(self) -> None:
        """Close the live connection and the inline reader, if open."""
        # Let a running checkpoint finish first: its file may be about to go.
        self._checkpointer.submit(lambda: None).result()
        self._close_reader()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def conn(self) -> sqlite3.Connection:
        """The live connection."""
        if self._conn is None:
            raise StoreClosed(f"the state store of partition {self.partition} is closed")
        return self._conn

    def live_meta(self) -> Meta:
        """The live meta."""
        if self.meta is None or self._executor is None:
            raise StoreClosed(f"the state store of partition {self.partition} is not open")
        return self.meta

    @_holding_conn
    def commit_batch(self, batch: list[Pending]) -> list[Committed]:
        """
        Commit a group of transactions in one SQLite transaction (one fsync); return each.

        They are applied one after another in submission order, each with the next
        LSN and its own log record and time, so the log is what committing them one
        by one would have written; only ``meta`` is written once, for the last.
        """
        conn, meta = self.conn(), self.live_meta()
        lsn = meta.lsn
        dl, cfg = meta.epoch.data_loss_number, meta.epoch.configuration_number
        out: list[Committed] = []
        now = ""
        conn.execute("BEGIN IMMEDIATE")
        try:
            for p in batch:
                ch = p.changes
                lsn += 1
                now = _now()
                for name, values in p.enqueues:
                    (top,) = conn.execute(
                        "SELECT MAX(seq) FROM queue WHERE name = ?", (name,)
                    ).fetchone()
                    base = top or 0
                    ch.enqs.extend((name, base + i, v) for i, v in enumerate(values, 1))
                events = _events(conn, ch, p.watch) if p.watch else []
                apply_changes(conn, ch)
                conn.execute(
                    "INSERT INTO log (lsn, epoch_dl, epoch_cfg, time, ops) VALUES (?, ?, ?, ?, ?)",
                    (lsn, dl, cfg, now, ch.ops_json()),
                )
                out.append(Committed(lsn, now, events))
            conn.execute(
                "UPDATE meta SET lsn = ?, tail_dl = ?, tail_cfg = ?, tail_time = ? WHERE id = 1",
                (lsn, dl, cfg, now),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.meta = meta.advanced(lsn, now)
        return out

    @_holding_conn
    def truncate_log(self, up_to: int | None) -> int:
        """Drop the log up to *up_to* (default: the backup base); return how many went."""
        conn, meta = self.conn(), self.live_meta()
        if up_to is None:
            up_to = meta.base_lsn if meta.base_lsn is not None else meta.lsn
        up_to = min(up_to, meta.lsn)
        if up_to <= meta.log_floor:
            return 0
        with _write_transaction(conn):
            n = conn.execute("DELETE FROM log WHERE lsn <= ?", (up_to,)).rowcount
            conn.execute("UPDATE meta SET log_floor = ? WHERE id = 1", (up_to,))
        self.meta = replace(meta, log_floor=up_to)
        return int(n)

    @_holding_conn
    def accept(self, gen: int, info: BackupInfo) -> bool:
        """
        Make *info* the base of the next incremental; False if the store moved on.

        The store moved on when a restore or a loss replaced the database (a new
        generation) or the epoch changed while the backup ran.
        """
        meta = self.live_meta()
        if gen != self.generation or meta.epoch != info.epoch or self._conn is None:
            return False
        floor = max(meta.log_floor, info.lsn) if self.truncate else meta.log_floor
        conn = self._conn
        e = info.epoch
        with _write_transaction(conn):
            if floor > meta.log_floor:
                conn.execute("DELETE FROM log WHERE lsn <= ?", (floor,))
            conn.execute(
                "UPDATE meta SET base_id = ?, base_lsn = ?, base_chain = ?, base_dl = ?, "
                "base_cfg = ?, log_floor = ? WHERE id = 1",
                (
                    info.backup_id,
                    info.lsn,
                    info.chain_id,
                    e.data_loss_number,
                    e.configuration_number,
                    floor,
                ),
            )
        self.meta = replace(
            meta,
            base_id=info.backup_id,
            base_lsn=info.lsn,
            base_chain=info.chain_id,
            base_epoch=e,
            log_floor=floor,
        )
        return True

    @_holding_conn
    def swap(self, gen: int, epoch: Epoch) -> None:
        """Make the built database of generation *gen* the live one, atomically."""
        self.close_conn()
        try:
            _files.failpoint("restore-before-swap")
            _files.write_current(self.root, _files.Current(gen, self.partition, epoch))
        except BaseException:
            self.open_conn(self.generation)
            raise
        _files.failpoint("restore-after-swap")
        old = self.generation
        self.open_conn(gen)
        remove_db_files(self.root, old)


@contextlib.contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


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


def _now() -> str:
    """``format_time(datetime.now(UTC))``, without strftime (it is on every commit's path)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"  # drop "+00:00"


def _checkpoint(db: Path) -> None:
    """
    Copy the WAL back into the database, beside the writer (a PASSIVE checkpoint).

    The writer connection does not checkpoint by itself (``wal_autocheckpoint`` is
    off), so that no commit pays for it; any error is left for the next one.
    """
    with contextlib.suppress(sqlite3.Error):
        conn = sqlite3.connect(uri_rw(db), uri=True, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 1000")
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()


def _translated(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except sqlite3.Error as exc:
        raise StateError(f"the state database failed: {exc}") from exc


def remove_db_files(root: Path, gen: int) -> None:
    """Delete generation *gen*'s database and its companions."""
    for p in _files.database_files(root).get(gen, []):
        p.unlink(missing_ok=True)
