"""Reliable Collections' operations, and typed collections with their serializers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel

from safehold.core.errors import UsageError
from safehold.state import (
    BytesValues,
    ConditionalValue,
    KeyExists,
    QueueEmpty,
    TransactionError,
)
from safehold.state.serializers import IntKeys
from tests.state.conftest import OpenStore


async def test_try_add_adds_only_absent_keys(open_store: OpenStore) -> None:
    async with open_store() as store:
        d = store.dictionary("d")
        async with store.transaction() as tx:
            assert await d.try_add(tx, "k", 1)
            assert not await d.try_add(tx, "k", 2)
            with pytest.raises(KeyExists):
                await d.add(tx, "k", 3)
        async with store.transaction() as tx:
            assert not await d.try_add(tx, "k", 4)
            assert 1 == await d.get(tx, "k")
            await d.delete(tx, "k")
            assert await d.try_add(tx, "k", 5)  # removed in this transaction: absent again
        async with store.snapshot() as snap:
            assert 5 == await d.get(snap, "k")


async def test_try_update_compares_with_the_current_value(open_store: OpenStore) -> None:
    async with open_store() as store:
        d = store.dictionary("d")
        async with store.transaction() as tx:
            assert not await d.try_update(tx, "k", 1, None)  # no value: never updated
            await d.set(tx, "k", {"b": 1, "a": [1]})
        async with store.transaction() as tx:
            assert not await d.try_update(tx, "k", {"n": 2}, {"a": [1]})
            # The order of keys is no matter: values compare in canonical JSON.
            assert await d.try_update(tx, "k", {"n": 2}, {"a": [1], "b": 1})
            assert not await d.try_update(tx, "k", {"n": 3}, {"a": [1], "b": 1})
        async with store.snapshot() as snap:
            assert {"n": 2} == await d.get(snap, "k")


async def test_get_or_add_and_add_or_update(open_store: OpenStore) -> None:
    async with open_store() as store:
        d = store.dictionary("counts")
        calls: list[str] = []

        def make(key: str) -> int:
            calls.append(key)
            return 10

        async with store.transaction() as tx:
            assert 10 == await d.get_or_add(tx, "a", make)
            assert 10 == await d.get_or_add(tx, "a", make)
            assert 7 == await d.get_or_add(tx, "b", 7)
            assert 1 == await d.add_or_update(tx, "c", 1, lambda k, v: v + 1)
            assert 2 == await d.add_or_update(tx, "c", 1, lambda k, v: v + 1)
            assert 11 == await d.add_or_update(tx, "a", 0, lambda k, v: v + 1)
        assert ["a"] == calls
        async with store.snapshot() as snap:
            assert [("a", 11), ("b", 7), ("c", 2)] == [kv async for kv in d.items(snap)]


async def test_try_remove_and_try_get_return_conditional_values(open_store: OpenStore) -> None:
    async with open_store() as store:
        d = store.dictionary("d")
        async with store.transaction() as tx:
            await d.set(tx, "k", None)  # a stored None is a value
            got = await d.try_get(tx, "k")
            assert (True, None) == (got.has_value, got.value)
            assert bool(got)
            assert ConditionalValue(False) == await d.try_get(tx, "other")
        async with store.transaction() as tx:
            assert ConditionalValue(True, None) == await d.try_remove(tx, "k")
            assert not await d.try_remove(tx, "k")
        async with store.transaction() as tx:
            await d.set(tx, "x", 1)
            await d.set(tx, "y", 2)
        async with store.transaction() as tx:
            assert 2 == await d.clear(tx)
            assert 0 == await d.count(tx)
        async with store.snapshot() as snap:
            assert 0 == await d.count(snap)


async def test_queue_try_dequeue_and_try_peek(open_store: OpenStore) -> None:
    async with open_store() as store:
        q = store.queue("jobs")
        async with store.transaction() as tx:
            assert ConditionalValue(False) == await q.try_dequeue(tx)
            assert ConditionalValue(False) == await q.try_peek(tx)
            await q.enqueue(tx, "a")
            await q.enqueue(tx, "b")
        async with store.transaction() as tx:
            assert ConditionalValue(True, "a") == await q.try_peek(tx)
            assert ConditionalValue(True, "a") == await q.try_dequeue(tx)
            assert "b" == await q.dequeue(tx)
            assert not await q.try_dequeue(tx)
            with pytest.raises(QueueEmpty):
                await q.dequeue(tx)
        async with store.snapshot() as snap:
            assert 0 == await q.count(snap)


async def test_a_snapshot_cannot_write(open_store: OpenStore) -> None:
    async with open_store() as store:
        d, q = store.dictionary("d"), store.queue("q")
        async with store.snapshot() as snap:
            with pytest.raises(TransactionError):
                await d.set(snap, "k", 1)
            with pytest.raises(TransactionError):
                await d.try_add(snap, "k", 1)
            with pytest.raises(TransactionError):
                await q.try_dequeue(snap)
        with pytest.raises(TransactionError):
            await d.get(snap, "k")  # ended


@dataclass
class Address:
    city: str
    zip: str


@dataclass
class Customer:
    name: str
    address: Address
    tags: list[str] = field(default_factory=list)


class Invoice(BaseModel):
    number: int
    lines: list[str]


async def test_typed_collections_round_trip_through_their_serializers(
    open_store: OpenStore,
) -> None:
    """Dataclasses (nested too), pydantic models, bytes and str values; int, bytes, UUID keys."""
    uid = uuid.UUID(int=5)
    async with open_store() as store:
        customers = store.dictionary("customers", value=Customer)
        invoices = store.dictionary("invoices", key=int, value=Invoice)
        blobs = store.dictionary("blobs", key=bytes, value=bytes)
        names = store.dictionary("names", key=uuid.UUID, value=str)
        async with store.transaction() as tx:
            await customers.set(tx, "c1", Customer("Ann", Address("Oslo", "0150"), ["vip"]))
            for n in (10, -3, 2):
                await invoices.set(tx, n, Invoice(number=n, lines=["x"]))
            await blobs.set(tx, b"\x00\xff", b"\x01\x02")
            await names.set(tx, uid, "five")
            with pytest.raises(TypeError):
                await customers.set(tx, "c2", {"name": "not a Customer"})
            with pytest.raises(TypeError):
                await invoices.set(tx, "1", Invoice(number=1, lines=[]))
        async with store.snapshot() as snap:
            got = await customers.get(snap, "c1")
            assert got == Customer("Ann", Address("Oslo", "0150"), ["vip"])
            assert isinstance(got.address, Address)
            assert [-3, 2, 10] == [k async for k in invoices.keys(snap)]  # numeric order
            assert Invoice(number=2, lines=["x"]) == await invoices.get(snap, 2)
            assert b"\x01\x02" == await blobs.get(snap, b"\x00\xff")
            assert "five" == await names.get(snap, uid)
        # The storage format is plain JSON text: what the log and backups carry.
        raw = store.dictionary("raw-view-of-customers")
        async with store.transaction() as tx:
            await raw.set(tx, "c", {"city": "Oslo", "zip": "0150"})
        async with store.snapshot() as snap:
            assert {"city": "Oslo", "zip": "0150"} == await raw.get(snap, "c")


async def test_a_name_keeps_the_types_of_its_first_use(open_store: OpenStore) -> None:
    async with open_store() as store:
        d = store.dictionary("d", key=int, value=bytes)
        assert d is store.dictionary("d")
        assert d is store.dictionary("d", key=int, value=bytes)
        with pytest.raises(UsageError):
            store.dictionary("d", value=str)
        q = store.queue("q", value=BytesValues())
        assert q is store.queue("q")
        with pytest.raises(UsageError):
            store.queue("q", value=str)


def test_int_keys_sort_in_numeric_order_and_refuse_what_does_not_fit() -> None:
    keys = IntKeys()
    values = [-(2**63), -5, -1, 0, 1, 9, 10, 2**63 - 1]
    assert sorted(values, key=keys.to_key) == values
    assert [keys.from_key(keys.to_key(v)) for v in values] == values
    for bad in (2**63, True, 1.5):
        with pytest.raises((TypeError, ValueError)):
            keys.to_key(bad)  # type: ignore[arg-type]


def test_unknown_types_need_a_serializer(open_store: OpenStore) -> None:
    class Opaque:
        pass

    async def run() -> Any:
        async with open_store() as store:
            with pytest.raises(TypeError):
                store.dictionary("d", value=Opaque)
            with pytest.raises(TypeError):
                store.dictionary("e", key=float)

    import asyncio

    asyncio.run(run())
