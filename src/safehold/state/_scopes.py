"""
The ``async with`` scopes of ``StateStore.transaction()`` and ``StateStore.snapshot()``.

Plain classes rather than ``asynccontextmanager`` generators: a transaction is on
every request's path, and the generator machinery costs more than the work here.
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import time
from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from safehold.core.snapshot import Epoch
from safehold.state._db import LIVE_LSN
from safehold.state._writer import Committed, Writer
from safehold.state.errors import OperationTimedOut
from safehold.state.transaction import SnapshotTransaction, Transaction

if TYPE_CHECKING:
    from safehold.state.store import StateStore

__all__ = ["Opening", "SnapshotScope", "TransactionScope"]

_YIELD_EVERY = 8  # transactions that did not suspend, between two turns of the loop


class TransactionScope:
    """
    ``async with store.transaction(timeout=...) as tx:`` (see ``StateStore.transaction``).

    Enter: wait for the write lock (at most *timeout*). Exit without an error: hand
    the changes to the group commit, release the lock, and return once they are
    durable. Exit with an error: discard them.
    """

    def __init__(self, store: StateStore, timeout: float | None) -> None:
        self._store = store
        self._timeout = timeout
        self._tx: Transaction | None = None
        self._writer: Writer | None = None
        self._token: contextvars.Token[bool] | None = None

    async def __aenter__(self) -> Transaction:
        store = self._store
        store._not_inside("start a transaction")
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        if store._writer is None or store._pending is not None:
            await store._ready()  # a data loss to handle first, or a closed store to refuse
        store._waiting += 1
        try:
            if self._timeout is None:
                await store._write_lock.acquire()
            else:
                await acquire(store._write_lock, self._timeout)
        finally:
            store._waiting -= 1
        try:
            w = self._writer = store._w()
            w.check_open()
            self._tx = Transaction(store, w, deadline)
            self._token = store._in_tx.set(True)
        except BaseException:
            store._write_lock.release()
            raise
        return self._tx

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        store, tx, w = self._store, self._tx, self._writer
        assert tx is not None
        assert w is not None
        assert self._token is not None
        committed: asyncio.Future[Committed] | None = None
        done: Committed | None = None
        try:
            if t is None:
                changes, enqueues = tx._changes()
                if changes or enqueues:
                    waiting = store._waiting > 0
                    if w.reading or not waiting:
                        done = w.commit_now(changes, enqueues, store._hub.watched)
                    if done is None:
                        committed = w.submit(
                            changes, enqueues, store._hub.watched, more_coming=waiting
                        )
        finally:
            try:
                w.end_read()  # it read and committed nothing, or failed
            finally:
                tx._close()
                store._in_tx.reset(self._token)
                store._write_lock.release()
        suspended = False
        if committed is not None:
            if not committed.done():
                # A cancelled caller cancels this future, not the commit, which goes on:
                # the group is the flusher's, and it skips futures already done.
                suspended = True
                await committed
            done = committed.result()
        if done is not None:
            if w.sync is not None and done.seq > w.sync.synced:
                # FULL: the commit is in SQLite; return once a WAL fsync has it.
                suspended = True
                await w.sync.wait(done.seq)
            tx.lsn = done.lsn
        if suspended:
            store._streak = 0
            return
        # Committed at once, or nothing to commit: nothing suspended. Give the loop a
        # turn every few such transactions, so that a task running them back to back
        # cannot starve the others (a turn costs as much as a third of a commit).
        store._streak += 1
        if store._streak >= _YIELD_EVERY:
            store._streak = 0
            await asyncio.sleep(0)


class SnapshotScope:
    """``async with store.snapshot() as snap:`` (see ``StateStore.snapshot``)."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._lease: tuple[Writer, int, sqlite3.Connection] | None = None
        self._snap: SnapshotTransaction | None = None

    async def __aenter__(self) -> SnapshotTransaction:
        store = self._store
        if not (store._in_tx.get() or store._in_hook.get()):
            await store._ready()
        w = store._w()
        gen, conn = w.lease()
        try:
            lsn, epoch = await asyncio.to_thread(_begin, conn)
            await w.durable()  # at FULL, a snapshot sees durable commits only
        except BaseException:
            conn.close()
            raise
        self._lease = (w, gen, conn)
        self._snap = SnapshotTransaction(store, conn, lsn, epoch)
        return self._snap

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._snap is not None
        assert self._lease is not None
        self._snap._close()
        w, gen, conn = self._lease
        await asyncio.to_thread(_end, conn)
        w.release(gen, conn)


async def acquire(lock: asyncio.Lock, timeout: float | None) -> None:
    """
    Acquire *lock*, waiting at most *timeout* seconds (None: as long as it takes).

    Raises:
        OperationTimedOut: the lock was not free in time.
    """
    if timeout is None:
        await lock.acquire()
        return
    try:
        async with asyncio.timeout(timeout):
            await lock.acquire()
    except TimeoutError as exc:
        raise OperationTimedOut(
            f"the write lock was not free within {timeout:g} s (a transaction is running)"
        ) from exc


def _begin(conn: sqlite3.Connection) -> tuple[int, Epoch]:
    """Start the read transaction that fixes the snapshot; return its LSN and epoch."""
    conn.execute("BEGIN")
    lsn, dl, cfg = conn.execute(LIVE_LSN).fetchall()[0]
    return int(lsn), Epoch(int(dl), int(cfg))


def _end(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class Opening:
    """``StateStore.open(...)``: awaitable, and usable with ``async with``."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def __await__(self) -> Generator[Any, None, StateStore]:
        return self._open().__await__()

    async def _open(self) -> StateStore:
        await self._store.start()
        return self._store

    async def __aenter__(self) -> StateStore:
        return await self._open()

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._store.close()
