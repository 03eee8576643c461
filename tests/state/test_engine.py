"""The store over the real engine: backups into a repository, restores out of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.core.snapshot import Epoch
from safehold.repo import KdfParams, Repository
from safehold.state import (
    BackupInfo,
    BackupOption,
    BackupVetoed,
    DataLossMode,
    RepositoryTarget,
    RestoreContext,
    RestorePolicy,
    StateStore,
)
from safehold.storage import Storage
from safehold.storage.file import FileStorage
from safehold.storage.memory import MemoryStorage
from tests.state.conftest import dump_state

PASSWORD = "state test password"
FAST_KDF = KdfParams(n=1024)


@pytest.fixture(params=["memory", "file"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """A fresh storage of each kind, for a new repository."""
    store: Storage = (
        MemoryStorage() if request.param == "memory" else FileStorage(tmp_path / "repo")
    )
    yield store
    store.close()


@pytest.fixture
def repo(storage: Storage) -> Repository:
    """A new repository."""
    return Repository.init(storage, PASSWORD, kdf=FAST_KDF)


async def _orders(store: StateStore, start: int, n: int) -> None:
    async with store.transaction() as tx:
        for i in range(start, start + n):
            await store.dictionary("d0").set(tx, f"o-{i:05d}", {"sku": f"A{i % 7}", "qty": i})
        await store.queue("q0").enqueue(tx, {"batch": start})


async def test_chain_round_trip_through_the_engine(repo: Repository, tmp_path: Path) -> None:
    """Full and incremental backups land in the repository and restore exactly."""
    target = RepositoryTarget(repo)
    held: dict[str, dict[str, object]] = {}
    async with StateStore.open(tmp_path / "s", partition="p1", target=target) as store:
        await _orders(store, 0, 500)
        full = await store.backup(BackupOption.FULL)
        held[full.backup_id] = await dump_state(store)
        incs = []
        for start in (500, 600):
            await _orders(store, start, 100)
            incs.append(await store.backup(BackupOption.INCREMENTAL))
            held[incs[-1].backup_id] = await dump_state(store)
        snaps = {s.id: s for s in repo.snapshots()}
        assert set(held) == set(snaps)
        last = snaps[incs[-1].backup_id]
        assert ("incremental", incs[0].backup_id, full.chain_id, Epoch(0, 0), 3, "stdin") == (
            last.backup_type,
            last.parent,
            last.chain_id,
            last.epoch,
            last.lsn,
            last.source_kind,
        )
        assert last.partition is not None
        assert "p1" == last.partition.partition_id
        assert "safehold-state" in last.tags
        for backup_id, state in held.items():
            await store.restore(backup_id=backup_id, policy=RestorePolicy.FORCE)
            assert state == await dump_state(store)
    assert incs[-1].size < full.size


async def test_a_vetoed_backup_is_forgotten_from_the_repository(
    repo: Repository,
    tmp_path: Path,
) -> None:
    """The veto removes the snapshot's manifest, so listings and restores never see it."""

    async def veto(info: BackupInfo) -> bool:
        return False

    async with StateStore.open(
        tmp_path / "s", partition="p1", target=RepositoryTarget(repo)
    ) as store:
        await _orders(store, 0, 10)
        with pytest.raises(BackupVetoed):
            await store.backup(on_backup=veto)
    assert [] == repo.snapshots()


async def test_a_fire_drill_against_a_reopened_repository(storage: Storage, tmp_path: Path) -> None:
    """Back up, induce a loss, restore from a reopened repository: every backed-up order is back."""
    repo = Repository.init(storage, PASSWORD, kdf=FAST_KDF)
    async with StateStore.open(
        tmp_path / "s", partition="p1", target=RepositoryTarget(repo)
    ) as store:
        await _orders(store, 0, 300)
        await store.backup(BackupOption.FULL)
        await _orders(store, 300, 30)
        info = await store.backup(BackupOption.INCREMENTAL)
        expected = await dump_state(store)
        await _orders(store, 330, 5)  # after the last backup: lost in the drill

    reopened = Repository.open(storage, PASSWORD)

    async def hook(ctx: RestoreContext) -> bool:
        await ctx.restore_latest(policy=RestorePolicy.SAFE)
        return True

    async with StateStore.open(
        tmp_path / "s", partition="p1", target=RepositoryTarget(reopened), on_data_loss=hook
    ) as store:
        report = await store.induce_data_loss(DataLossMode.PARTIAL)
        assert report.restore is not None
        assert (info.backup_id, info.lsn) == (report.restore.backup_id, report.restore.lsn)
        assert expected == await dump_state(store)
        assert store.epoch.data_loss_number == 1  # moved once, by the loss
