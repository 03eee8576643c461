"""
Transactions: write transactions, read-only snapshot transactions, and how they read.

A **write transaction** (``store.transaction()``) holds the store's write lock from
its start until it ends, so transactions are serialisable: each sees the
committed state, the changes of the transactions before it that are still being
made durable (the writer's overlay, see ``_writer``), and its own writes. Its
writes stay in memory until it ends; then it is committed (or submitted to a group
commit), the lock goes to the next transaction, and ``async with`` returns once it
is durable (``_durable``). Point reads run inline (``Writer.read_point``); enumerations, counts and
queue reads first wait until the submitted transactions are in SQLite (``drain``).

A **snapshot transaction** (``store.snapshot()``) takes no lock: it holds one
SQLite read transaction on a connection of its own, fixed at the LSN it starts
at, and reads that state however long it runs, while writers go on.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from safehold.core.snapshot import Epoch
from safehold.state._db import Changes
from safehold.state.errors import OperationTimedOut, StateError, TransactionError

__all__ = ["ConditionalValue", "SnapshotTransaction", "Transaction", "check_name"]

T = TypeVar("T")
V = TypeVar("V")
PAGE = 256
_MAX_NAME = 256


@dataclass(frozen=True)
class ConditionalValue(Generic[V]):
    """
    Service Fabric's ``ConditionalValue<T>``: a value, or the absence of one.

    ``has_value`` says which; ``value`` is None when there is none. It is true in a
    boolean context exactly when it has a value, so ``if (r := await d.try_get(tx, k)):``.
    """

    has_value: bool
    value: V | None = None

    def __bool__(self) -> bool:
        return self.has_value


class _Source(Protocol):
    """What a write transaction reads through: the store's writer (``_writer.Writer``)."""

    overlay: dict[tuple[str, str], tuple[str | None, int]]
    failures: int

    @property
    def pending(self) -> bool: ...

    def reader(self) -> sqlite3.Connection: ...

    def read_point(self, fn: Callable[..., T], *args: object) -> T: ...

    async def drain(self) -> None: ...


@dataclass
class QueueState:
    """One queue as a transaction sees it, on top of the committed rows."""

    cursor: int = 0  # the committed rows with seq <= cursor were dequeued by this transaction
    taken: list[int] = field(default_factory=list)
    pending: deque[str] = field(default_factory=deque)  # enqueued by this transaction
    exhausted: bool = False  # no committed row is left after cursor


class _Base:
    """What both kinds of transaction share: ownership checks and the per-queue view."""

    readonly = False

    def __init__(self, owner: object) -> None:
        self._owner = owner
        self._open = True
        self._aborted = False
        self._dict: dict[tuple[str, str], str | None] = {}
        self._queues: dict[str, QueueState] = {}
        self._scan: asyncio.Lock | None = None  # held while a scan uses the connection
        self.lsn: int | None = None

    @property
    def active(self) -> bool:
        """Whether the transaction can still be used."""
        return self._open and not self._aborted

    def _check(self, owner: object) -> None:
        if owner is not self._owner:
            raise TransactionError("this collection belongs to another store than the transaction")
        if not self._open:
            raise TransactionError("the transaction has ended")
        if self._aborted:
            raise TransactionError("the transaction was aborted")

    def _writable(self, owner: object) -> None:
        self._check(owner)
        if self.readonly:
            raise TransactionError("a snapshot transaction cannot write")

    def _queue(self, name: str) -> QueueState:
        return self._queues.setdefault(name, QueueState())

    def _close(self) -> None:
        self._open = False

    def _conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    async def _settle(self) -> None:
        """Before a read the overlay cannot answer: make SQLite hold everything visible."""

    async def _text(self, owner: object, name: str, key: str) -> str | None:
        """The encoded value of *key* as this transaction sees it (None: no value)."""
        self._check(owner)
        mine = self._dict.get((name, key), _MISSING)
        if mine is not _MISSING:
            return mine
        return await self._point(_get, name, key)

    async def _point(self, fn: Callable[..., T], *args: object) -> T:
        """A short read (one row): inline, on the transaction's connection."""
        if self._scan is None or not self._scan.locked():
            return fn(self._conn(), *args)
        async with self._scan:
            return fn(self._conn(), *args)

    async def query(self, owner: object, fn: Callable[..., T], *args: object) -> T:
        """A read over many rows, on a worker thread, of everything visible settled in SQLite."""
        self._check(owner)
        await self._settle()
        if self._scan is None:
            self._scan = asyncio.Lock()
        async with self._scan:  # a scan of another task of this transaction may be running
            return await asyncio.to_thread(fn, self._conn(), *args)

    async def head(self, owner: object, fn: Callable[..., T], *args: object) -> T:
        """A short read after settling (queue heads and counts)."""
        self._check(owner)
        await self._settle()
        return await self._point(fn, *args)


_MISSING: str | None = "\0missing"  # an impossible encoded value: JSON never starts with NUL


class Transaction(_Base):
    """
    A unit of work on one store: ``async with store.transaction() as tx:``.

    Leaving the block normally commits; an exception, or ``abort()``, discards
    every change. A transaction that changed nothing commits nothing and takes no
    LSN. After the block, ``lsn`` is the committed LSN (or None), and using the
    transaction again raises ``TransactionError``.
    """

    def __init__(self, owner: object, source: _Source, deadline: float | None = None) -> None:
        super().__init__(owner)
        self._source = source
        self._failures = source.failures
        self._deadline = deadline

    def abort(self) -> None:
        """Discard every change; the block then ends without committing."""
        self._aborted = True
        self._dict.clear()
        self._queues.clear()

    def _conn(self) -> sqlite3.Connection:
        return self._source.reader()

    async def _point(self, fn: Callable[..., T], *args: object) -> T:
        if self._scan is not None and self._scan.locked():
            async with self._scan:  # a scan of this transaction is using the reader
                return self._source.read_point(fn, *args)
        return self._source.read_point(fn, *args)

    async def _text(self, owner: object, name: str, key: str) -> str | None:
        self._check(owner)
        mine = self._dict.get((name, key), _MISSING)
        if mine is not _MISSING:
            return mine
        pending = self._source.overlay.get((name, key))
        if pending is not None:
            return pending[0]
        if self._scan is None or not self._scan.locked():
            return self._source.read_point(_get, name, key)  # the fast path: inline
        return await self._point(_get, name, key)

    async def _settle(self) -> None:
        if not self._source.pending:
            return
        if self._deadline is None:
            await self._source.drain()
            return
        try:
            async with asyncio.timeout(max(0.0, self._deadline - time.monotonic())):
                await self._source.drain()
        except TimeoutError as exc:
            raise OperationTimedOut(
                "the transaction's timeout passed while earlier commits were finishing"
            ) from exc

    def _changes(self) -> tuple[Changes, list[tuple[str, list[str]]]]:
        """
        The changes to commit, and per queue the values to enqueue (seqs come at commit).

        Raises:
            StateError: a commit before this transaction failed while it ran; it may
                have read that commit's changes, so it cannot commit.
        """
        ch = Changes()
        if self._aborted:
            return ch, []
        for (name, key), value in self._dict.items():
            if value is None:
                ch.dels.append((name, key))
            else:
                ch.sets.append((name, key, value))
        enqueues: list[tuple[str, list[str]]] = []
        for name, q in self._queues.items():
            ch.deqs.extend((name, seq) for seq in q.taken)
            if q.pending:
                enqueues.append((name, list(q.pending)))
        if (ch or enqueues) and self._source.failures != self._failures:
            raise StateError("an earlier commit failed while this transaction ran; retry it")
        return ch, enqueues


class SnapshotTransaction(_Base):
    """
    A read-only view of the store at one LSN: ``async with store.snapshot() as snap:``.

    Pass it wherever a collection's read methods take a transaction (``get``,
    ``try_get``, ``contains``, ``count``, ``items``, ``keys``, ``values``, ``peek``,
    ``try_peek``); writes raise ``TransactionError``. It takes no lock, never blocks
    a writer, and sees exactly the state at ``lsn`` (in ``epoch``) until it ends.
    """

    readonly = True

    def __init__(self, owner: object, conn: sqlite3.Connection, lsn: int, epoch: Epoch) -> None:
        super().__init__(owner)
        self._connection = conn
        self.lsn = lsn
        self.epoch = epoch

    def _conn(self) -> sqlite3.Connection:
        return self._connection


def check_name(name: str) -> str:
    """
    Check a collection name.

    Raises:
        TypeError: it is not a string.
        ValueError: it is empty, too long, or not encodable as UTF-8.
    """
    if not isinstance(name, str):
        raise TypeError(f"a collection name must be a str, not {type(name).__name__}")
    if not name or len(name) > _MAX_NAME:
        raise ValueError(f"a collection name must have 1 to {_MAX_NAME} characters")
    check_utf8(name)
    return name


def check_utf8(s: str) -> None:
    """Refuse a string SQLite cannot store (a lone surrogate would fail far from its cause)."""
    if not s.isascii():
        s.encode("utf-8")


# -- reads; each fetches all its rows, so no statement keeps a read transaction open --


def _get(conn: sqlite3.Connection, name: str, key: str) -> str | None:
    rows = conn.execute("SELECT value FROM dict WHERE name = ? AND key = ?", (name, key)).fetchall()
    return str(rows[0][0]) if rows else None


def count_dict(conn: sqlite3.Connection, name: str, keys: list[str]) -> tuple[int, set[str]]:
    """How many keys *name* has, and which of *keys* are among them."""
    (n,) = conn.execute("SELECT COUNT(*) FROM dict WHERE name = ?", (name,)).fetchall()[0]
    present: set[str] = set()
    for i in range(0, len(keys), 500):  # stay under SQLite's limit on bound parameters
        part = keys[i : i + 500]
        marks = ",".join("?" * len(part))
        rows = conn.execute(
            f"SELECT key FROM dict WHERE name = ? AND key IN ({marks})",  # noqa: S608
            (name, *part),
        ).fetchall()
        present.update(r[0] for r in rows)
    return int(n), present


def page_dict(conn: sqlite3.Connection, name: str, after: str | None) -> list[tuple[str, str]]:
    """The next page of (key, value) of *name* after key *after*, in key order."""
    if after is None:
        rows = conn.execute(
            "SELECT key, value FROM dict WHERE name = ? ORDER BY key LIMIT ?", (name, PAGE)
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT key, value FROM dict WHERE name = ? AND key > ? ORDER BY key LIMIT ?",
            (name, after, PAGE),
        ).fetchall()
    return [(str(k), str(v)) for k, v in rows]


def queue_next(conn: sqlite3.Connection, name: str, after: int) -> tuple[int, str] | None:
    """The first (seq, value) of queue *name* after *after*."""
    rows = conn.execute(
        "SELECT seq, value FROM queue WHERE name = ? AND seq > ? ORDER BY seq LIMIT 1",
        (name, after),
    ).fetchall()
    return (int(rows[0][0]), str(rows[0][1])) if rows else None


def queue_count(conn: sqlite3.Connection, name: str, after: int) -> int:
    """How many values queue *name* holds after *after*."""
    (n,) = conn.execute(
        "SELECT COUNT(*) FROM queue WHERE name = ? AND seq > ?", (name, after)
    ).fetchall()[0]
    return int(n)


def queue_page(conn: sqlite3.Connection, name: str, after: int) -> list[tuple[int, str]]:
    """The next page of (seq, value) of queue *name* after *after*."""
    rows = conn.execute(
        "SELECT seq, value FROM queue WHERE name = ? AND seq > ? ORDER BY seq LIMIT ?",
        (name, after, PAGE),
    ).fetchall()
    return [(int(s), str(v)) for s, v in rows]
