"""Data loss: detection on open, induced drills, the hook, automatic restore, pending losses."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold.core.snapshot import Epoch
from safehold.state import (
    BackupOption,
    DataLossMode,
    RestoreContext,
    RestorePolicy,
    StateStore,
    TransactionError,
)
from tests.state.conftest import OpenStore, dump_state
from tests.state.fakes import FakeTarget


async def _seed(open_store: OpenStore) -> dict[str, object]:
    """A store with a full and an incremental backup; return its state."""
    async with open_store() as store:
        async with store.transaction() as tx:
            await store.dictionary("d0").set(tx, "a", 1)
            await store.queue("q0").enqueue(tx, "job")
        await store.backup(BackupOption.FULL)
        async with store.transaction() as tx:
            await store.dictionary("d1").set(tx, "b", 2)
        await store.backup(BackupOption.INCREMENTAL)
        return await dump_state(store)


class Recorder:
    """A hook that restores the latest backup and remembers what it saw."""

    def __init__(self, *, restore: bool = True) -> None:
        self.calls: list[RestoreContext] = []
        self.restore = restore

    async def __call__(self, ctx: RestoreContext) -> bool:
        self.calls.append(ctx)
        if self.restore:
            await ctx.restore_latest(policy=RestorePolicy.SAFE)
        return self.restore


def _db(root: Path) -> Path:
    (db,) = root.glob("state-*.db")
    return db


@pytest.mark.parametrize(
    "damage", ["delete-db", "zero-header", "delete-current", "garble-current", "delete-everything"]
)
async def test_loss_on_open_runs_the_hook_and_restores(
    open_store: OpenStore,
    tmp_path: Path,
    damage: str,
) -> None:
    """Missing or damaged files are a loss: the hook runs on open and restores the backups."""
    state = await _seed(open_store)
    root = tmp_path / "store"
    if damage == "delete-db":
        _db(root).unlink()
    elif damage == "zero-header":
        with _db(root).open("r+b") as f:
            f.write(b"\0" * 100)
    elif damage == "delete-current":
        (root / "CURRENT").unlink()
    elif damage == "garble-current":
        (root / "CURRENT").write_text("{not json")
    else:
        for p in root.iterdir():
            if p.is_file() and p.name != "LOCK":
                p.unlink()
    hook = Recorder()
    async with open_store(on_data_loss=hook) as store:
        assert 1 == len(hook.calls)
        assert store.last_data_loss is not None
        assert store.last_data_loss.hook_ran
        assert store.last_data_loss.state_changed
        assert state == await dump_state(store)
        assert 2 == store.lsn
        assert store.epoch.data_loss_number == 1  # the loss moves it once; its restore keeps it
        assert not store.data_loss_pending


async def test_a_healthy_store_runs_no_hook(open_store: OpenStore) -> None:
    """Opening an intact store does not call the hook."""
    await _seed(open_store)
    hook = Recorder()
    async with open_store(on_data_loss=hook) as store:
        assert [] == hook.calls
        assert store.last_data_loss is None


async def test_a_brand_new_store_is_not_a_loss(open_store: OpenStore) -> None:
    """An empty directory with no backups of the partition is a new store."""
    hook = Recorder()
    async with open_store(on_data_loss=hook) as store:
        assert ([], Epoch(0, 0), 0) == (hook.calls, store.epoch, store.lsn)


async def test_the_remains_are_kept_aside(open_store: OpenStore, tmp_path: Path) -> None:
    """What a loss leaves is moved to lost/<time>/ with the reason, not deleted."""
    await _seed(open_store)
    with _db(tmp_path / "store").open("r+b") as f:
        f.write(b"\0" * 100)
    async with open_store(on_data_loss=Recorder()) as store:
        assert store.last_data_loss is not None
        lost = store.last_data_loss.lost_files
    assert lost is not None
    assert {"CURRENT", "REASON", "state-1.db"} <= {p.name for p in lost.iterdir()}
    assert "damaged" in (lost / "REASON").read_text()


async def test_a_hook_registered_after_open_runs_before_the_first_transaction(
    open_store: OpenStore,
    tmp_path: Path,
) -> None:
    """The issue's pattern: open, then @store.on_data_loss, then use the store."""
    state = await _seed(open_store)
    _db(tmp_path / "store").unlink()
    async with open_store() as store:
        assert store.data_loss_pending
        calls: list[str] = []

        @store.on_data_loss
        async def restore(ctx: RestoreContext) -> bool:
            calls.append(ctx.reason)
            await ctx.restore_latest(policy=RestorePolicy.SAFE)
            return True

        assert state == await dump_state(store)
        assert ["the database state-1.db is missing"] == calls
        assert not store.data_loss_pending


async def test_a_failing_hook_leaves_the_loss_pending_across_reopen(
    open_store: OpenStore,
    tmp_path: Path,
) -> None:
    """A hook that raises fails the open; the next open runs the hook again."""
    state = await _seed(open_store)
    _db(tmp_path / "store").unlink()

    async def broken(ctx: RestoreContext) -> bool:
        raise OSError("repository unreachable")

    with pytest.raises(OSError, match="unreachable"):
        async with open_store(on_data_loss=broken):
            pass
    hook = Recorder()
    async with open_store(on_data_loss=hook) as store:
        assert 1 == len(hook.calls)
        assert state == await dump_state(store)


async def test_auto_restore_without_a_hook(open_store: OpenStore, tmp_path: Path) -> None:
    """With auto_restore and no hook, the latest backup comes back by itself."""
    state = await _seed(open_store)
    _db(tmp_path / "store").unlink()
    async with open_store(auto_restore=True) as store:
        assert store.last_data_loss is not None
        assert store.last_data_loss.restore is not None
        assert state == await dump_state(store)


async def test_a_loss_without_hook_is_accepted_at_the_first_transaction(
    open_store: OpenStore,
    tmp_path: Path,
) -> None:
    """No hook, no auto-restore: the store starts empty in a new epoch, and says so."""
    await _seed(open_store)
    _db(tmp_path / "store").unlink()
    async with open_store() as store:
        assert store.data_loss_pending
        assert {"d:d0": [], "d:d1": [], "q:q0": []} == await dump_state(store)
        assert not store.data_loss_pending
        assert Epoch(1, 0) == store.epoch
    async with open_store() as store:
        assert not store.data_loss_pending


@pytest.mark.parametrize("mode", list(DataLossMode))
async def test_an_induced_loss_runs_the_hook(open_store: OpenStore, mode: DataLossMode) -> None:
    """induce_data_loss damages the files for real; detection and the hook do the rest."""
    hook = Recorder()
    async with open_store(on_data_loss=hook) as store:
        async with store.transaction() as tx:
            await store.dictionary("d0").set(tx, "a", 1)
        await store.backup(BackupOption.FULL)
        async with store.transaction() as tx:
            await store.dictionary("d0").set(tx, "after-backup", 2)
        report = await store.induce_data_loss(mode)
        assert (mode, True, True) == (report.mode, report.hook_ran, report.state_changed)
        assert report.restore is not None
        assert 1 == report.restore.lsn
        # Only what the backups held comes back: the transaction after the backup is lost.
        assert {"d:d0": [("a", 1)], "d:d1": [], "q:q0": []} == await dump_state(store)
        assert [mode] == [c.mode for c in hook.calls]


async def test_an_induced_loss_without_backups_leaves_an_empty_store(
    open_store: OpenStore,
) -> None:
    """With nothing to restore, auto-restore reports no change and the store is empty."""
    async with open_store(auto_restore=True) as store:
        async with store.transaction() as tx:
            await store.dictionary("d0").set(tx, "a", 1)
        report = await store.induce_data_loss()
        assert (True, False, None) == (report.hook_ran, report.state_changed, report.restore)
        assert (0, Epoch(1, 0)) == (store.lsn, store.epoch)


async def test_the_hook_may_not_start_transactions(open_store: OpenStore) -> None:
    """Inside the hook, transactions and backups are refused instead of deadlocking."""
    errors: list[Exception] = []

    async def hook(ctx: RestoreContext) -> bool:
        try:
            async with store.transaction():
                pass
        except TransactionError as exc:
            errors.append(exc)
        try:
            await store.backup()
        except TransactionError as exc:
            errors.append(exc)
        return False

    async with open_store(on_data_loss=hook) as store:
        await store.induce_data_loss()
    assert 2 == len(errors)


async def test_the_context_is_spent_after_the_hook(open_store: OpenStore) -> None:
    """Keeping the context and restoring later is refused."""
    kept: list[RestoreContext] = []

    async def hook(ctx: RestoreContext) -> bool:
        kept.append(ctx)
        return False

    async with open_store(on_data_loss=hook) as store:
        await store.induce_data_loss()
    with pytest.raises(TransactionError, match="spent"):
        await kept[0].restore_latest()


async def test_restore_from_another_source(open_store: OpenStore, tmp_path: Path) -> None:
    """The hook can restore from a copy the post-backup callback made elsewhere."""
    elsewhere = FakeTarget()

    async def copy(info) -> bool:  # type: ignore[no-untyped-def]
        with info.path.open("rb") as f:
            elsewhere.store(f, name="copy", meta=_meta_of(info))
        return True

    async with open_store(on_backup=copy) as store:
        async with store.transaction() as tx:
            await store.dictionary("d0").set(tx, "a", 1)
        await store.backup(BackupOption.FULL)

    async def hook(ctx: RestoreContext) -> bool:
        await ctx.restore_latest(source=elsewhere)
        return True

    for p in (tmp_path / "store").glob("state-*"):
        p.unlink()
    async with StateStore.open(
        tmp_path / "store", partition="p1", target=None, on_data_loss=hook, durability="normal"
    ) as store:
        assert [("a", 1)] == (await dump_state(store))["d:d0"]


def _meta_of(info):  # type: ignore[no-untyped-def]
    from safehold.core.snapshot import SnapshotMeta

    s = info.snapshot
    return SnapshotMeta(
        tags=s.tags,
        partition=s.partition,
        backup_type=s.backup_type,
        parent=s.parent,
        chain_id=s.chain_id,
        epoch=s.epoch,
        lsn=s.lsn,
        time=s.time,
    )
