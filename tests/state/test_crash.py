"""
Crash tests: a backup or a restore killed with SIGKILL, at every failpoint and at
random moments, leaves a store that opens as it was or fully restored, never a mix.

A subprocess does the work (``crash_worker``); the test kills it, then opens the
store itself and compares its state with the states it may legally have.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from safehold.state import (
    BackupOption,
    MissingFullBackup,
    RestoreContext,
    RestorePolicy,
    StateStore,
)
from tests.state.conftest import dump_state
from tests.state.fakes import FakeTarget

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


async def _commit(store: StateStore, n: int, tag: str) -> None:
    async with store.transaction() as tx:
        for i in range(n):
            await store.dictionary("d0").set(tx, f"k{i}", f"{tag}-{i}")
        await store.queue("q0").enqueue(tx, tag)
        if n % 2:
            await store.dictionary("d1").set(tx, tag, n)


def _prepare(tmp: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """
    A store with a chain of backups and newer state after them.

    Returns the current state and, by backup id, the state each backup holds.
    """

    async def go() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        target = FakeTarget(tmp / "target")
        held: dict[str, dict[str, Any]] = {}
        async with StateStore.open(
            tmp / "store", partition="p", target=target, durability="normal"
        ) as store:
            await _commit(store, 300, "a")
            info = await store.backup(BackupOption.FULL)
            held[info.backup_id] = await dump_state(store)
            for tag in ("b", "c"):
                await _commit(store, 150, tag)
                info = await store.backup(BackupOption.INCREMENTAL)
                held[info.backup_id] = await dump_state(store)
            await _commit(store, 77, "after")
            return await dump_state(store), held

    return asyncio.run(go())


def _open_after_crash(tmp: Path) -> tuple[dict[str, Any], list[str]]:
    """Open the store as a restarted service would; return its state and any loss seen."""

    async def go() -> tuple[dict[str, Any], list[str]]:
        losses: list[str] = []

        async def hook(ctx: RestoreContext) -> bool:
            losses.append(ctx.reason)
            return False

        target = FakeTarget(tmp / "target")
        async with StateStore.open(
            tmp / "store", partition="p", target=target, on_data_loss=hook, durability="normal"
        ) as store:
            state = await dump_state(store)
            # And the store works: a commit, a full backup and a restore of it.
            await _commit(store, 3, "later")
            expected = await dump_state(store)
            info = await store.backup(BackupOption.FULL)
            await store.restore(backup_id=info.backup_id, policy=RestorePolicy.FORCE)
            assert expected == await dump_state(store)
        leftovers = sorted(
            p.name
            for p in (tmp / "store").iterdir()
            if p.name.startswith("state-") and not p.name.endswith(("-wal", "-shm"))
        )
        assert 1 == len(leftovers), leftovers
        return state, losses

    return asyncio.run(go())


def _worker(tmp: Path, mode: str, ids: list[str], failpoint: str | None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("SAFEHOLD_STATE_FAILPOINT", None)
    if failpoint:
        env["SAFEHOLD_STATE_FAILPOINT"] = failpoint
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.state.crash_worker",
            mode,
            str(tmp / "store"),
            str(tmp / "target"),
            *ids,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    "point", ["restore-built", "restore-before-swap", "current-written", "restore-after-swap"]
)
def test_restore_killed_at_each_failpoint(tmp_path: Path, point: str) -> None:
    """Killed before CURRENT is replaced: the old state; after: the restored one."""
    before, held = _prepare(tmp_path)
    first = next(iter(held))
    proc = _worker(tmp_path, "restore", [first], point)
    out, err = proc.communicate(timeout=120)
    assert -signal.SIGKILL == proc.returncode, err
    assert "DONE" not in out
    state, losses = _open_after_crash(tmp_path)
    assert [] == losses
    expected = held[first] if point == "restore-after-swap" else before
    assert expected == state


@pytest.mark.parametrize("point", ["backup-written", "backup-stored"])
def test_backup_killed_at_each_failpoint(tmp_path: Path, point: str) -> None:
    """A killed backup leaves the store exactly as it was."""
    before, _ = _prepare(tmp_path)
    proc = _worker(tmp_path, "backup", [], point)
    _out, err = proc.communicate(timeout=120)
    assert -signal.SIGKILL == proc.returncode, err
    state, losses = _open_after_crash(tmp_path)
    assert ([], before) == (losses, state)


@pytest.mark.parametrize("mode", ["restore", "backup"])
def test_killed_at_random_moments(tmp_path: Path, mode: str) -> None:
    """SIGKILL at random moments of back-to-back restores (or backups): never a mix."""
    _, held = _prepare(tmp_path)
    rng = random.Random(os.environ.get("SAFEHOLD_CRASH_SEED", "1"))
    for _ in range(6):
        before = _state_now(tmp_path)
        allowed = [before, *held.values()] if mode == "restore" else [before]
        proc = _worker(tmp_path, mode, list(held), None)
        assert proc.stdout is not None
        assert "READY" == proc.stdout.readline().strip()
        # Let it finish a few operations, then kill it somewhere inside another one.
        for _ in range(rng.randrange(0, 3)):
            proc.stdout.readline()
        time.sleep(rng.uniform(0, 0.05))
        proc.kill()
        proc.communicate(timeout=60)
        state, losses = _open_after_crash(tmp_path)
        assert [] == losses
        assert state in allowed


def test_killed_while_committing(tmp_path: Path) -> None:
    """
    SIGKILL while transactions commit (and backups are accepted between them):
    every transaction that returned is there, with its LSN; the last LSN and its
    time come back from the log (commits do not write ``meta``); the next commit
    and a backup (incremental when the epoch has a full one) follow on, and the
    backup restores exactly.
    """
    rng = random.Random(os.environ.get("SAFEHOLD_CRASH_SEED", "1"))
    acked = 0
    for _ in range(4):
        proc = _worker(tmp_path, "commit", [], None)
        assert proc.stdout is not None
        assert "READY" == proc.stdout.readline().strip()
        for _ in range(rng.randrange(1, 80)):
            line = proc.stdout.readline().split()
            acked = int(line[2])
        time.sleep(rng.uniform(0, 0.02))
        proc.kill()
        proc.communicate(timeout=60)

        async def check(acked: int) -> None:
            target = FakeTarget(tmp_path / "target")
            async with StateStore.open(
                tmp_path / "store", partition="p", target=target, durability="normal"
            ) as store:
                d = store.dictionary("c")
                async with store.snapshot() as snap:
                    count = await d.get(snap, "count")
                    assert snap.lsn == store.lsn
                assert count == store.lsn >= acked  # returned means committed, LSN and all
                assert store.meta.tail_time is not None
                async with store.transaction() as tx:
                    await d.set(tx, "count", count + 1)
                assert count + 1 == tx.lsn
                try:  # the crash may have come before the first backup of the epoch
                    info = await store.backup(BackupOption.INCREMENTAL)
                except MissingFullBackup:
                    info = await store.backup(BackupOption.FULL)
                assert count + 1 == info.lsn
                await store.restore(backup_id=info.backup_id, policy=RestorePolicy.FORCE)
                async with store.snapshot() as snap:
                    assert count + 1 == await d.get(snap, "count")

        asyncio.run(check(acked))
        acked += 1


def _state_now(tmp: Path) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with StateStore.open(tmp / "store", partition="p", durability="normal") as store:
            return await dump_state(store)

    return asyncio.run(go())
