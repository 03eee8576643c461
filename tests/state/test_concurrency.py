"""Group commit, snapshots, timeouts, change notifications and the state manager."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from safehold.state import (
    BackupInfo,
    BackupOption,
    ChangeAction,
    CollectionInfo,
    Dictionary,
    DictionaryChange,
    OperationTimedOut,
    RestorePolicy,
)
from tests.state.conftest import OpenStore

GUARD = 60  # seconds: only a deadlock guard, never a measurement


@pytest.mark.parametrize("durability", ["normal", "full"])
async def test_concurrent_writers_get_contiguous_lsns_and_keep_the_invariant(
    open_store: OpenStore, durability: str
) -> None:
    """Transfers between accounts from many tasks: every commit counted once, total kept."""
    async with open_store(durability=durability) as store:
        acc = store.dictionary("acc")
        async with store.transaction() as tx:
            for i in range(10):
                await acc.set(tx, f"a{i}", 100)
        lsns: list[int] = []

        async def transfers(seed: int) -> None:
            for n in range(15):
                a, b = f"a{(seed + n) % 10}", f"a{(seed * 3 + n + 1) % 10}"
                if a == b:
                    continue
                async with store.transaction() as tx:
                    va, vb = await acc.get(tx, a), await acc.get(tx, b)
                    await acc.set(tx, a, va - 1)
                    await acc.set(tx, b, vb + 1)
                assert tx.lsn is not None
                lsns.append(tx.lsn)

        await asyncio.wait_for(asyncio.gather(*(transfers(s) for s in range(6))), GUARD)
        assert sorted(lsns) == list(range(2, 2 + len(lsns)))
        assert store.lsn == 1 + len(lsns)
        async with store.snapshot() as snap:
            assert 1000 == sum([v async for v in acc.values(snap)])
            assert snap.lsn == store.lsn


async def test_a_transaction_reads_what_the_one_before_it_submitted(open_store: OpenStore) -> None:
    """The next transaction sees a commit still being made durable (the overlay)."""
    async with open_store(durability="full") as store:
        d = store.dictionary("d")
        seen: list[Any] = []

        async def first() -> None:
            async with store.transaction() as tx:
                await d.set(tx, "k", "first")

        async def second() -> None:
            async with store.transaction() as tx:
                seen.append(await d.get(tx, "k"))
                seen.append(await d.count(tx))  # waits for the first to be in SQLite

        await asyncio.wait_for(asyncio.gather(first(), second()), GUARD)
        assert ["first", 1] == seen


async def test_a_snapshot_keeps_its_state_and_blocks_no_writer(open_store: OpenStore) -> None:
    """Enumerating a snapshot while transactions commit: it sees its LSN's state only."""
    async with open_store() as store:
        d = store.dictionary("d")
        async with store.transaction() as tx:
            for i in range(600):  # more than two pages
                await d.set(tx, f"k{i:04d}", i)
        seen: list[tuple[str, Any]] = []
        async with store.snapshot() as snap:
            assert 1 == snap.lsn
            async for key, value in d.items(snap):
                if len(seen) % 200 == 0:
                    # A writer commits in the middle of the enumeration.
                    async with asyncio.timeout(GUARD), store.transaction() as tx:
                        await d.set(tx, "k0599", "changed")
                        await d.set(tx, f"new{len(seen)}", 1)
                seen.append((key, value))
            assert 600 == await d.count(snap)
            assert 599 == await d.get(snap, "k0599")
        assert [(f"k{i:04d}", i) for i in range(600)] == seen
        assert 4 == store.lsn
        async with store.snapshot() as snap:
            assert "changed" == await d.get(snap, "k0599")
            assert 603 == await d.count(snap)


async def test_a_transaction_times_out_waiting_for_the_write_lock(open_store: OpenStore) -> None:
    async with open_store() as store:
        d = store.dictionary("d")
        holding, release = asyncio.Event(), asyncio.Event()

        async def holder() -> None:
            async with store.transaction() as tx:
                await d.set(tx, "held", 1)
                holding.set()
                await release.wait()

        task = asyncio.create_task(holder())
        await holding.wait()
        with pytest.raises(OperationTimedOut) as err:
            async with store.transaction(timeout=0.01) as tx:
                await d.set(tx, "never", 1)
        assert isinstance(err.value, TimeoutError)
        assert "FABRIC_E_TIMEOUT" == err.value.code
        release.set()
        await asyncio.wait_for(task, GUARD)
        async with store.transaction(timeout=GUARD) as tx:
            assert await d.contains(tx, "held")
            assert not await d.contains(tx, "never")


async def test_change_notifications_follow_commits_in_order(open_store: OpenStore) -> None:
    async with open_store() as store:
        d: Dictionary[int, str] = store.dictionary("d", key=int, value=str)
        events: list[tuple[ChangeAction, Any, Any, int]] = []

        @d.on_change
        def listen(ev: DictionaryChange[int, str]) -> None:
            events.append((ev.action, ev.key, ev.value, ev.lsn))

        def broken(ev: DictionaryChange[int, str]) -> None:
            raise RuntimeError("a listener's bug does not break commits")

        d.on_change(broken)
        async with store.transaction() as tx:
            await d.set(tx, 1, "a")
            await d.set(tx, 2, "b")
        async with store.transaction() as tx:
            await d.set(tx, 1, "A")
            await d.delete(tx, 2)
            await d.delete(tx, 3)  # had no value: no event
        async with store.transaction() as tx:
            await store.dictionary("other").set(tx, "x", 1)  # another dictionary
        await store.backup(BackupOption.FULL)
        d.remove_listener(broken)
        await store.restore(policy=RestorePolicy.FORCE)
        assert [
            (ChangeAction.ADD, 1, "a", 1),
            (ChangeAction.ADD, 2, "b", 1),
            (ChangeAction.UPDATE, 1, "A", 2),
            (ChangeAction.REMOVE, 2, None, 2),
            (ChangeAction.REBUILD, None, None, 3),
        ] == events


async def test_the_state_manager_lists_and_finds_collections(open_store: OpenStore) -> None:
    async with open_store() as store:
        assert [] == await store.collections.list()
        async with store.transaction() as tx:
            await store.dictionary("orders").set(tx, "o", 1)
            await store.queue("jobs").enqueue(tx, "j")
            store.dictionary("empty")
        assert [
            CollectionInfo("dictionary", "orders"),
            CollectionInfo("queue", "jobs"),
        ] == await store.collections.list()
        got = await store.collections.try_get_dictionary("orders")
        assert got.has_value
        assert got.value is store.dictionary("orders")
        assert not await store.collections.try_get_dictionary("empty")
        assert (await store.collections.try_get_queue("jobs")).has_value
        assert {"orders", "jobs", "empty"} == {c.name for c in store.collections}


@pytest.mark.parametrize("durability", ["normal", "full"])
async def test_a_transaction_that_read_can_wait_for_a_backup(
    open_store: OpenStore, durability: str
) -> None:
    """
    A write transaction that has read (at NORMAL: in a read transaction on the
    writer's connection) and then waits for a backup another task takes does not
    block that backup; its reads and its commit are unchanged.
    """
    async with open_store(durability=durability) as store:
        d = store.dictionary("d")
        async with store.transaction() as tx:
            await d.set(tx, "a", 1)
        go = asyncio.Event()

        async def backup_when_told() -> BackupInfo:
            await go.wait()
            return await store.backup(BackupOption.FULL)

        task = asyncio.create_task(backup_when_told())
        async with store.transaction() as tx:
            assert 1 == await d.get(tx, "a")
            go.set()
            info = await asyncio.wait_for(task, 60)
            assert 1 == await d.get(tx, "a")
            await d.set(tx, "a", 2)
        assert (1, 2) == (info.lsn, tx.lsn)
        async with store.snapshot() as snap:
            assert 2 == await d.get(snap, "a")


@pytest.mark.parametrize("durability", ["normal", "full"])
async def test_a_cancelled_caller_does_not_cancel_its_commit(
    open_store: OpenStore, durability: str
) -> None:
    """Cancelling a task that waits for its commit leaves the commit to finish."""
    async with open_store(durability=durability) as store:
        d = store.dictionary("d")
        for attempt in range(20):
            submitted = asyncio.Event()

            async def write(value: int, ready: asyncio.Event) -> None:
                async with store.transaction() as tx:
                    await d.set(tx, "k", value)
                    ready.set()  # the block exits at once: then it waits for its commit

            task = asyncio.create_task(write(attempt, submitted))
            await submitted.wait()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            async with store.transaction() as tx:  # its group lands after the cancelled one's
                await d.set(tx, "after", attempt)
            assert 2 * (attempt + 1) == store.lsn  # both committed, each once
            async with store.snapshot() as snap:  # durable commits only
                assert attempt == await d.get(snap, "k")
