"""Backups: full and incremental, their formats, the base rules, and the callback."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from safehold.core.snapshot import Epoch
from safehold.state import (
    BackupInfo,
    BackupInProgress,
    BackupOption,
    BackupVetoed,
    MissingFullBackup,
    RestorePolicy,
)
from tests.state.conftest import OpenStore, dump_state
from tests.state.fakes import FakeTarget

FULL, INCR = BackupOption.FULL, BackupOption.INCREMENTAL


async def _fill(store, n: int, start: int = 0, name: str = "d0") -> None:  # type: ignore[no-untyped-def]
    for i in range(start, start + n):
        async with store.transaction() as tx:
            await store.dictionary(name).set(tx, f"k{i}", {"i": i})


async def test_full_backup_is_a_state_database(open_store: OpenStore, target: FakeTarget) -> None:
    """A full backup is a SQLite file with the state, the meta row, and an empty log."""
    async with open_store() as store:
        await _fill(store, 5)
        copies: list[bytes] = []

        async def keep(info: BackupInfo) -> bool:
            copies.append(info.path.read_bytes())
            return True

        info = await store.backup(FULL, on_backup=keep)
    assert (FULL, 5, 0, None, Epoch(0, 0)) == (
        info.option,
        info.lsn,
        info.start_lsn,
        info.parent_id,
        info.epoch,
    )
    snap = target.snapshots()[0]
    assert ("full", 5, info.chain_id, "p1") == (
        snap.backup_type,
        snap.lsn,
        snap.chain_id,
        snap.partition and snap.partition.partition_id,
    )
    assert copies[0][:16] == b"SQLite format 3\x00"
    path = Path(store.path) / "copy.sqlite"
    path.write_bytes(copies[0])
    conn = sqlite3.connect(path)
    assert 5 == conn.execute("SELECT COUNT(*) FROM dict").fetchone()[0]
    assert 0 == conn.execute("SELECT COUNT(*) FROM log").fetchone()[0]
    assert (5, None) == conn.execute("SELECT lsn, base_id FROM meta").fetchone()
    assert "delete" == conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()


async def test_incremental_holds_exactly_the_transactions_since_the_previous_backup(
    open_store: OpenStore,
    target: FakeTarget,
) -> None:
    """An incremental's records are (parent LSN, LSN], framed by a header and a trailer."""
    async with open_store() as store:
        await _fill(store, 3)
        full = await store.backup(FULL)
        await _fill(store, 4, start=3)
        lines: list[str] = []

        async def keep(info: BackupInfo) -> bool:
            lines.extend(info.path.read_text().splitlines())
            return True

        inc = await store.backup(INCR, on_backup=keep)
    assert (3, 7, full.backup_id, full.chain_id) == (
        inc.start_lsn,
        inc.lsn,
        inc.parent_id,
        inc.chain_id,
    )
    header, *records, trailer = (json.loads(x) for x in lines)
    assert {
        "format": "safehold-state-incremental",
        "version": 1,
        "partition": "p1",
        "chain_id": full.chain_id,
        "parent": full.backup_id,
        "epoch": [0, 0],
        "from_lsn": 3,
        "to_lsn": 7,
    } == header
    assert [4, 5, 6, 7] == [r["lsn"] for r in records]
    assert [["set", "d0", "k3", {"i": 3}]] == records[0]["ops"]
    assert {"end": True, "records": 4, "to_lsn": 7} == trailer
    snap = target.snapshots()[-1]
    assert ("incremental", full.backup_id, 7) == (snap.backup_type, snap.parent, snap.lsn)


async def test_incrementals_chain_each_to_the_previous(open_store: OpenStore) -> None:
    """Each incremental's parent is the backup before it, in one chain."""
    async with open_store() as store:
        await _fill(store, 1)
        full = await store.backup(FULL)
        infos = [full]
        for i in range(3):
            await _fill(store, 2, start=10 * (i + 1))
            infos.append(await store.backup(INCR))
    assert [i.backup_id for i in infos[:-1]] == [i.parent_id for i in infos[1:]]
    assert {full.chain_id} == {i.chain_id for i in infos}
    assert [1, 3, 5, 7] == [i.lsn for i in infos]


async def test_an_empty_incremental_is_allowed(open_store: OpenStore) -> None:
    """With nothing committed since the previous backup, an incremental holds no records."""
    async with open_store() as store:
        await _fill(store, 2)
        full = await store.backup(FULL)
        inc = await store.backup(INCR)
    assert (2, 2, full.backup_id) == (inc.start_lsn, inc.lsn, inc.parent_id)


async def test_incremental_size_follows_the_change(open_store: OpenStore) -> None:
    """After a small change to a large store, the incremental is a small fraction of the full."""
    async with open_store() as store:
        async with store.transaction() as tx:
            for i in range(5000):
                await store.dictionary("d0").set(tx, f"key-{i:05d}", {"payload": "x" * 40, "i": i})
        full = await store.backup(FULL)
        async with store.transaction() as tx:
            for i in range(0, 5000, 100):  # 1%
                await store.dictionary("d0").set(tx, f"key-{i:05d}", {"payload": "y", "i": i})
        inc = await store.backup(INCR)
    assert inc.size * 20 < full.size


async def test_incremental_without_a_full_backup_is_refused(open_store: OpenStore) -> None:
    """No backup yet: MissingFullBackup, with a message that says what to do."""
    async with open_store() as store:
        await _fill(store, 1)
        with pytest.raises(MissingFullBackup, match="no full backup has been taken in epoch"):
            await store.backup(INCR)


async def test_incremental_after_an_epoch_change_is_refused(open_store: OpenStore) -> None:
    """A restore moves the epoch: the next incremental needs a new full backup."""
    async with open_store() as store:
        await _fill(store, 2)
        await store.backup(FULL)
        await store.restore(policy=RestorePolicy.FORCE)
        assert Epoch(1, 0) == store.epoch
        with pytest.raises(MissingFullBackup, match="no full backup"):
            await store.backup(INCR)
        await store.backup(FULL)
        await _fill(store, 1, start=50)
        inc = await store.backup(INCR)
        assert Epoch(1, 0) == inc.epoch


async def test_incremental_after_log_truncation_past_the_base_is_refused(
    open_store: OpenStore,
) -> None:
    """Truncating the log past the last backup makes the next incremental impossible."""
    async with open_store() as store:
        await _fill(store, 2)
        await store.backup(FULL)
        await _fill(store, 3, start=2)
        assert 0 == await store.truncate_log()  # up to the base: nothing beyond it goes
        await store.backup(INCR)
        await _fill(store, 3, start=5)
        assert 3 == await store.truncate_log(up_to=10)  # capped at the last LSN, 8
        with pytest.raises(
            MissingFullBackup, match="truncated to LSN 8, past the last backup's LSN 5"
        ):
            await store.backup(INCR)


async def test_accepted_backups_truncate_the_log(open_store: OpenStore) -> None:
    """With truncate_log (the default), the log keeps only what the next incremental needs."""
    async with open_store() as store:
        await _fill(store, 4)
        await store.backup(FULL)
        await _fill(store, 2, start=4)
        count = await store._w().run(lambda c: c.execute("SELECT COUNT(*) FROM log").fetchone()[0])
        assert (2, 4) == (count, store.meta.log_floor)
    async with open_store(name="keep", truncate_log=False) as store:
        await _fill(store, 4)
        await store.backup(FULL)
        count = await store._w().run(lambda c: c.execute("SELECT COUNT(*) FROM log").fetchone()[0])
        assert 4 == count


async def test_veto_forgets_the_backup_and_keeps_the_old_base(
    open_store: OpenStore,
    target: FakeTarget,
) -> None:
    """A callback returning False: BackupVetoed, the snapshot is forgotten, the base stays."""
    async with open_store() as store:
        await _fill(store, 2)
        full = await store.backup(FULL)
        await _fill(store, 2, start=2)

        async def veto(info: BackupInfo) -> bool:
            return False

        with pytest.raises(BackupVetoed) as caught:
            await store.backup(INCR, on_backup=veto)
        assert [full.backup_id] == [s.id for s in target.snapshots()]
        assert caught.value.info.lsn == 4
        inc = await store.backup(INCR)  # follows the full backup, not the vetoed one
    assert (full.backup_id, 2, 4) == (inc.parent_id, inc.start_lsn, inc.lsn)


async def test_a_failing_callback_vetoes(open_store: OpenStore, target: FakeTarget) -> None:
    """A callback that raises vetoes too; its exception is chained."""
    async with open_store() as store:
        await _fill(store, 1)

        @store.on_backup
        async def upload(info: BackupInfo) -> bool:
            raise OSError("central store unreachable")

        with pytest.raises(BackupVetoed) as caught:
            await store.backup(FULL)
        assert isinstance(caught.value.__cause__, OSError)
        assert [] == target.snapshots()
        with pytest.raises(MissingFullBackup):
            await store.backup(INCR, on_backup=_accept)


async def _accept(info: BackupInfo) -> bool:
    return True


async def test_the_backup_file_exists_only_during_the_callback(open_store: OpenStore) -> None:
    """info.path is there while the callback runs and gone afterwards."""
    seen: list[bool] = []

    async def look(info: BackupInfo) -> bool:
        seen.append(info.path.exists())
        return True

    async with open_store(on_backup=look) as store:
        info = await store.backup(FULL)
    assert [True] == seen
    assert not info.path.exists()


async def test_one_backup_at_a_time(open_store: OpenStore) -> None:
    """A second backup while one runs gets BackupInProgress."""
    async with open_store() as store:
        await _fill(store, 1)
        release = asyncio.Event()
        started = asyncio.Event()

        async def slow(info: BackupInfo) -> bool:
            started.set()
            await release.wait()
            return True

        first = asyncio.create_task(store.backup(FULL, on_backup=slow))
        await started.wait()
        with pytest.raises(BackupInProgress):
            await store.backup(FULL)
        release.set()
        await first


async def test_backups_see_a_consistent_state_while_writers_go_on(
    open_store: OpenStore,
    target: FakeTarget,
) -> None:
    """Writers keep committing during backups, and each backup is exactly one LSN's state."""
    async with open_store() as store:
        states: dict[int, dict[str, object]] = {0: await dump_state(store)}
        stop = asyncio.Event()

        async def writer() -> None:
            i = 0
            while not stop.is_set():
                async with store.transaction() as tx:
                    await store.dictionary("d0").set(tx, f"k{i % 7}", i)
                    await store.dictionary("d1").set(tx, "last", i)
                i += 1
                states[store.lsn] = await dump_state(store)

        task = asyncio.create_task(writer())
        infos = []
        for option in (FULL, INCR, INCR, FULL, INCR):
            await asyncio.sleep(0.01)
            infos.append(await store.backup(option))
        stop.set()
        await task
        for info in infos:
            await store.restore(backup_id=info.backup_id, policy=RestorePolicy.FORCE)
            assert states[info.lsn] == await dump_state(store)
    assert infos[-1].lsn > 0
