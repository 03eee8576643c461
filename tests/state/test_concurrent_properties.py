"""
Property-based tests of the conditional operations under concurrent writers.

Hypothesis draws a few writer tasks, each a list of transactions of conditional
operations (``try_add``, ``try_update``, ``get_or_add``, ``add_or_update``,
``try_remove``, ``try_get``, queue ``enqueue``/``try_dequeue``), some aborted, with
yields between operations so that the tasks interleave and queue for the lock,
while another task takes full and incremental backups. Then:

- **serialisable**: replaying the committed transactions one by one in LSN order
  on a plain-Python model gives every operation the result it had in the store;
  a transaction that committed nothing saw the state at some LSN; LSNs are
  1, 2, 3, ... with no gap;
- **restores are exact**: restoring each LSN the backups cover gives back exactly
  the model's state at that LSN.

Bounded: a few dozen examples of at most 4 writers x 5 transactions.
"""

from __future__ import annotations

import asyncio
import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safehold.core.snapshot import Epoch
from safehold.state import (
    BackupOption,
    Durability,
    MissingFullBackup,
    RestorePolicy,
    StateStore,
    Transaction,
)
from tests.state.conftest import dump_state
from tests.state.fakes import FakeTarget

KEYS = ("a", "b", "c")
small = st.integers(0, 3)
op = st.one_of(
    st.tuples(st.just("try_add"), st.sampled_from(KEYS), small),
    st.tuples(st.just("try_update"), st.sampled_from(KEYS), small, small),
    st.tuples(st.just("get_or_add"), st.sampled_from(KEYS), small),
    st.tuples(st.just("add_or_update"), st.sampled_from(KEYS), small, small),
    st.tuples(st.just("try_remove"), st.sampled_from(KEYS)),
    st.tuples(st.just("try_get"), st.sampled_from(KEYS)),
    st.tuples(st.just("enq"), small),
    st.tuples(st.just("try_deq")),
)
step = st.tuples(op, st.booleans())  # the op, and whether to yield after it
abort = st.integers(0, 4).map(lambda n: n == 0)  # one transaction in five aborts
txn = st.tuples(st.lists(step, min_size=1, max_size=4), abort)
writers = st.lists(st.lists(txn, min_size=1, max_size=5), min_size=2, max_size=4)
backups = st.lists(st.tuples(st.sampled_from(["full", "incr"]), st.integers(0, 6)), max_size=4)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Aborted(Exception):
    """Raised inside a transaction to abort it."""


@dataclass
class Model:
    """The state: dictionary d0 and queue q0."""

    d: dict[str, int] = field(default_factory=dict)
    q: list[int] = field(default_factory=list)

    def apply(self, o: tuple[Any, ...]) -> Any:  # noqa: PLR0911 (one return per op)
        """Apply one op as the store must; return its result."""
        d = self.d
        match o:
            case ("try_add", k, v):
                if k in d:
                    return False
                d[k] = v
                return True
            case ("try_update", k, new, cmp):
                if k in d and d[k] == cmp:
                    d[k] = new
                    return True
                return False
            case ("get_or_add", k, v):
                return d.setdefault(k, v)
            case ("add_or_update", k, v, delta):
                d[k] = d[k] + delta if k in d else v
                return d[k]
            case ("try_remove", k):
                return (True, d.pop(k)) if k in d else (False, None)
            case ("try_get", k):
                return (True, d[k]) if k in d else (False, None)
            case ("enq", v):
                self.q.append(v)
                return None
            case ("try_deq",):
                return (True, self.q.pop(0)) if self.q else (False, None)
        raise AssertionError(o)

    def dump(self) -> dict[str, Any]:
        """As ``dump_state(store, ("d0",), ("q0",))`` shows it."""
        return {"d:d0": sorted(self.d.items()), "q:q0": list(self.q)}


async def _run_op(store: StateStore, tx: Transaction, o: tuple[Any, ...]) -> Any:  # noqa: PLR0911
    d, q = store.dictionary("d0"), store.queue("q0")
    match o:
        case ("try_add", k, v):
            return await d.try_add(tx, k, v)
        case ("try_update", k, new, cmp):
            return await d.try_update(tx, k, new, cmp)
        case ("get_or_add", k, v):
            return await d.get_or_add(tx, k, v)
        case ("add_or_update", k, v, delta):
            return await d.add_or_update(tx, k, v, lambda _k, old: old + delta)
        case ("try_remove", k):
            r = await d.try_remove(tx, k)
            return (r.has_value, r.value)
        case ("try_get", k):
            r = await d.try_get(tx, k)
            return (r.has_value, r.value)
        case ("enq", v):
            await q.enqueue(tx, v)
            return None
        case ("try_deq",):
            r = await q.try_dequeue(tx)
            return (r.has_value, r.value)
    raise AssertionError(o)


async def _scenario(
    root: Path, durability: Durability, programs: list[Any], plan: list[tuple[str, int]]
) -> None:
    history: list[tuple[int | None, list[tuple[Any, Any]]]] = []
    taken: list[tuple[int, int]] = []  # (first LSN, last LSN) each backup's chain covers
    async with StateStore.open(
        root / "store", partition="p1", target=FakeTarget(), durability=durability
    ) as store:

        async def writer(program: list[Any]) -> None:
            for steps, abort in program:
                seen: list[tuple[Any, Any]] = []
                try:
                    async with store.transaction() as tx:
                        for o, pause in steps:
                            seen.append((o, await _run_op(store, tx, o)))
                            if pause:
                                await asyncio.sleep(0)
                        if abort:
                            raise Aborted
                except Aborted:
                    continue
                history.append((tx.lsn, seen))

        async def backer() -> None:
            chain_start: int | None = None
            for kind, pauses in plan:
                for _ in range(pauses):
                    await asyncio.sleep(0)
                try:
                    option = BackupOption.FULL if kind == "full" else BackupOption.INCREMENTAL
                    info = await store.backup(option)
                except MissingFullBackup:
                    continue
                if info.option is BackupOption.FULL:
                    chain_start = info.lsn
                assert chain_start is not None
                taken.append((chain_start, info.lsn))

        await asyncio.wait_for(
            asyncio.gather(backer(), *(writer(p) for p in programs)), timeout=120
        )

        # Serialisable: replay the committed transactions in LSN order.
        committed = sorted((lsn, seen) for lsn, seen in history if lsn is not None)
        assert [lsn for lsn, _ in committed] == list(range(1, len(committed) + 1))
        model = Model()
        states = {0: model.dump()}
        models = {0: copy.deepcopy(model)}
        for at, seen in committed:
            for o, result in seen:
                assert model.apply(o) == result, (at, o)
            states[at] = model.dump()
            models[at] = copy.deepcopy(model)
        # A transaction that committed nothing saw the state at some LSN.
        for lsn, seen in history:
            if lsn is None:
                assert any(_replays(m, seen) for m in models.values()), seen
        assert states[store.lsn] == await dump_state(store, ("d0",), ("q0",))

        # Restores reach exactly the state at each LSN the backups cover.
        covered = sorted({lsn for lo, hi in taken for lsn in range(lo, hi + 1)})
        for lsn in covered[:: max(1, len(covered) // 4)]:
            result = await store.restore(lsn=lsn, epoch=Epoch(0, 0), policy=RestorePolicy.FORCE)
            assert lsn == result.lsn
            assert states[lsn] == await dump_state(store, ("d0",), ("q0",))


def _replays(m: Model, seen: list[tuple[Any, Any]]) -> bool:
    trial = copy.deepcopy(m)
    return all(trial.apply(o) == r for o, r in seen)


@SETTINGS
@given(programs=writers, plan=backups, durability=st.sampled_from(["normal", "full"]))
def test_concurrent_conditional_histories_are_serialisable_and_restorable(
    programs: list[Any], plan: list[tuple[str, int]], durability: Durability
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_scenario(Path(tmp), durability, programs, plan))
