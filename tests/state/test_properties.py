"""
Property-based tests: random histories, backups at random points, restores to each.

A plain-Python model runs beside the store and records the state after every
commit, by epoch and LSN. Whatever the history (transactions, aborted ones, full,
incremental and vetoed backups, log truncation, restores in the middle), restoring
any backup, any LSN a chain covers, or any point in time must give back exactly
the recorded state.
"""

from __future__ import annotations

import asyncio
import copy
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safehold.core.snapshot import Epoch, format_time
from safehold.state import (
    BackupInfo,
    BackupOption,
    BackupVetoed,
    MissingFullBackup,
    NoBackupFound,
    QueueEmpty,
    RestorePolicy,
    StateStore,
)
from tests.state.conftest import dump_state
from tests.state.fakes import FakeTarget

DICTS = ("d0", "d1")
KEYS = ("a", "b", "c", "é")
FORCE = RestorePolicy.FORCE

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.text("xy", max_size=2),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.sampled_from("pq"), st.integers(0, 2), max_size=2),
)
ops = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(DICTS), st.sampled_from(KEYS), values),
    st.tuples(st.just("del"), st.sampled_from(DICTS), st.sampled_from(KEYS)),
    st.tuples(st.just("enq"), values),
    st.tuples(st.just("deq")),
)
tx_action = st.tuples(st.just("tx"), st.lists(ops, min_size=1, max_size=5))
actions = st.one_of(
    tx_action,
    tx_action,
    tx_action,
    st.tuples(st.just("abort"), st.lists(ops, max_size=3)),
    st.just(("full",)),
    st.just(("incr",)),
    st.just(("incr",)),
    st.just(("veto",)),
    st.just(("truncate",)),
    st.tuples(st.just("restore"), st.integers(0, 50)),
)

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Model:
    """What the store should hold, and what it held after every commit."""

    dicts: dict[str, dict[str, Any]] = field(default_factory=lambda: {d: {} for d in DICTS})
    queue: list[Any] = field(default_factory=list)
    states: dict[tuple[Epoch, int], dict[str, Any]] = field(default_factory=dict)
    times: dict[int, str] = field(default_factory=dict)
    backups: list[tuple[BackupInfo, dict[str, Any]]] = field(default_factory=list)
    base_ok: bool = False
    base_lsn: int = 0

    def view(self) -> dict[str, Any]:
        """The state as ``dump_state`` shows it."""
        out: dict[str, Any] = {f"d:{d}": sorted(self.dicts[d].items()) for d in DICTS}
        out["q:q0"] = list(self.queue)
        return copy.deepcopy(out)

    def load(self, view: dict[str, Any]) -> None:
        """Become the state *view* shows (after a restore)."""
        self.dicts = {d: dict(view[f"d:{d}"]) for d in DICTS}
        self.queue = list(view["q:q0"])


async def _apply(store: StateStore, model: Model, tx_ops: list[tuple[Any, ...]]) -> None:
    async with store.transaction() as tx:
        for op in tx_ops:
            if op[0] == "set":
                await store.dictionary(op[1]).set(tx, op[2], op[3])
                model.dicts[op[1]][op[2]] = copy.deepcopy(op[3])
            elif op[0] == "del":
                existed = await store.dictionary(op[1]).delete(tx, op[2])
                assert (op[2] in model.dicts[op[1]]) == existed
                model.dicts[op[1]].pop(op[2], None)
            elif op[0] == "enq":
                await store.queue("q0").enqueue(tx, op[1])
                model.queue.append(copy.deepcopy(op[1]))
            else:
                try:
                    got = await store.queue("q0").dequeue(tx)
                except QueueEmpty:
                    assert [] == model.queue
                else:
                    assert model.queue.pop(0) == got


async def _accept(info: BackupInfo) -> bool:
    return True


async def _veto(info: BackupInfo) -> bool:
    return False


async def _tx(store: StateStore, model: Model, action: tuple[Any, ...]) -> None:
    before = store.lsn
    await _apply(store, model, action[1])
    assert store.lsn in (before, before + 1)
    model.states[(store.epoch, store.lsn)] = model.view()
    if store.meta.tail_time is not None:
        model.times[store.lsn] = store.meta.tail_time


async def _abort(store: StateStore, model: Model, action: tuple[Any, ...]) -> None:
    saved = copy.deepcopy((model.dicts, model.queue))
    async with store.transaction() as tx:
        for op in action[1]:
            if op[0] == "set":
                await store.dictionary(op[1]).set(tx, op[2], op[3])
        tx.abort()
    model.dicts, model.queue = saved
    assert tx.lsn is None


async def _backup(store: StateStore, model: Model, action: tuple[Any, ...]) -> None:
    option = BackupOption.FULL if action[0] == "full" else BackupOption.INCREMENTAL
    if option is BackupOption.INCREMENTAL and not model.base_ok:
        with pytest.raises(MissingFullBackup):
            await store.backup(option)
        return
    info = await store.backup(option, on_backup=_accept)
    assert (store.lsn, store.epoch) == (info.lsn, info.epoch)
    model.backups.append((info, model.view()))
    model.base_ok, model.base_lsn = True, info.lsn


async def _vetoed(store: StateStore, model: Model, action: tuple[Any, ...]) -> None:
    option = BackupOption.INCREMENTAL if model.base_ok else BackupOption.FULL
    with pytest.raises(BackupVetoed):
        await store.backup(option, on_backup=_veto)


async def _truncate(store: StateStore, model: Model, action: tuple[Any, ...]) -> None:
    await store.truncate_log(up_to=store.lsn)
    if store.lsn > model.base_lsn:
        model.base_ok = False


async def _restore(store: StateStore, model: Model, action: tuple[Any, ...]) -> None:
    if not model.backups:
        return
    info, view = model.backups[action[1] % len(model.backups)]
    old = store.epoch
    result = await store.restore(backup_id=info.backup_id, policy=FORCE)
    assert info.lsn == result.lsn == store.lsn
    assert store.epoch.data_loss_number > old.data_loss_number
    model.load(view)
    model.base_ok = False
    model.states[(store.epoch, store.lsn)] = model.view()


STEPS = {
    "tx": _tx,
    "abort": _abort,
    "full": _backup,
    "incr": _backup,
    "veto": _vetoed,
    "truncate": _truncate,
    "restore": _restore,
}


async def _run_history(store: StateStore, model: Model, history: list[tuple[Any, ...]]) -> None:
    model.states[(store.epoch, 0)] = model.view()
    for action in history:
        await STEPS[action[0]](store, model, action)


def _covered(model: Model) -> list[tuple[Epoch, int]]:
    """Every (epoch, LSN) that some intact chain reaches."""
    by_id = {info.backup_id: info for info, _ in model.backups}
    points: set[tuple[Epoch, int]] = set()
    for info, _ in model.backups:
        head = info
        while head.parent_id is not None:
            head = by_id[head.parent_id]
        points.update((info.epoch, lsn) for lsn in range(head.lsn, info.lsn + 1))
    return sorted(points, key=lambda p: (p[0].key(), p[1]))


# Hundreds of stores are created here: on tmpfs, their fsyncs cost nothing. Nothing
# here is about power loss, so the disk is not needed.
_SHM = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def _in_tmp(body: Any) -> None:
    with tempfile.TemporaryDirectory(dir=_SHM) as tmp:
        asyncio.run(body(Path(tmp)))


@SETTINGS
@given(history=st.lists(actions, min_size=1, max_size=30), data=st.data())
def test_every_backup_and_every_covered_lsn_restores_exactly(
    history: list[tuple[Any, ...]],
    data: st.DataObject,
) -> None:
    """Restoring any backup, or any LSN a chain covers, gives exactly that state."""

    async def body(tmp: Path) -> None:
        model = Model()
        async with StateStore.open(
            tmp / "s", partition="p", target=FakeTarget(), durability="normal", verify=False
        ) as store:
            await _run_history(store, model, history)
            assert model.view() == await dump_state(store)
            for info, view in model.backups:
                result = await store.restore(backup_id=info.backup_id, policy=FORCE)
                assert info.lsn == result.lsn
                assert view == await dump_state(store)
            covered = _covered(model)
            if covered:
                picks = data.draw(st.lists(st.sampled_from(covered), max_size=6, unique=True))
                for epoch, lsn in picks:
                    result = await store.restore(lsn=lsn, epoch=epoch, policy=FORCE)
                    assert lsn == result.lsn
                    assert model.states[(epoch, lsn)] == await dump_state(store)

    _in_tmp(body)


time_actions = st.one_of(
    tx_action, tx_action, st.just(("full",)), st.just(("incr",)), st.just(("incr",))
)


@SETTINGS
@given(history=st.lists(time_actions, min_size=1, max_size=25), data=st.data())
def test_point_in_time_restores_hold_exactly_what_committed_by_then(
    history: list[tuple[Any, ...]],
    data: st.DataObject,
) -> None:
    """A restore to time T holds no later transaction, and every earlier one when it can."""

    async def body(tmp: Path) -> None:
        model = Model()
        async with StateStore.open(
            tmp / "s", partition="p", target=FakeTarget(), durability="normal", verify=False
        ) as store:
            await _run_history(store, model, history)
            if not model.times:
                return
            for lsn in data.draw(
                st.lists(st.sampled_from(sorted(model.times)), min_size=1, max_size=4, unique=True)
            ):
                stamp = model.times[lsn]
                when = datetime.fromisoformat(stamp)
                try:
                    result = await store.restore(time=when, policy=FORCE)
                except NoBackupFound:
                    # Only when no full backup was taken by T, and the first one after T
                    # (if any) holds a transaction committed after T.
                    fulls = [i for i, _ in model.backups if i.option is BackupOption.FULL]
                    assert not any(f.time <= when for f in fulls)
                    later = [f for f in fulls if f.time > when]
                    assert not later or model.times[later[0].lsn] > stamp
                    continue
                assert model.states[(Epoch(), result.lsn)] == await dump_state(store)
                assert result.lsn == 0 or model.times[result.lsn] <= stamp
                last_by_then = max(x for x, t in model.times.items() if t <= stamp)
                after = [i for i, _ in model.backups if i.time > when]
                if after and (
                    after[0].option is BackupOption.INCREMENTAL
                    or not any(
                        stamp < t <= format_time(after[0].time) for t in model.times.values()
                    )
                ):
                    # The first backup after T continues a chain begun by then, or nothing
                    # committed between T and it: the backups hold exactly the state at T.
                    assert last_by_then == result.lsn

    _in_tmp(body)
