"""
Transactions, and the two kinds of collection they change: dictionaries and queues.

A transaction holds the store's write lock from its start to its end, so it sees
the committed state plus its own changes, and nobody else's. Its writes stay in
memory until commit, which applies them, appends one record to the change log and
takes the next LSN, all in one SQLite transaction on the writer thread. So a
transaction costs one hop to the writer thread to commit, plus one per read that
its own writes do not answer.

Keys are strings; values are anything JSON can hold (``dict``, ``list``, ``str``,
``int``, ``float``, ``bool``, ``None``; no NaN). A value is encoded when it is
written, so changing the object afterwards changes nothing stored, and each read
returns a new object.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from safehold.state._db import Changes, decode, encode
from safehold.state.errors import QueueEmpty, TransactionError

__all__ = ["Dictionary", "Queue", "Transaction"]

T = TypeVar("T")
_PAGE = 256
_MAX_NAME = 256


class Runner(Protocol):
    """Runs a function with the writer connection on the writer thread."""

    def __call__(self, fn: Callable[[sqlite3.Connection], T], /) -> Awaitable[T]:
        """Run *fn* and return its result."""
        ...


@dataclass
class _QueueState:
    """One queue as a transaction sees it, on top of the committed rows."""

    cursor: int = 0  # the committed rows with seq <= cursor were dequeued by this transaction
    taken: list[int] = field(default_factory=list)
    pending: deque[str] = field(default_factory=deque)  # enqueued by this transaction
    exhausted: bool = False  # no committed row is left after cursor


class Transaction:
    """
    A unit of work on one store: ``async with store.transaction() as tx:``.

    Leaving the block normally commits; an exception, or ``abort()``, discards
    every change. A transaction that changed nothing commits nothing and takes no
    LSN. After the block, ``lsn`` is the committed LSN (or None), and using the
    transaction again raises ``TransactionError``.
    """

    def __init__(self, owner: object, run: Runner) -> None:
        self._owner = owner
        self._run = run
        self._open = True
        self._aborted = False
        self._dict: dict[tuple[str, str], str | None] = {}
        self._queues: dict[str, _QueueState] = {}
        self.lsn: int | None = None

    @property
    def active(self) -> bool:
        """Whether the transaction can still be used."""
        return self._open and not self._aborted

    def abort(self) -> None:
        """Discard every change; the block then ends without committing."""
        self._aborted = True
        self._dict.clear()
        self._queues.clear()

    def _check(self, owner: object) -> None:
        if owner is not self._owner:
            raise TransactionError("this collection belongs to another store than the transaction")
        if not self._open:
            raise TransactionError("the transaction has ended")
        if self._aborted:
            raise TransactionError("the transaction was aborted")

    async def _read(self, owner: object, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._check(owner)
        return await self._run(fn)

    def _queue(self, name: str) -> _QueueState:
        return self._queues.setdefault(name, _QueueState())

    def _close(self) -> None:
        self._open = False

    def _changes(self) -> tuple[Changes, list[tuple[str, list[str]]]]:
        """The changes to commit, and per queue the values to enqueue (seqs come at commit)."""
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
        return ch, enqueues


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
    _check_utf8(name)
    return name


def _check_key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a key must be a str, not {type(key).__name__}")
    _check_utf8(key)
    return key


def _check_utf8(s: str) -> None:
    # SQLite stores TEXT as UTF-8; a lone surrogate would fail at commit, far from its cause.
    if not s.isascii():
        s.encode("utf-8")


class Dictionary:
    """
    A transactional mapping from ``str`` keys to JSON values; ``store.dictionary(name)``.

    Iteration (``items``, ``keys``) is in key order (Unicode code point order).
    """

    def __init__(self, owner: object, name: str) -> None:
        self._owner = owner
        self.name = check_name(name)

    def __repr__(self) -> str:
        return f"Dictionary({self.name!r})"

    async def get(self, tx: Transaction, key: str, default: Any = None) -> Any:
        """Return the value of *key*, or *default* when there is none."""
        _check_key(key)
        tx._check(self._owner)
        if (self.name, key) in tx._dict:
            text = tx._dict[(self.name, key)]
        else:
            text = await tx._read(self._owner, partial(_get, self.name, key))
        return default if text is None else decode(text)

    async def set(self, tx: Transaction, key: str, value: Any) -> None:
        """
        Set *key* to *value*.

        Raises:
            TypeError, ValueError: *value* is not JSON-serialisable.
        """
        _check_key(key)
        tx._check(self._owner)
        tx._dict[(self.name, key)] = encode(value)

    async def delete(self, tx: Transaction, key: str) -> bool:
        """Remove *key*; return whether it was there."""
        existed = await self.contains(tx, key)
        tx._dict[(self.name, key)] = None
        return existed

    async def contains(self, tx: Transaction, key: str) -> bool:
        """Whether *key* has a value."""
        _check_key(key)
        tx._check(self._owner)
        if (self.name, key) in tx._dict:
            return tx._dict[(self.name, key)] is not None
        return await tx._read(self._owner, partial(_get, self.name, key)) is not None

    async def count(self, tx: Transaction) -> int:
        """The number of keys."""
        tx._check(self._owner)
        mine = {k: v for (n, k), v in tx._dict.items() if n == self.name}
        committed, present = await tx._read(self._owner, partial(_count, self.name, list(mine)))
        return committed + sum((v is not None) - (k in present) for k, v in mine.items())

    async def items(self, tx: Transaction) -> AsyncIterator[tuple[str, Any]]:
        """Yield ``(key, value)`` pairs in key order, as the transaction sees them."""
        tx._check(self._owner)
        # This transaction's own writes, as they are now, merged into the committed rows.
        mine = sorted((k, v) for (n, k), v in tx._dict.items() if n == self.name)
        i = 0
        after: str | None = None
        while True:
            page = await tx._read(self._owner, partial(_page, self.name, after))
            for key, text in page:
                while i < len(mine) and mine[i][0] <= key:
                    k, v = mine[i]
                    i += 1
                    if v is not None:
                        yield k, decode(v)
                if i and mine[i - 1][0] == key:
                    continue  # overwritten or deleted by this transaction
                yield key, decode(text)
            if len(page) < _PAGE:
                break
            after = page[-1][0]
        for k, v in mine[i:]:
            if v is not None:
                yield k, decode(v)

    async def keys(self, tx: Transaction) -> AsyncIterator[str]:
        """Yield the keys in order."""
        async for key, _ in self.items(tx):
            yield key


class Queue:
    """A transactional FIFO queue of JSON values; ``store.queue(name)``."""

    def __init__(self, owner: object, name: str) -> None:
        self._owner = owner
        self.name = check_name(name)

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    async def enqueue(self, tx: Transaction, value: Any) -> None:
        """
        Add *value* at the tail.

        Raises:
            TypeError, ValueError: *value* is not JSON-serialisable.
        """
        tx._check(self._owner)
        tx._queue(self.name).pending.append(encode(value))

    async def dequeue(self, tx: Transaction) -> Any:
        """
        Remove the value at the head and return it.

        Raises:
            QueueEmpty: the queue is empty.
        """
        q = tx._queue(self.name)
        row = await self._head(tx, q)
        if row is not None:
            q.cursor = row[0]
            q.taken.append(row[0])
            return decode(row[1])
        if q.pending:
            return decode(q.pending.popleft())  # enqueued and dequeued here: no change at all
        raise QueueEmpty(f"queue {self.name!r} is empty")

    async def peek(self, tx: Transaction) -> Any:
        """
        Return the value at the head without removing it.

        Raises:
            QueueEmpty: the queue is empty.
        """
        q = tx._queue(self.name)
        row = await self._head(tx, q)
        if row is not None:
            return decode(row[1])
        if q.pending:
            return decode(q.pending[0])
        raise QueueEmpty(f"queue {self.name!r} is empty")

    async def count(self, tx: Transaction) -> int:
        """The number of values in the queue."""
        tx._check(self._owner)
        q = tx._queue(self.name)
        committed = 0
        if not q.exhausted:
            committed = await tx._read(self._owner, partial(_q_count, self.name, q.cursor))
        return committed + len(q.pending)

    async def values(self, tx: Transaction) -> AsyncIterator[Any]:
        """Yield the values from head to tail, without removing them."""
        tx._check(self._owner)
        q = tx._queue(self.name)
        pending = list(q.pending)
        after = q.cursor
        while not q.exhausted:
            page = await tx._read(self._owner, partial(_q_page, self.name, after))
            for seq, text in page:
                yield decode(text)
                after = seq
            if len(page) < _PAGE:
                break
        for text in pending:
            yield decode(text)

    async def _head(self, tx: Transaction, q: _QueueState) -> tuple[int, str] | None:
        tx._check(self._owner)
        if q.exhausted:
            return None
        row = await tx._read(self._owner, partial(_q_next, self.name, q.cursor))
        if row is None:
            q.exhausted = True
        return row


# -- reads, run on the writer thread -----------------------------------------------


def _get(name: str, key: str, conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM dict WHERE name = ? AND key = ?", (name, key)).fetchone()
    return None if row is None else str(row[0])


def _count(name: str, keys: list[str], conn: sqlite3.Connection) -> tuple[int, set[str]]:
    (n,) = conn.execute("SELECT COUNT(*) FROM dict WHERE name = ?", (name,)).fetchone()
    present: set[str] = set()
    for i in range(0, len(keys), 500):  # stay under SQLite's limit on bound parameters
        part = keys[i : i + 500]
        marks = ",".join("?" * len(part))
        rows = conn.execute(
            f"SELECT key FROM dict WHERE name = ? AND key IN ({marks})",  # noqa: S608
            (name, *part),
        )
        present.update(r[0] for r in rows)
    return int(n), present


def _page(name: str, after: str | None, conn: sqlite3.Connection) -> list[tuple[str, str]]:
    if after is None:
        rows = conn.execute(
            "SELECT key, value FROM dict WHERE name = ? ORDER BY key LIMIT ?", (name, _PAGE)
        )
    else:
        rows = conn.execute(
            "SELECT key, value FROM dict WHERE name = ? AND key > ? ORDER BY key LIMIT ?",
            (name, after, _PAGE),
        )
    return [(str(k), str(v)) for k, v in rows]


def _q_next(name: str, after: int, conn: sqlite3.Connection) -> tuple[int, str] | None:
    row = conn.execute(
        "SELECT seq, value FROM queue WHERE name = ? AND seq > ? ORDER BY seq LIMIT 1",
        (name, after),
    ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def _q_count(name: str, after: int, conn: sqlite3.Connection) -> int:
    (n,) = conn.execute(
        "SELECT COUNT(*) FROM queue WHERE name = ? AND seq > ?", (name, after)
    ).fetchone()
    return int(n)


def _q_page(name: str, after: int, conn: sqlite3.Connection) -> list[tuple[int, str]]:
    rows = conn.execute(
        "SELECT seq, value FROM queue WHERE name = ? AND seq > ? ORDER BY seq LIMIT ?",
        (name, after, _PAGE),
    )
    return [(int(s), str(v)) for s, v in rows]
