"""
The state manager: a store's collections by name (Service Fabric's ``IReliableStateManager``).

``store.dictionary(name, key=..., value=...)`` and ``store.queue(name, value=...)``
are ``GetOrAddAsync``: they return the collection, whose types are fixed by the
first call that names them in this process (a later call with other types is a
``UsageError``; one with none gets the registered types). ``store.collections``
answers the rest::

    names = await store.collections.list()      # [CollectionInfo("dictionary", "orders")]
    got = await store.collections.try_get_dictionary("orders")   # ConditionalValue
    if got:
        orders = got.value

A collection exists in the state once it holds something: a dictionary with a
key, a queue with a value. ``list`` reads the committed state (a snapshot), so a
collection created in a transaction that has not committed is not listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from safehold.core.errors import UsageError
from safehold.state.dictionary import Dictionary
from safehold.state.events import ChangeHub
from safehold.state.queues import Queue
from safehold.state.serializers import key_serializer, value_serializer
from safehold.state.transaction import ConditionalValue, SnapshotTransaction

__all__ = ["CollectionInfo", "StateManager"]


@dataclass(frozen=True, order=True)
class CollectionInfo:
    """A collection of the state: its kind and name."""

    kind: Literal["dictionary", "queue"]
    name: str


SnapshotOpener = Callable[[], Any]  # store.snapshot: an async context manager


class StateManager:
    """A store's collections: the typed ones made in this process, and those in the state."""

    def __init__(self, owner: object, hub: ChangeHub, snapshot: SnapshotOpener) -> None:
        self._owner = owner
        self._hub = hub
        self._snapshot = snapshot
        self._dicts: dict[str, tuple[object, object, Dictionary[Any, Any]]] = {}
        self._queues: dict[str, tuple[object, Queue[Any]]] = {}

    def dictionary(
        self, name: str, key: object = None, value: object = None
    ) -> Dictionary[Any, Any]:
        """The dictionary *name*, with the types of its first use (see the module doc)."""
        found = self._dicts.get(name)
        if found is not None:
            k, v, d = found
            if (key is not None and key != k) or (value is not None and value != v):
                raise UsageError(f"dictionary {name!r} is already used with key={k!r}, value={v!r}")
            return d
        d = Dictionary(self._owner, name, key_serializer(key), value_serializer(value), self._hub)
        self._dicts[name] = (key, value, d)
        return d

    def queue(self, name: str, value: object = None) -> Queue[Any]:
        """The queue *name*, with the value type of its first use."""
        found = self._queues.get(name)
        if found is not None:
            v, q = found
            if value is not None and value != v:
                raise UsageError(f"queue {name!r} is already used with value={v!r}")
            return q
        q = Queue(self._owner, name, value_serializer(value))
        self._queues[name] = (value, q)
        return q

    async def list(self) -> list[CollectionInfo]:
        """Every collection that holds something in the committed state, by kind and name."""
        async with self._snapshot() as snap:
            assert isinstance(snap, SnapshotTransaction)
            return await snap.query(self._owner, _names)

    async def try_get_dictionary(self, name: str) -> ConditionalValue[Dictionary[Any, Any]]:
        """The dictionary *name* if the state has it (``TryGetAsync``)."""
        if CollectionInfo("dictionary", name) in await self.list():
            return ConditionalValue(True, self.dictionary(name))
        return ConditionalValue(False)

    async def try_get_queue(self, name: str) -> ConditionalValue[Queue[Any]]:
        """The queue *name* if the state has it."""
        if CollectionInfo("queue", name) in await self.list():
            return ConditionalValue(True, self.queue(name))
        return ConditionalValue(False)

    def __iter__(self) -> Iterator[Dictionary[Any, Any] | Queue[Any]]:
        """The collections made in this process (``list`` asks the state)."""
        yield from (d for _, _, d in self._dicts.values())
        yield from (q for _, q in self._queues.values())


def _names(conn: Any) -> list[CollectionInfo]:
    dicts = conn.execute("SELECT DISTINCT name FROM dict ORDER BY name").fetchall()
    queues = conn.execute("SELECT DISTINCT name FROM queue ORDER BY name").fetchall()
    return [CollectionInfo("dictionary", str(n)) for (n,) in dicts] + [
        CollectionInfo("queue", str(n)) for (n,) in queues
    ]
