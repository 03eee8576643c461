"""The store itself: transactions, dictionaries, queues, LSNs, durability, locking."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from safehold.core.snapshot import Epoch
from safehold.state import (
    BackupOption,
    QueueEmpty,
    StateStore,
    StoreClosed,
    StoreLocked,
    TransactionError,
)
from tests.state.conftest import OpenStore


async def test_set_get_delete_contains(open_store: OpenStore) -> None:
    """A dictionary stores, returns and removes JSON values by key."""
    async with open_store() as store:
        d = store.dictionary("orders")
        async with store.transaction() as tx:
            assert await d.get(tx, "o-1") is None
            assert "dflt" == await d.get(tx, "o-1", "dflt")
            await d.set(tx, "o-1", {"sku": "A7", "qty": 2})
            assert {"sku": "A7", "qty": 2} == await d.get(tx, "o-1")
            assert await d.contains(tx, "o-1")
        async with store.transaction() as tx:
            assert {"sku": "A7", "qty": 2} == await d.get(tx, "o-1")
            assert await d.delete(tx, "o-1") is True
            assert await d.delete(tx, "o-1") is False
            assert not await d.contains(tx, "o-1")
        async with store.transaction() as tx:
            assert await d.get(tx, "o-1") is None


async def test_values_are_copied_when_written_and_read(open_store: OpenStore) -> None:
    """Changing an object after set, or the object get returned, changes nothing stored."""
    async with open_store() as store:
        d = store.dictionary("d")
        value = {"items": [1, 2]}
        async with store.transaction() as tx:
            await d.set(tx, "k", value)
            value["items"].append(3)
            got = await d.get(tx, "k")
            got["items"].append(4)
            assert {"items": [1, 2]} == await d.get(tx, "k")


async def test_count_and_items_merge_own_writes(open_store: OpenStore) -> None:
    """count and items see the committed keys plus this transaction's writes, in key order."""
    async with open_store() as store:
        d = store.dictionary("d")
        async with store.transaction() as tx:
            for k in ("b", "d", "f"):
                await d.set(tx, k, k.upper())
        async with store.transaction() as tx:
            await d.set(tx, "a", 1)  # new, before all
            await d.set(tx, "d", 2)  # overwrite
            await d.delete(tx, "f")  # delete committed
            await d.set(tx, "z", 3)  # new, after all
            await d.delete(tx, "nope")  # delete missing
            assert 4 == await d.count(tx)
            assert [("a", 1), ("b", "B"), ("d", 2), ("z", 3)] == [kv async for kv in d.items(tx)]
            assert ["a", "b", "d", "z"] == [k async for k in d.keys(tx)]


async def test_items_pages_through_large_dictionaries(open_store: OpenStore) -> None:
    """Iteration crosses page boundaries without losing or repeating keys."""
    async with open_store() as store:
        d = store.dictionary("d")
        async with store.transaction() as tx:
            for i in range(700):
                await d.set(tx, f"k{i:04d}", i)
        async with store.transaction() as tx:
            await d.set(tx, "k0256x", "mine")
            await d.delete(tx, "k0512")
            got = [kv async for kv in d.items(tx)]
        expected = sorted([(f"k{i:04d}", i) for i in range(700) if i != 512] + [("k0256x", "mine")])
        assert expected == got


async def test_dictionaries_are_separate(open_store: OpenStore) -> None:
    """The same key in two dictionaries holds two values; a queue may share a name."""
    async with open_store() as store:
        a, b = store.dictionary("x"), store.dictionary("y")
        async with store.transaction() as tx:
            await a.set(tx, "k", 1)
            await b.set(tx, "k", 2)
            await store.queue("x").enqueue(tx, 3)
        async with store.transaction() as tx:
            assert (1, 2) == (await a.get(tx, "k"), await b.get(tx, "k"))
            assert 1 == await a.count(tx)


async def test_queue_is_fifo_across_transactions(open_store: OpenStore) -> None:
    """Values come out in the order they went in, whichever transaction added them."""
    async with open_store() as store:
        q = store.queue("jobs")
        async with store.transaction() as tx:
            await q.enqueue(tx, "a")
            await q.enqueue(tx, "b")
        async with store.transaction() as tx:
            await q.enqueue(tx, "c")
            assert "a" == await q.peek(tx)
            assert "a" == await q.dequeue(tx)
            assert 2 == await q.count(tx)
            assert ["b", "c"] == [v async for v in q.values(tx)]
        async with store.transaction() as tx:
            assert ["b", "c"] == [await q.dequeue(tx), await q.dequeue(tx)]
            with pytest.raises(QueueEmpty):
                await q.dequeue(tx)
            with pytest.raises(QueueEmpty):
                await q.peek(tx)
            await q.enqueue(tx, "d")
            assert "d" == await q.peek(tx)
        async with store.transaction() as tx:
            assert 1 == await q.count(tx)
            assert "d" == await q.dequeue(tx)


async def test_queue_enqueue_then_dequeue_in_one_transaction_changes_nothing(
    open_store: OpenStore,
) -> None:
    """A value enqueued and dequeued by the same transaction leaves no trace and no LSN."""
    async with open_store() as store:
        q = store.queue("q")
        async with store.transaction() as tx:
            await q.enqueue(tx, 1)
            assert 1 == await q.dequeue(tx)
        assert tx.lsn is None
        assert 0 == store.lsn


async def test_queue_seqs_stay_ordered_after_emptying(open_store: OpenStore) -> None:
    """After a queue is emptied and refilled, order still follows enqueue order."""
    async with open_store() as store:
        q = store.queue("q")
        for round_ in range(3):
            async with store.transaction() as tx:
                for i in range(3):
                    await q.enqueue(tx, (round_, i))
            async with store.transaction() as tx:
                assert [[round_, i] for i in range(3)] == [await q.dequeue(tx) for _ in range(3)]


async def test_each_commit_takes_the_next_lsn(open_store: OpenStore) -> None:
    """LSNs count committed transactions that changed something; reads take none."""
    async with open_store() as store:
        d = store.dictionary("d")
        lsns = []
        for i in range(3):
            async with store.transaction() as tx:
                await d.set(tx, "k", i)
            lsns.append(tx.lsn)
        async with store.transaction() as tx:
            await d.get(tx, "k")
        assert [1, 2, 3] == lsns
        assert tx.lsn is None
        assert 3 == store.lsn
        assert Epoch(0, 0) == store.epoch


async def test_an_error_aborts_the_transaction(open_store: OpenStore) -> None:
    """An exception in the block discards every change and takes no LSN."""
    async with open_store() as store:
        d = store.dictionary("d")

        async def failing() -> None:
            async with store.transaction() as tx:
                await d.set(tx, "k", 1)
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            await failing()
        async with store.transaction() as tx:
            await d.set(tx, "other", 1)
            tx.abort()
        async with store.transaction() as tx:
            assert await d.get(tx, "k") is None
            assert await d.get(tx, "other") is None
        assert 0 == store.lsn


async def test_misuse_raises_transaction_error(open_store: OpenStore) -> None:
    """Nesting, using an ended or aborted transaction, or another store's, are refused."""
    async with open_store() as store, open_store("other", partition="p2") as other:
        d = store.dictionary("d")
        async with store.transaction() as tx:
            with pytest.raises(TransactionError):
                async with store.transaction():
                    pass
            with pytest.raises(TransactionError):
                await other.dictionary("d").get(tx, "k")
            async with other.transaction() as tx2:  # another store's transaction may nest
                await other.dictionary("d").set(tx2, "k", 1)
        with pytest.raises(TransactionError):
            await d.get(tx, "k")
        async with store.transaction() as tx:
            tx.abort()
            with pytest.raises(TransactionError):
                await d.set(tx, "k", 1)


async def test_bad_keys_values_and_names_are_refused(open_store: OpenStore) -> None:
    """Non-string keys, non-JSON values and bad names fail at the call, not at commit."""
    async with open_store() as store:
        d = store.dictionary("d")
        async with store.transaction() as tx:
            with pytest.raises(TypeError):
                await d.set(tx, 1, "x")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await d.set(tx, "k", object())
            with pytest.raises(ValueError, match="Out of range"):
                await d.set(tx, "k", float("nan"))
            with pytest.raises(UnicodeEncodeError):
                await d.set(tx, "\ud800", 1)
            await d.set(tx, "ключ", "значение \ud83d")  # a lone surrogate in a value is escaped
        async with store.transaction() as tx:
            assert "значение \ud83d" == await d.get(tx, "ключ")
        with pytest.raises(ValueError, match="1 to"):
            store.dictionary("")


async def test_transactions_run_one_at_a_time(open_store: OpenStore) -> None:
    """Concurrent read-modify-write transactions never lose an update."""
    async with open_store() as store:
        d = store.dictionary("counter")

        async def bump() -> None:
            async with store.transaction() as tx:
                n = await d.get(tx, "n", 0)
                await asyncio.sleep(0)  # let the others try to interleave
                await d.set(tx, "n", n + 1)

        await asyncio.gather(*(bump() for _ in range(50)))
        async with store.transaction() as tx:
            assert 50 == await d.get(tx, "n")
        assert 50 == store.lsn


async def test_committed_state_survives_reopening(open_store: OpenStore) -> None:
    """Closing and opening again keeps every committed transaction, its LSN and its epoch."""
    async with open_store() as store, store.transaction() as tx:
        await store.dictionary("d").set(tx, "k", [1, "two"])
        await store.queue("q").enqueue(tx, {"x": 1})
    async with open_store() as store:
        assert 1 == store.lsn
        async with store.transaction() as tx:
            assert [1, "two"] == await store.dictionary("d").get(tx, "k")
            assert {"x": 1} == await store.queue("q").dequeue(tx)


async def test_the_lsn_and_tail_survive_reopening_and_log_truncation(
    open_store: OpenStore,
) -> None:
    """
    The last LSN and its commit time are the same after reopening, even with the log
    truncated up to them; snapshots and the next commit start from there.
    """
    async with open_store() as store:
        d = store.dictionary("d")
        for i in range(5):
            async with store.transaction() as tx:
                await d.set(tx, f"k{i}", i)
        tail = store.meta.tail_time
        async with store.snapshot() as snap:
            assert 5 == snap.lsn
    async with open_store() as store:
        assert (5, tail) == (store.lsn, store.meta.tail_time)
        assert 5 == await store.truncate_log(5)
    async with open_store() as store:
        assert (5, tail, 5) == (store.lsn, store.meta.tail_time, store.meta.log_floor)
        async with store.snapshot() as snap:
            assert 5 == snap.lsn
        async with store.transaction() as tx:
            await store.dictionary("d").set(tx, "k5", 5)
        assert 6 == tx.lsn
    async with open_store() as store:
        assert 6 == store.lsn
        async with store.transaction() as tx:
            assert 5 == await store.dictionary("d").get(tx, "k5")


async def test_the_lsn_survives_a_backup_that_empties_the_log(open_store: OpenStore) -> None:
    """An accepted backup drops the log up to it; reopening still finds the last LSN."""
    async with open_store() as store:
        for i in range(3):
            async with store.transaction() as tx:
                await store.dictionary("d").set(tx, "k", i)
        tail = store.meta.tail_time
        info = await store.backup(BackupOption.FULL)
        assert (3, 3) == (info.lsn, store.meta.log_floor)
    async with open_store() as store:
        assert (3, tail) == (store.lsn, store.meta.tail_time)
        async with store.transaction() as tx:
            await store.dictionary("d").set(tx, "k", 3)
        assert 4 == tx.lsn
        assert 4 == (await store.backup(BackupOption.INCREMENTAL)).lsn


async def test_a_second_opener_is_refused(open_store: OpenStore, tmp_path: Path) -> None:
    """Two stores on one directory would break LSNs: the second is refused."""
    async with open_store():
        with pytest.raises(StoreLocked):
            await StateStore.open(tmp_path / "store", partition="p1")


async def test_opening_another_partitions_directory_is_refused(open_store: OpenStore) -> None:
    """A directory holding partition p1 is not silently reused for p2."""
    async with open_store():
        pass
    with pytest.raises(Exception, match="holds the state of partition p1"):
        async with open_store(partition="p2"):
            pass


async def test_a_closed_store_refuses_work(open_store: OpenStore) -> None:
    """After close, transactions raise StoreClosed; close is idempotent."""
    async with open_store() as store:
        pass
    await store.close()
    with pytest.raises(StoreClosed):
        async with store.transaction():
            pass


async def test_full_durability_is_the_default(tmp_path: Path) -> None:
    """Commits wait for the WAL's fsync unless asked otherwise (``test_durable.py``)."""
    async with StateStore.open(tmp_path / "s", partition="p1") as store:
        mode = await store._w().run(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
        assert ("full", "wal") == (store._w().durability, mode)
        assert store._w().sync is not None
