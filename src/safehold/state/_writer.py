"""
The store's writer: its commits, its thread, and the connections that read beside it.

Every SQLite write of the live database runs holding ``conn_lock``: inline on the
event loop (commits), or on the writer thread (maintenance: a backup's view and
acceptance, truncation, restores' swaps; and commits while that thread holds the
connection). The live meta (``_head``) and ``generation`` change only there. A
commit writes its rows and its log record, not the ``meta`` row: the last LSN is
the log's newest record (``_db.read_meta``); what may drop the log's tail
(truncation, a backup's acceptance) writes the LSN into ``meta`` in the same
SQLite transaction.

**Commits run inline, at both durabilities.** The writer connection runs with
``synchronous=NORMAL``: a commit writes a few pages into the OS cache, which costs
less than handing it to a thread. At FULL, the transaction then waits for an
fsync of the WAL that one thread runs for every commit made before it
(``_durable``: the durability promise, and why it holds).

**The inline path.** With nothing queued, a transaction's first point read opens
the SQLite write transaction on the writer connection (``read_point``), and its
commit ends it (``commit_now``: no future, no overlay, no turn of the loop), as
``BEGIN IMMEDIATE; SELECT; UPDATE; COMMIT`` would; reads in autocommit mode take
and drop a WAL read lock each. Work handed to the writer thread (``call``) ends
that SQLite transaction first, so it never waits for a transaction that may be
waiting for it. Otherwise point reads use the writer connection when it is free,
else ``reader()``; snapshots lease connections of their own (``lease``).

**Groups.** A transaction that only wrote, ending while others wait for the write
lock, hands its changes to ``submit`` and releases the lock at once; everything
submitted by the loop's next turn commits as one group, in one SQLite transaction:
each transaction still gets its own LSN, log record and time. Between ``submit``
and its group's commit, a transaction's changes are visible to later ones through
``overlay``; reads it cannot answer exactly (enumerations, counts, queues)
``drain`` first. If a group fails, it and every transaction submitted after it
fail, and ``failures`` moves so that transactions running now fail at their commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

from safehold.state._commit import (
    Checkpoints,
    Committed,
    Event,
    Item,
    commit_items,
    translated,
)
from safehold.state._db import (
    Changes,
    Durability,
    Meta,
    connect,
    connect_reader,
    read_meta,
)
from safehold.state._durable import WalSync
from safehold.state.errors import StateError, StoreClosed

__all__ = ["Committed", "Event", "Pending", "Writer"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
_POOL = 4


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


class Writer:
    """
    The writer thread of the store in *root*.

    Args:
        root: the store's directory.
        partition: the partition id, for messages and ``CURRENT``.
        durability: at ``"full"``, commits wait for the WAL's fsync (``sync``).
        truncate_log: whether accepting a backup drops the log up to it.
        on_commit: called on the event loop with each group's results, in LSN order,
            when one of them has events.
        contended: whether transactions wait for the store's write lock.
    """

    def __init__(
        self,
        root: Path,
        partition: str,
        durability: Durability,
        truncate_log: bool,
        on_commit: Callable[[list[Committed]], None] | None = None,
        contended: Callable[[], bool] = lambda: False,
    ) -> None:
        self.root = root
        self.partition = partition
        self.durability: Durability = durability
        self.truncate = truncate_log
        self.generation = 0
        # (meta as read or last written, last LSN, its time): one reference, replaced
        # whole, so the event loop reads a consistent pair while the thread commits.
        self._head: tuple[Meta, int, str] | None = None
        self.overlay: dict[tuple[str, str], tuple[str | None, int]] = {}
        self.failures = 0
        self._on_commit = on_commit
        self._conn: sqlite3.Connection | None = None
        self._reader: tuple[int, sqlite3.Connection] | None = None
        self._pool: list[tuple[int, sqlite3.Connection]] = []
        self._queue: list[Pending] = []
        self._tickets = 0
        self._flusher: asyncio.Task[None] | None = None  # commits groups on the writer thread
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix=f"state-{partition}"
        )
        # The writer connection is used by the writer thread and, for inline commits
        # at NORMAL, by the event loop: never by both at once.
        self.conn_lock = threading.RLock()
        self._inline_scheduled = False
        self._contended = contended
        self.sync = WalSync(partition, self._flush_inline) if durability == "full" else None
        self._reading = False  # a write transaction's reads opened its SQLite transaction
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix=f"state-ckpt-{partition}")
        self._checkpointing: asyncio.Future[None] | None = None
        # At FULL a checkpoint holds conn_lock: the next commit restarts the WAL (``Checkpoints``).
        sync = self.sync
        self._checkpoints = Checkpoints(*((self.conn_lock, sync.grew) if sync else (None, None)))

    @property
    def running(self) -> bool:
        """Whether the thread still takes work."""
        return self._executor is not None

    async def call(self, fn: Callable[[], T]) -> T:
        """
        Run *fn* on the writer thread; SQLite errors become ``StateError``.

        The SQLite transaction a write transaction's reads opened ends first
        (``end_read``): *fn* may need the connection, and that transaction may be
        waiting for *fn*. Its later reads see the same data (it holds the store's
        write lock, so nothing changes the collections meanwhile).
        """
        if self._executor is None:
            raise StoreClosed(f"the state store of partition {self.partition} is closed")
        self.end_read()
        return await asyncio.get_running_loop().run_in_executor(self._executor, translated, fn)

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
            if self.sync is not None:
                with contextlib.suppress(StateError):  # a failed fsync: nothing to wait for
                    await self.sync.all()
            await self.call(self.close_conn)
            for _, conn in self._pool:
                conn.close()
            self._pool.clear()
            self._executor.shutdown()
            self._executor = None
            self._checkpointer.shutdown()
            if self.sync is not None:
                self.sync.shutdown()

    async def durable(self) -> None:
        """
        Return once every commit made so far is durable (at NORMAL: at once).

        Raises:
            StateError: an fsync failed; the store must be reopened.
        """
        if self.sync is not None and self.sync.written > self.sync.synced:
            await self.sync.all()

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
        With *more_coming* False (no other transaction waits for the lock), the
        group is committed at once instead of at the loop's next turn. The future
        is done once the group is in SQLite; at FULL, its fsync is ``sync``'s.

        Raises:
            StateError: an fsync failed before; the store must be reopened.
        """
        if self._executor is None:
            raise StoreClosed(f"the state store of partition {self.partition} is closed")
        if self.sync is not None and self.sync.error is not None:
            raise self.sync.error
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
        if more_coming and self.sync is not None and self.sync.busy:
            return fut  # its caller waits for the next sync: it commits when this one lands
        if not more_coming and not self._inline_scheduled:
            self._flush_inline()
        elif not self._inline_scheduled:
            self._inline_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_inline)
        return fut

    def commit_now(
        self,
        changes: Changes,
        enqueues: list[tuple[str, list[str]]],
        watch: frozenset[str],
    ) -> Committed | None:
        """
        With nothing queued: commit the transaction here; None: ``submit`` it.

        The caller holds the store's write lock, and either its reads opened the
        read transaction (``read_point``), or no other transaction waits for the
        lock. Nobody read these changes (they never were in the overlay), so a failure
        concerns this transaction alone: it raises ``StateError``, and nothing else fails.
        At FULL the caller then waits for ``sync`` (the result's ``seq``).
        """
        if self.sync is not None and self.sync.error is not None:
            self.end_read()
            raise self.sync.error
        if self._reading:
            try:
                results = self._commit(((changes, enqueues, watch),))
            except sqlite3.Error as exc:
                raise StateError(f"the state database failed: {exc}") from exc
            finally:
                self.end_read()
            self._after(results)
            return results[0]
        if self._queue or self._executor is None:
            return None
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            return None
        if not self.conn_lock.acquire(blocking=False):
            return None  # the writer thread has the connection (a backup being accepted)
        try:
            results = translated(partial(self._commit, ((changes, enqueues, watch),)))
        finally:
            self.conn_lock.release()
        self._after(results)
        return results[0]

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
            elif self._queue and not self._inline_scheduled:
                self._flush_inline()  # held back for a sync (``submit``): now
            else:
                await asyncio.sleep(0)  # an inline group is scheduled on the loop

    def _flush_inline(self) -> None:
        """
        Commit the queued group right here, on the event loop.

        A commit writes a few pages into the OS cache without fsync, which costs
        less than handing it to the writer thread (the hand-off and the GIL going
        back and forth cost more than the commit). Checkpoints and, at FULL, the
        WAL's syncs run on threads of their own. If the writer thread holds the
        connection (a backup being accepted, a log truncation), the group goes
        there instead.
        """
        self._inline_scheduled = False  # a scheduled call finding the queue empty does nothing
        if not self._queue or self._flushing or self._executor is None:
            return
        if not self.conn_lock.acquire(blocking=False):
            self._start_flusher()
            return
        batch, self._queue = self._queue, []
        try:
            results = translated(partial(self.commit_batch, batch))
        except Exception as exc:
            self._fail(batch, exc)
            return
        finally:
            self.conn_lock.release()
        self._done(batch, results)

    async def _flush(self) -> None:
        # Only while the writer thread holds the connection (see ``_flush_inline``).
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
        self._after(results)

    def _after(self, results: list[Committed]) -> None:
        """After a group's SQLite commit: its events, and now and then a checkpoint."""
        if self._on_commit is not None and any(r.events for r in results):
            self._on_commit(results)
        changes = self._conn.total_changes if self._conn is not None else 0
        if self._checkpoints.due(len(results), changes) and (
            self._checkpointing is None or self._checkpointing.done()
        ):
            self._checkpoints.starting(changes)
            loop = asyncio.get_running_loop()
            self._checkpointing = loop.run_in_executor(
                self._checkpointer, self._checkpoints.run, self.db_path()
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
        Run a write transaction's short read inline: on the writer connection if it is
        free, else on ``reader()``.

        The writer connection's page cache stays warm; a second connection's cache
        is dropped at every commit of the first, so its lookups go to the OS again.
        With nothing queued, the first read opens the transaction's read
        transaction on it (see the module's doc); the transaction's end closes it
        (``commit_now`` or ``end_read``).
        """
        conn = self._conn
        if self._reading:
            return fn(conn, *args)
        if conn is not None and self.conn_lock.acquire(blocking=False):
            if not self._queue and not self._inline_scheduled and not self._deferring():
                flusher = self._flusher
                if (flusher is None or flusher.done()) and not conn.in_transaction:
                    try:
                        # IMMEDIATE, as plain SQLite code would: upgrading a read
                        # transaction to a write one gets SQLITE_BUSY at once, without
                        # the busy timeout, if a reader holds the WAL write lock for a
                        # moment (as one recovering a torn wal-index header does).
                        conn.execute("BEGIN IMMEDIATE")
                    except BaseException:
                        self.conn_lock.release()
                        raise
                    self._reading = True
                    return fn(conn, *args)
            try:
                return fn(conn, *args)
            finally:
                self.conn_lock.release()
        return fn(self.reader(), *args)

    def _deferring(self) -> bool:
        """
        Whether a transaction's reads should leave its commit to a group (see ``submit``).

        At FULL, while a sync runs and others wait for the lock: its caller waits for
        the next sync anyway, and one SQLite commit for the group costs less than one
        each.
        """
        return self.sync is not None and self.sync.busy and self._contended()

    @property
    def reading(self) -> bool:
        """Whether a write transaction's reads opened its SQLite transaction (``read_point``)."""
        return self._reading

    def end_read(self) -> None:
        """End (roll back) the SQLite transaction ``read_point`` opened, if one is open."""
        if not self._reading:
            return
        self._reading = False
        try:
            conn = self._conn
            if conn is not None and conn.in_transaction:
                conn.execute("ROLLBACK")  # it only read, or its commit failed
        finally:
            self.conn_lock.release()

    def lease(self) -> tuple[int, sqlite3.Connection]:
        """A connection of the live generation for a snapshot; give it back with ``release``."""
        self.check_open()
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
        # NORMAL at both durabilities: at FULL, ``sync`` fsyncs the WAL (``_durable``).
        conn = connect(self.db_path(gen), durability="normal")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # _checkpoint does it, off the commit path
        try:
            meta = read_meta(conn)
            if self.sync is not None:
                self.sync.open(Path(f"{self.db_path(gen)}-wal"))
        except BaseException:
            conn.close()
            raise
        self._head = (meta, meta.lsn, meta.tail_time or "")
        self._conn, self.generation = conn, gen

    @_holding_conn
    def close_conn(self) -> None:
        """Close the live connection and the inline reader, if open."""
        # Let a running checkpoint finish first, and close its connection: its file
        # may be about to go.
        self._checkpointer.submit(self._checkpoints.close).result()
        self._close_reader()
        try:
            if self.sync is not None:
                self.sync.close()  # one last fsync: other connections may keep the WAL
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @property
    def connected(self) -> bool:
        """Whether the live connection is open."""
        return self._conn is not None

    def conn(self) -> sqlite3.Connection:
        """The live connection."""
        if self._conn is None:
            raise StoreClosed(f"the state store of partition {self.partition} is closed")
        return self._conn

    def live_meta(self) -> Meta:
        """The live meta."""
        meta, lsn, at = self.head()
        return meta if lsn == meta.lsn else meta.advanced(lsn, at)

    def head(self) -> tuple[Meta, int, str]:
        """
        The meta as last read or written, the last LSN and its commit time.

        Raises:
            StoreClosed: the store is not open.
        """
        head = self._head
        if head is None or self._executor is None:
            raise StoreClosed(f"the state store of partition {self.partition} is not open")
        return head

    def check_open(self) -> None:
        """
        Raise ``StoreClosed`` unless the store is open.

        Raises:
            StoreClosed: it is not.
        """
        self.head()

    def set_meta(self, meta: Meta) -> None:
        """Replace the live meta (maintenance wrote it; the caller holds ``conn_lock``)."""
        self._head = (meta, meta.lsn, meta.tail_time or "")

    @_holding_conn
    def commit_batch(self, batch: list[Pending]) -> list[Committed]:
        """Commit a group of submitted transactions (see ``_commit``)."""
        return self._commit([(p.changes, p.enqueues, p.watch) for p in batch])

    def _commit(self, items: Iterable[Item]) -> list[Committed]:
        """Commit *items* (``commit_items``), advance the head; the caller holds ``conn_lock``."""
        head = self._head
        assert head is not None  # the connection is open
        seq = self.sync.written + 1 if self.sync is not None else 0
        results = commit_items(self.conn(), head[0].epoch, head[1], items, seq)
        if self.sync is not None:
            self.sync.committed()
        if results:
            self._head = (head[0], results[-1].lsn, results[-1].time)
        return results
