"""
``Queue[V]``: a transactional FIFO queue; Reliable Queue's operations.

Service Fabric's names map to these: ``EnqueueAsync`` -> ``enqueue``,
``TryDequeueAsync`` -> ``try_dequeue`` (a ``ConditionalValue``), ``TryPeekAsync`` ->
``try_peek``, ``GetCountAsync`` -> ``count``, ``CreateEnumerableAsync`` ->
``values``. ``dequeue`` and ``peek`` raise ``QueueEmpty`` instead.

Reads of a queue see committed rows only after the commits before them are in
SQLite (``Transaction._settle``): a queue-heavy transaction waits for its
predecessors' group commit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Generic, TypeVar

from safehold.state._db import decode, encode
from safehold.state.errors import QueueEmpty
from safehold.state.serializers import Serializer
from safehold.state.transaction import (
    PAGE,
    ConditionalValue,
    QueueState,
    Transaction,
    check_name,
    queue_count,
    queue_next,
    queue_page,
)

if TYPE_CHECKING:
    from safehold.state.transaction import SnapshotTransaction

__all__ = ["Queue"]

V = TypeVar("V")


class Queue(Generic[V]):
    """A transactional FIFO queue of values *V*; ``store.queue(name, ...)``."""

    def __init__(self, owner: object, name: str, values: Serializer[V]) -> None:
        self._owner = owner
        self.name = check_name(name)
        self.value_serializer = values

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    def _dec(self, text: str) -> V:
        return self.value_serializer.from_json(decode(text))

    async def enqueue(self, tx: Transaction, value: V) -> None:
        """
        Add *value* at the tail.

        Raises:
            TypeError, ValueError: *value* does not fit its serializer (or JSON).
        """
        tx._writable(self._owner)
        tx._queue(self.name).pending.append(encode(self.value_serializer.to_json(value)))

    async def try_dequeue(self, tx: Transaction) -> ConditionalValue[V]:
        """Remove the value at the head and return it, if there is one (``TryDequeueAsync``)."""
        tx._writable(self._owner)
        q = tx._queue(self.name)
        row = await self._head(tx, q)
        if row is not None:
            q.cursor = row[0]
            q.taken.append(row[0])
            return ConditionalValue(True, self._dec(row[1]))
        if q.pending:
            # Enqueued and dequeued here: no change at all.
            return ConditionalValue(True, self._dec(q.pending.popleft()))
        return ConditionalValue(False)

    async def dequeue(self, tx: Transaction) -> V:
        """
        Remove the value at the head and return it.

        Raises:
            QueueEmpty: the queue is empty.
        """
        got = await self.try_dequeue(tx)
        if not got.has_value:
            raise QueueEmpty(f"queue {self.name!r} is empty")
        return got.value  # type: ignore[return-value]

    async def try_peek(self, tx: Transaction | SnapshotTransaction) -> ConditionalValue[V]:
        """The value at the head, without removing it, if there is one (``TryPeekAsync``)."""
        q = tx._queue(self.name)
        row = await self._head(tx, q)
        if row is not None:
            return ConditionalValue(True, self._dec(row[1]))
        if q.pending:
            return ConditionalValue(True, self._dec(q.pending[0]))
        return ConditionalValue(False)

    async def peek(self, tx: Transaction | SnapshotTransaction) -> V:
        """
        Return the value at the head without removing it.

        Raises:
            QueueEmpty: the queue is empty.
        """
        got = await self.try_peek(tx)
        if not got.has_value:
            raise QueueEmpty(f"queue {self.name!r} is empty")
        return got.value  # type: ignore[return-value]

    async def count(self, tx: Transaction | SnapshotTransaction) -> int:
        """The number of values in the queue."""
        tx._check(self._owner)
        q = tx._queue(self.name)
        committed = 0
        if not q.exhausted:
            committed = await tx.head(self._owner, queue_count, self.name, q.cursor)
        return committed + len(q.pending)

    async def values(self, tx: Transaction | SnapshotTransaction) -> AsyncIterator[V]:
        """Yield the values from head to tail, without removing them."""
        tx._check(self._owner)
        q = tx._queue(self.name)
        pending = list(q.pending)
        after = q.cursor
        while not q.exhausted:
            page = await tx.query(self._owner, queue_page, self.name, after)
            for seq, text in page:
                yield self._dec(text)
                after = seq
            if len(page) < PAGE:
                break
        for text in pending:
            yield self._dec(text)

    async def _head(
        self, tx: Transaction | SnapshotTransaction, q: QueueState
    ) -> tuple[int, str] | None:
        tx._check(self._owner)
        if q.exhausted:
            return None
        row = await tx.head(self._owner, queue_next, self.name, q.cursor)
        if row is None:
            q.exhausted = True
        return row
