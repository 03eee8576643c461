"""
``durability="full"``: a transaction returns only after an fsync of the WAL that
began after its commit; snapshots and backups see durable commits only; a failed
fsync fails the store until it is reopened.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from safehold.state import BackupOption, StateError, StateStore
from safehold.state._commit import commit_items as real_commit
from tests.state.conftest import OpenStore

GUARD = 60  # seconds: only a deadlock guard, never a measurement


class _Journal:
    """Records commits and WAL syncs, in the order they happen."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
        self.events: list[str] = []
        self.fail = fail
        real_sync = os.fdatasync

        def commit_items(*args: Any) -> Any:
            out = real_commit(*args)
            self.events.append("commit")
            return out

        def fdatasync(fd: int) -> None:
            self.events.append("sync-start")
            if self.fail:
                raise OSError(5, "Input/output error")
            real_sync(fd)
            self.events.append("synced")

        monkeypatch.setattr("safehold.state._writer.commit_items", commit_items)
        monkeypatch.setattr(os, "fdatasync", fdatasync)

    def durable_after_last_commit(self) -> bool:
        """Whether a sync began after the last commit, and ended."""
        last = len(self.events) - 1 - self.events[::-1].index("commit")
        after = self.events[last + 1 :]
        return "sync-start" in after and "synced" in after[after.index("sync-start") :]


async def test_a_transaction_returns_after_a_sync_that_began_after_its_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = _Journal(monkeypatch)
    async with StateStore.open(tmp_path / "s", partition="p") as store:
        d = store.dictionary("d")
        for i in range(5):
            async with store.transaction() as tx:
                await d.set(tx, "k", i)
                if i % 2:
                    assert await d.get(tx, "k") == i
            assert journal.durable_after_last_commit()


async def test_concurrent_transactions_share_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every transaction returns durable; commits made during a sync share the next one."""
    journal = _Journal(monkeypatch)
    async with StateStore.open(tmp_path / "s", partition="p") as store:
        d = store.dictionary("d")
        checked: list[bool] = []

        async def writer(n: int) -> None:
            for i in range(20):
                async with store.transaction() as tx:
                    await d.set(tx, f"{n}-{i}", i)
                    await d.get(tx, f"{n}-{i - 1}")
                sync = store._w().sync
                assert sync is not None
                checked.append(sync.synced >= sync.written or False)

        await asyncio.wait_for(asyncio.gather(*(writer(n) for n in range(4))), GUARD)
        async with store.snapshot() as snap:
            assert 80 == await d.count(snap)
        assert store.lsn == 80
    commits = journal.events.count("commit")
    assert 80 <= commits
    # Not a measurement: with four writers some syncs must cover several commits.
    assert journal.events.count("synced") < commits


async def test_snapshots_and_backups_wait_for_the_sync(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = _Journal(monkeypatch)
    async with open_store(durability="full") as store:
        d = store.dictionary("d")
        sync = store._w().sync
        assert sync is not None
        task = asyncio.create_task(_commit_one(store, d))
        while sync.written == 0:  # committed in SQLite, its sync maybe not landed
            await asyncio.sleep(0)
        async with store.snapshot() as snap:
            assert sync.synced >= 1
            assert 1 == snap.lsn
        await task
        async with store.transaction() as tx:
            await d.set(tx, "k2", 2)
        info = await store.backup(BackupOption.FULL)
        assert 2 == info.lsn
        assert journal.durable_after_last_commit()


async def _commit_one(store: StateStore, d: Any) -> None:
    async with store.transaction() as tx:
        await d.set(tx, "k", 1)


async def test_a_failed_sync_fails_the_store_until_it_is_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = _Journal(monkeypatch)
    path = tmp_path / "s"
    async with StateStore.open(path, partition="p") as store:
        d = store.dictionary("d")
        async with store.transaction() as tx:
            await d.set(tx, "kept", 1)
        journal.fail = True
        with pytest.raises(StateError, match="could not sync"):
            async with store.transaction() as tx:
                await d.set(tx, "unknown", 2)
        with pytest.raises(StateError, match="could not sync"):
            async with store.transaction() as tx:
                await d.set(tx, "refused", 3)
        journal.fail = False
    async with StateStore.open(path, partition="p") as store:
        d = store.dictionary("d")
        async with store.snapshot() as snap:
            assert 1 == await d.get(snap, "kept")
            assert None is await d.get(snap, "refused")
        async with store.transaction() as tx:
            await d.set(tx, "after", 4)
        assert tx.lsn is not None


async def test_after_a_large_commit_the_wal_is_checkpointed_and_rewritten_in_place(
    tmp_path: Path,
) -> None:
    """At FULL a growing WAL costs a journal write per sync: a checkpoint lets it restart."""
    async with StateStore.open(tmp_path / "s", partition="p") as store:
        d = store.dictionary("d")
        async with store.transaction() as tx:  # more rows than a checkpoint waits for
            for i in range(9000):
                await d.set(tx, f"k{i:05d}", {"v": i, "pad": "x" * 40})
        w = store._w()
        assert w._checkpointing is not None  # due at once, not after 1,024 commits
        await asyncio.wait_for(w._checkpointing, GUARD)
        wal = Path(f"{w.db_path()}-wal")
        size = wal.stat().st_size
        for i in range(40):
            async with store.transaction() as tx:
                await d.set(tx, f"k{i:05d}", {"v": -i})
        assert wal.stat().st_size <= size  # written from its beginning again
        async with store.snapshot() as snap:
            assert {"v": -39} == await d.get(snap, "k00039")
            assert 9000 == await d.count(snap)
