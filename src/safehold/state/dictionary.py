"""
``Dictionary[K, V]``: a transactional, typed mapping; Reliable Dictionary's operations.

Service Fabric's names map to these (``docs/state.md`` has the table):
``TryGetValueAsync`` -> ``try_get``, ``ContainsKeyAsync`` -> ``contains``,
``AddAsync`` -> ``add``, ``TryAddAsync`` -> ``try_add``, ``SetAsync`` -> ``set``,
``TryUpdateAsync(key, new, comparison)`` -> ``try_update``, ``GetOrAddAsync`` ->
``get_or_add``, ``AddOrUpdateAsync`` -> ``add_or_update``, ``TryRemoveAsync`` ->
``try_remove``, ``ClearAsync`` -> ``clear``, ``GetCountAsync`` -> ``count``,
``CreateEnumerableAsync`` -> ``items`` / ``keys`` / ``values``, and the
``DictionaryChanged`` event -> ``on_change``.

Reads take a write transaction or a snapshot transaction; writes a write one.
A value is serialised when it is written, so changing the object afterwards
changes nothing, and every read returns a new object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from safehold.state._db import decode, encode
from safehold.state.errors import KeyExists
from safehold.state.events import ChangeAction, ChangeHub, DictionaryChange
from safehold.state.serializers import JsonValues, KeySerializer, Serializer, StrKeys
from safehold.state.transaction import (
    PAGE,
    ConditionalValue,
    Transaction,
    check_name,
    check_utf8,
    count_dict,
    page_dict,
)

if TYPE_CHECKING:
    from safehold.state.transaction import SnapshotTransaction

__all__ = ["Dictionary"]

K = TypeVar("K")
V = TypeVar("V")
ChangeListener = Callable[[DictionaryChange[K, V]], None]


class Dictionary(Generic[K, V]):
    """
    A transactional mapping from keys *K* to values *V*; ``store.dictionary(name, ...)``.

    Iteration (``items``, ``keys``, ``values``) is in the order of the stored key
    texts: code points for ``str``, numeric for ``int`` (see ``serializers``).
    """

    def __init__(
        self,
        owner: object,
        name: str,
        keys: KeySerializer[K],
        values: Serializer[V],
        hub: ChangeHub,
    ) -> None:
        self._owner = owner
        self.name = check_name(name)
        self.key_serializer = keys
        self.value_serializer = values
        self._hub = hub
        # The defaults (str keys, plain JSON values) skip their serializers' calls.
        self._str_keys = isinstance(keys, StrKeys) and type(keys).to_key is StrKeys.to_key
        self._json_values = type(values) is JsonValues

    def __repr__(self) -> str:
        return f"Dictionary({self.name!r})"

    # -- encoding ----------------------------------------------------------------------

    def _k(self, key: K) -> str:
        if self._str_keys and isinstance(key, str) and key.isascii():
            return key
        text = self.key_serializer.to_key(key)
        check_utf8(text)
        return text

    def _enc(self, value: V) -> str:
        if self._json_values:
            return encode(value)
        return encode(self.value_serializer.to_json(value))

    def _dec(self, text: str) -> V:
        if self._json_values:
            return cast(V, decode(text))
        return self.value_serializer.from_json(decode(text))

    # -- reads ---------------------------------------------------------------------------

    async def get(
        self, tx: Transaction | SnapshotTransaction, key: K, default: V | None = None
    ) -> V | None:
        """Return the value of *key*, or *default* when there is none."""
        text = await tx._text(self._owner, self.name, self._k(key))
        return default if text is None else self._dec(text)

    async def try_get(self, tx: Transaction | SnapshotTransaction, key: K) -> ConditionalValue[V]:
        """The value of *key*, if it has one (``TryGetValueAsync``)."""
        text = await tx._text(self._owner, self.name, self._k(key))
        return ConditionalValue(False) if text is None else ConditionalValue(True, self._dec(text))

    async def contains(self, tx: Transaction | SnapshotTransaction, key: K) -> bool:
        """Whether *key* has a value."""
        return await tx._text(self._owner, self.name, self._k(key)) is not None

    async def count(self, tx: Transaction | SnapshotTransaction) -> int:
        """The number of keys."""
        tx._check(self._owner)
        mine = {k: v for (n, k), v in tx._dict.items() if n == self.name}
        committed, present = await tx.query(self._owner, count_dict, self.name, list(mine))
        return committed + sum((v is not None) - (k in present) for k, v in mine.items())

    async def items(self, tx: Transaction | SnapshotTransaction) -> AsyncIterator[tuple[K, V]]:
        """Yield ``(key, value)`` pairs in key order, as the transaction sees them."""
        async for key, text in self._texts(tx):
            yield self.key_serializer.from_key(key), self._dec(text)

    async def keys(self, tx: Transaction | SnapshotTransaction) -> AsyncIterator[K]:
        """Yield the keys in order."""
        async for key, _ in self._texts(tx):
            yield self.key_serializer.from_key(key)

    async def values(self, tx: Transaction | SnapshotTransaction) -> AsyncIterator[V]:
        """Yield the values in key order."""
        async for _, text in self._texts(tx):
            yield self._dec(text)

    async def _texts(self, tx: Transaction | SnapshotTransaction) -> AsyncIterator[tuple[str, str]]:
        tx._check(self._owner)
        # This transaction's own writes, as they are now, merged into the committed rows.
        mine = sorted((k, v) for (n, k), v in tx._dict.items() if n == self.name)
        i = 0
        after: str | None = None
        while True:
            page = await tx.query(self._owner, page_dict, self.name, after)
            for key, text in page:
                while i < len(mine) and mine[i][0] <= key:
                    k, v = mine[i]
                    i += 1
                    if v is not None:
                        yield k, v
                if i and mine[i - 1][0] == key:
                    continue  # overwritten or deleted by this transaction
                yield key, text
            if len(page) < PAGE:
                break
            after = page[-1][0]
        for k, v in mine[i:]:
            if v is not None:
                yield k, v

    # -- writes --------------------------------------------------------------------------

    async def set(self, tx: Transaction, key: K, value: V) -> None:
        """
        Set *key* to *value* (``SetAsync``).

        Raises:
            TypeError, ValueError: the key or value does not fit its serializer (or JSON).
        """
        k = self._k(key)
        tx._writable(self._owner)
        tx._dict[(self.name, k)] = self._enc(value)

    async def add(self, tx: Transaction, key: K, value: V) -> None:
        """
        Add *key* with *value* (``AddAsync``).

        Raises:
            KeyExists: *key* already has a value.
        """
        if not await self.try_add(tx, key, value):
            raise KeyExists(f"dictionary {self.name!r} already has the key {key!r}")

    async def try_add(self, tx: Transaction, key: K, value: V) -> bool:
        """Add *key* with *value* if it has no value; return whether it was added."""
        k = self._k(key)
        tx._writable(self._owner)
        if await tx._text(self._owner, self.name, k) is not None:
            return False
        tx._dict[(self.name, k)] = self._enc(value)
        return True

    async def try_update(self, tx: Transaction, key: K, new_value: V, comparison_value: V) -> bool:
        """
        Set *key* to *new_value* if its value now equals *comparison_value*.

        Equal means the same serialised form (canonical JSON), as Service Fabric
        compares with the value type's equality. Returns whether it was updated; a
        key with no value is never updated.
        """
        k = self._k(key)
        tx._writable(self._owner)
        current = await tx._text(self._owner, self.name, k)
        if current is None or current != self._enc(comparison_value):
            return False
        tx._dict[(self.name, k)] = self._enc(new_value)
        return True

    async def get_or_add(self, tx: Transaction, key: K, value: V | Callable[[K], V]) -> V:
        """
        The value of *key*; if it has none, add *value* first and return it.

        *value* may be a function of the key (called only when the key is absent);
        to store a callable itself, wrap it in a serializer's value type.
        """
        k = self._k(key)
        tx._writable(self._owner)
        current = await tx._text(self._owner, self.name, k)
        if current is not None:
            return self._dec(current)
        new = value(key) if callable(value) else value
        text = self._enc(new)
        tx._dict[(self.name, k)] = text
        return self._dec(text)

    async def add_or_update(
        self,
        tx: Transaction,
        key: K,
        add_value: V | Callable[[K], V],
        update: Callable[[K, V], V],
    ) -> V:
        """
        Add *key* with *add_value* if absent, else set it to ``update(key, old)``; return it.

        *add_value* may be a function of the key, as in ``get_or_add``.
        """
        k = self._k(key)
        tx._writable(self._owner)
        current = await tx._text(self._owner, self.name, k)
        if current is None:
            new = add_value(key) if callable(add_value) else add_value
        else:
            new = update(key, self._dec(current))
        text = self._enc(new)
        tx._dict[(self.name, k)] = text
        return self._dec(text)

    async def delete(self, tx: Transaction, key: K) -> bool:
        """Remove *key*; return whether it had a value."""
        return bool(await self.try_remove(tx, key))

    async def try_remove(self, tx: Transaction, key: K) -> ConditionalValue[V]:
        """Remove *key*; return the value it had, if any (``TryRemoveAsync``)."""
        k = self._k(key)
        tx._writable(self._owner)
        current = await tx._text(self._owner, self.name, k)
        tx._dict[(self.name, k)] = None
        if current is None:
            return ConditionalValue(False)
        return ConditionalValue(True, self._dec(current))

    async def clear(self, tx: Transaction) -> int:
        """Remove every key (``ClearAsync``); return how many there were."""
        tx._writable(self._owner)
        keys = [k async for k, _ in self._texts(tx)]
        for k in keys:
            tx._dict[(self.name, k)] = None
        return len(keys)

    # -- notifications ---------------------------------------------------------------------

    def on_change(self, listener: ChangeListener[K, V]) -> ChangeListener[K, V]:
        """Call *listener* with every committed change; usable as a decorator (``events``)."""
        self._hub.add(self.name, self._event, listener)
        return listener

    def remove_listener(self, listener: ChangeListener[K, V]) -> None:
        """Stop calling *listener*."""
        self._hub.remove(self.name, listener)

    def _event(
        self, action: ChangeAction, key: str | None, value: str | None, lsn: int
    ) -> DictionaryChange[Any, Any]:
        return DictionaryChange(
            self.name,
            action,
            None if key is None else self.key_serializer.from_key(key),
            None if value is None else self._dec(value),
            lsn,
        )
