"""
The process the crash tests kill: it backs up or restores a store, over and over.

    python -m tests.state.crash_worker backup|restore|commit STORE TARGET [BACKUP_ID ...]

It prints ``READY`` once the store is open and ``DONE <n>`` after each operation,
so the test can kill it at a random moment in the middle of one. ``commit`` runs
transactions that each add one to the key ``count`` of dictionary ``c`` (so that
``count`` equals the LSN), prints ``DONE <n> <lsn>`` once each has returned, and
takes a backup every 20 (the next incremental, or a full one). With
``SAFEHOLD_STATE_FAILPOINT`` set, the store kills the process itself at that point.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from safehold.state import BackupOption, MissingFullBackup, RestorePolicy, StateStore
from tests.state.fakes import FakeTarget


async def main(mode: str, store_dir: Path, target_dir: Path, ids: list[str]) -> None:
    """Loop over the operation until killed (or 50 times)."""
    target = FakeTarget(target_dir)
    async with StateStore.open(
        store_dir, partition="p", target=target, durability="normal"
    ) as store:
        print("READY", flush=True)
        if mode == "commit":
            await _commits(store)
            return
        for n in range(50):
            if mode == "restore":
                await store.restore(backup_id=ids[n % len(ids)], policy=RestorePolicy.FORCE)
            else:
                option = BackupOption.FULL if n % 3 == 0 else BackupOption.INCREMENTAL
                try:
                    await store.backup(option)
                except MissingFullBackup:
                    await store.backup(BackupOption.FULL)
            print(f"DONE {n}", flush=True)


async def _commits(store: StateStore) -> None:
    d = store.dictionary("c")
    for n in range(100_000):
        async with store.transaction() as tx:
            await d.set(tx, "count", (await d.get(tx, "count", 0) or 0) + 1)
        print(f"DONE {n} {tx.lsn}", flush=True)
        if n % 20 == 19:
            try:
                await store.backup(BackupOption.INCREMENTAL)
            except MissingFullBackup:
                await store.backup(BackupOption.FULL)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]))
