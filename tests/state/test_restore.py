"""Restores: choosing the chain, merging it, the SAFE and FORCE policies, damaged backups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from safehold.core.snapshot import Epoch, PartitionRef, Snapshot
from safehold.state import (
    BackupOption,
    InvalidBackup,
    InvalidBackupChain,
    NoBackupFound,
    RestorePolicy,
    RestoreSafetyCheckFailed,
)
from safehold.state.restore import partition_backups, plan_restore
from tests.state.conftest import OpenStore, dump_state
from tests.state.fakes import FakeTarget

FULL, INCR = BackupOption.FULL, BackupOption.INCREMENTAL
T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
E0 = Epoch()


def snap(
    sid: str,
    kind: str,
    lsn: int,
    minute: int,
    *,
    parent: str | None = None,
    chain: str = "c1",
    epoch: Epoch = E0,
    partition: str = "p1",
) -> Snapshot:
    """A manifest as the store would write it."""
    return Snapshot(
        id=sid,
        time=T0 + timedelta(minutes=minute),
        host="h",
        user="u",
        paths=("x",),
        tree="",
        source_kind="stdin",
        tags=("safehold-state",),
        partition=PartitionRef(partition_id=partition),
        backup_type=kind,  # type: ignore[arg-type]
        parent=parent,
        chain_id=chain,
        epoch=epoch,
        lsn=lsn,
    )


# Two chains in epoch 0, then a restore moved the epoch and a third chain began.
F1 = snap("f1", "full", 10, 0)
I1 = snap("i1", "incremental", 20, 10, parent="f1")
I2 = snap("i2", "incremental", 30, 20, parent="i1")
F2 = snap("f2", "full", 35, 25, chain="c2")
I3 = snap("i3", "incremental", 50, 30, parent="f2", chain="c2")
F3 = snap("f3", "full", 5, 40, chain="c3", epoch=Epoch(1, 0))
ALL = [F1, I1, I2, F2, I3, F3]


def ids(plan_chain: tuple[Snapshot, ...]) -> list[str]:
    return [s.id for s in plan_chain]


def test_partition_backups_keeps_this_partitions_state_backups() -> None:
    """Other partitions' backups and snapshots that are not state backups are ignored."""
    other = snap("o1", "full", 1, 1, partition="p2")
    plain = Snapshot(id="x", time=T0, host="h", user="u", paths=(), tree="")
    assert ["f1", "i1"] == [s.id for s in partition_backups([I1, other, plain, F1], "p1")]


def test_plan_by_id_walks_the_parents_back_to_the_full_backup() -> None:
    """Restoring i2 merges f1, i1, i2; an id prefix is enough."""
    assert ["f1", "i1", "i2"] == ids(plan_restore(ALL, backup_id="i2").chain)
    assert ["f2"] == ids(plan_restore(ALL, backup_id="f2").chain)


def test_plan_latest_is_the_newest_intact_chain() -> None:
    """Without a point, the newest backup's chain; a broken newest chain is passed over."""
    assert ["f3"] == ids(plan_restore(ALL).chain)
    orphan = snap("i9", "incremental", 60, 50, parent="gone", chain="c2")
    plan = plan_restore([*ALL, orphan])
    assert ["f3"] == ids(plan.chain)
    assert any("parent gone" in w for w in plan.warnings)


def test_plan_by_id_with_a_broken_chain_is_refused() -> None:
    """A missing parent, mixed chains or a falling LSN break a chain."""
    with pytest.raises(InvalidBackupChain, match="parent f1 of i1 is missing"):
        plan_restore([I1, I2], backup_id="i2")
    mixed = snap("i4", "incremental", 40, 21, parent="i2", chain="other")
    with pytest.raises(InvalidBackupChain, match="different chains"):
        plan_restore([*ALL, mixed], backup_id="i4")
    back = snap("i5", "incremental", 25, 21, parent="i2")
    with pytest.raises(InvalidBackupChain, match="lower LSN"):
        plan_restore([*ALL, back], backup_id="i5")


def test_plan_by_lsn_takes_the_highest_epoch_then_the_shortest_chain() -> None:
    """An LSN is looked for in the newest epoch first; pass epoch= for an older one."""
    plan = plan_restore(ALL, lsn=7)
    assert (["f3"], 7) == (ids(plan.chain), plan.stop_lsn)
    plan = plan_restore(ALL, lsn=25, epoch=Epoch(0, 0))
    assert ["f1", "i1", "i2"] == ids(plan.chain)
    assert 25 == plan.max_lsn
    plan = plan_restore(ALL, lsn=40, epoch=Epoch(0, 0))  # f2's chain reaches 40 in two steps
    assert ["f2", "i3"] == ids(plan.chain)
    plan = plan_restore(ALL, lsn=35, epoch=Epoch(0, 0))  # f2 holds 35 itself
    assert ["f2"] == ids(plan.chain)


def test_plan_by_lsn_before_every_full_backup_finds_nothing() -> None:
    """No chain starts at or before the LSN: NoBackupFound."""
    with pytest.raises(NoBackupFound, match="at or before LSN 3"):
        plan_restore(ALL, lsn=3)


def test_plan_by_time_prefers_a_chain_that_goes_past_the_time() -> None:
    """A chain with a backup after the time restores it exactly."""
    plan = plan_restore(ALL, time=T0 + timedelta(minutes=15))
    assert ["f1", "i1", "i2"] == ids(plan.chain)
    assert T0 + timedelta(minutes=15) == plan.stop_time
    plan = plan_restore(ALL, time=T0 + timedelta(minutes=27))
    assert ["f2", "i3"] == ids(plan.chain)


def test_plan_by_time_tries_the_next_full_backup_when_no_chain_goes_past() -> None:
    """Between chains, the next full backup holds the state if nothing committed in between."""
    plan = plan_restore(ALL, time=T0 + timedelta(minutes=22))
    assert ["f1", "i1", "i2"] == ids(plan.chain)
    assert plan.alternative is not None
    assert (["f2"], True) == (ids(plan.alternative.chain), plan.alternative.conditional)
    plan = plan_restore(ALL, time=T0 - timedelta(minutes=1))
    assert (["f1"], True, None) == (ids(plan.chain), plan.conditional, plan.alternative)
    plan = plan_restore([F1, I1], time=T0 + timedelta(minutes=30))  # after every backup
    assert (["f1", "i1"], None) == (ids(plan.chain), plan.alternative)


def test_plan_takes_one_point_only() -> None:
    """backup_id, lsn and time exclude each other."""
    with pytest.raises(ValueError, match="at most one"):
        plan_restore(ALL, backup_id="f1", lsn=3)


def test_plan_without_backups_finds_nothing() -> None:
    """An empty repository: NoBackupFound."""
    with pytest.raises(NoBackupFound):
        plan_restore([])


async def _commit(store, key: str, value: object) -> None:  # type: ignore[no-untyped-def]
    async with store.transaction() as tx:
        await store.dictionary("d0").set(tx, key, value)


async def test_restore_to_a_backup_an_lsn_and_a_time(open_store: OpenStore) -> None:
    """Each kind of point restores exactly the state at it."""
    async with open_store() as store:
        states = {}
        for i in range(1, 4):
            await _commit(store, f"k{i}", i)
            states[store.lsn] = await dump_state(store)
        full = await store.backup(FULL)
        for i in range(4, 8):
            await _commit(store, f"k{i}", i)
            states[store.lsn] = await dump_state(store)
        mid_time = store.meta.tail_time
        for i in range(8, 10):
            await _commit(store, f"k{i}", i)
            states[store.lsn] = await dump_state(store)
        inc = await store.backup(INCR)
        result = await store.restore(backup_id=full.backup_id, policy=RestorePolicy.FORCE)
        assert (3, (full.backup_id,)) == (result.lsn, result.chain)
        assert states[3] == await dump_state(store)
        result = await store.restore(lsn=5, policy=RestorePolicy.FORCE)
        assert 5 == result.lsn
        assert states[5] == await dump_state(store)
        assert mid_time is not None
        result = await store.restore(
            time=datetime.fromisoformat(mid_time), policy=RestorePolicy.FORCE
        )
        assert 7 == result.lsn
        assert states[7] == await dump_state(store)
        result = await store.restore(policy=RestorePolicy.FORCE)
        assert (9, inc.backup_id) == (result.lsn, result.backup_id)
        assert states[9] == await dump_state(store)


async def test_restore_moves_the_data_loss_number_and_continues_lsns(open_store: OpenStore) -> None:
    """After a restore: a higher data-loss number; new commits follow the restored LSN."""
    async with open_store() as store:
        for i in range(3):
            await _commit(store, "k", i)
        await store.backup(FULL)
        await _commit(store, "k", 99)
        result = await store.restore(policy=RestorePolicy.FORCE)
        assert (Epoch(0, 0), Epoch(1, 0), 4) == (
            result.previous_epoch,
            result.epoch,
            result.previous_lsn,
        )
        assert (Epoch(1, 0), 3, Epoch(0, 0)) == (store.epoch, store.lsn, store.meta.tail_epoch)
        await _commit(store, "k", 100)
        assert (4, Epoch(1, 0)) == (store.lsn, store.meta.tail_epoch)
    async with open_store() as store:  # and it all survives reopening
        assert (Epoch(1, 0), 4) == (store.epoch, store.lsn)


async def test_safe_refuses_when_the_store_is_at_or_past_the_backup(open_store: OpenStore) -> None:
    """SAFE: an LSN at or past the backup's is refused, and nothing changes."""
    async with open_store() as store:
        await _commit(store, "k", 1)
        await store.backup(FULL)
        with pytest.raises(RestoreSafetyCheckFailed, match="at or past the backup's 1"):
            await store.restore()
        await _commit(store, "k", 2)
        with pytest.raises(RestoreSafetyCheckFailed):
            await store.restore()
        assert (2, Epoch(0, 0)) == (store.lsn, store.epoch)


async def test_safe_refuses_when_the_store_has_a_newer_epoch(open_store: OpenStore) -> None:
    """SAFE: a store whose last transaction is in a newer epoch than the backup is refused."""
    async with open_store() as store:
        for i in range(2):
            await _commit(store, "k", i)
        await store.backup(FULL)
        for i in range(3):
            await _commit(store, "k", i)
        await store.backup(INCR)  # LSN 5, epoch (0, 0)
        await store.restore(lsn=2, policy=RestorePolicy.FORCE)  # epoch (1, 0), LSN 2
        await _commit(store, "k", "new")  # LSN 3 in epoch (1, 0): newer than the backup's
        with pytest.raises(RestoreSafetyCheckFailed, match="newer than the backup's"):
            await store.restore()


async def test_safe_restores_into_an_empty_store(open_store: OpenStore, target: FakeTarget) -> None:
    """An empty store has nothing to lose: SAFE goes ahead."""
    async with open_store() as store:
        await _commit(store, "k", 1)
        await store.backup(FULL)
    async with open_store(name="fresh") as fresh:
        result = await fresh.restore()
        assert 1 == result.lsn
        async with fresh.transaction() as tx:
            assert 1 == await fresh.dictionary("d0").get(tx, "k")


async def test_a_damaged_backup_is_refused_and_the_store_is_unchanged(
    open_store: OpenStore,
    target: FakeTarget,
) -> None:
    """Damaged content raises InvalidBackup; the store keeps its state and leaves no file."""
    async with open_store() as store:
        await _commit(store, "k", 1)
        full = await store.backup(FULL)
        await _commit(store, "k", 2)
        inc = await store.backup(INCR)
        before = await dump_state(store)
        target.corrupt(full.backup_id, b"SQLite format 3\x00" + b"\x00" * 5000)
        with pytest.raises(InvalidBackup):
            await store.restore(backup_id=full.backup_id, policy=RestorePolicy.FORCE)
        assert before == await dump_state(store)
        target.corrupt(inc.backup_id, b'{"format": "safehold-state-incremental"}\n')
        with pytest.raises(InvalidBackup):
            await store.restore(backup_id=inc.backup_id, policy=RestorePolicy.FORCE)
        assert before == await dump_state(store)
        assert ["state-1.db"] == sorted(p.name for p in store.path.glob("state-*.db"))


async def test_a_truncated_incremental_is_refused(
    open_store: OpenStore, target: FakeTarget
) -> None:
    """An incremental without its trailer is refused rather than half applied."""
    async with open_store() as store:
        await _commit(store, "k", 1)
        await store.backup(FULL)
        await _commit(store, "k", 2)
        await _commit(store, "k", 3)
        inc = await store.backup(INCR)
        buf = __import__("io").BytesIO()
        target.fetch(target.snapshots()[-1], buf)
        target.corrupt(inc.backup_id, b"".join(buf.getvalue().splitlines(keepends=True)[:-1]))
        with pytest.raises(InvalidBackup, match="truncated"):
            await store.restore(policy=RestorePolicy.FORCE)
        assert 3 == store.lsn


async def test_another_partitions_backup_is_refused(
    open_store: OpenStore,
    target: FakeTarget,
) -> None:
    """A full backup whose content holds another partition is refused."""
    async with open_store(name="a", partition="pa") as a:
        await _commit(a, "k", 1)
        backup_a = await a.backup(FULL)
    async with open_store(name="b", partition="pb") as b:
        await _commit(b, "k", 1)
        backup_b = await b.backup(FULL)
        buf = __import__("io").BytesIO()
        target.fetch(backup_a.snapshot, buf)
        target.corrupt(backup_b.backup_id, buf.getvalue())
        with pytest.raises(InvalidBackup, match="holds partition pa"):
            await b.restore(policy=RestorePolicy.FORCE)


async def test_restore_fetches_only_what_it_needs(
    open_store: OpenStore, target: FakeTarget
) -> None:
    """A restore to an LSN inside the chain stops fetching once it is reached."""
    async with open_store() as store:
        await _commit(store, "k", 0)
        full = await store.backup(FULL)
        incs = []
        for i in range(1, 4):
            await _commit(store, "k", i)
            incs.append(await store.backup(INCR))
        target.fetched.clear()
        await store.restore(lsn=2, policy=RestorePolicy.FORCE)
    assert [full.backup_id, incs[0].backup_id] == target.fetched
