"""
A restore of a running store: plan, build beside the live database, swap.

``StateStore.restore`` and the data-loss hook's ``RestoreContext.restore`` end
here. The caller holds the store's maintenance lock (and, with *locked*, the
write lock too: inside the data-loss hook).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from safehold.core.snapshot import Epoch
from safehold.state import _files
from safehold.state._maintenance import remove_db_files, swap
from safehold.state.restore import (
    RestorePolicy,
    RestoreResult,
    build_first,
    check_safe,
    partition_backups,
    plan_restore,
)
from safehold.state.target import BackupSource

if TYPE_CHECKING:
    from safehold.state.store import StateStore

__all__ = ["run_restore"]


async def run_restore(
    store: StateStore,
    src: BackupSource,
    *,
    backup_id: str | None,
    lsn: int | None,
    time: datetime | None,
    epoch: Epoch | None,
    policy: RestorePolicy,
    locked: bool,
) -> RestoreResult:
    """
    Restore *store* from *src* (see ``StateStore.restore`` for the arguments).

    The new database is built as the next generation while the store serves; then,
    holding the write lock, the submitted commits are finished, the policy is
    checked again and ``CURRENT`` is switched. Change listeners get ``rebuild``.

    The epoch's data-loss number moves past the store's and the backup's, except
    when this restore answers a data loss: the loss moved it already, past every
    backup it knew of, and Service Fabric moves it once.
    """
    backups = partition_backups(await asyncio.to_thread(src.snapshots), store.partition)
    plan = plan_restore(backups, backup_id=backup_id, lsn=lsn, time=time, epoch=epoch)
    before = store._live_meta()
    if policy is RestorePolicy.SAFE and plan.alternative is None and not plan.conditional:
        check_safe(before, plan.epoch, plan.max_lsn)  # refuse before downloading anything
    top = max(p.epoch.data_loss_number for p in (plan, plan.alternative) if p is not None)
    if store._pending is not None and before.tail_epoch is None:
        # Restoring a loss: the loss already moved the epoch past every backup's
        # (Service Fabric moves it once); only a foreign source may need more.
        dl = max(before.epoch.data_loss_number, top + 1)
    else:
        dl = max(before.epoch.data_loss_number, top) + 1
    new_epoch = Epoch(dl, before.epoch.configuration_number)
    w = store._w()
    gen = w.generation + 1
    dest = w.db_path(gen)
    staging = await asyncio.to_thread(_files.staging_dir, store.path)
    try:
        await asyncio.to_thread(remove_db_files, store.path, gen)
        plan, built = await asyncio.to_thread(
            build_first,
            plan,
            src,
            dest,
            partition=store.partition,
            staging=staging,
            epoch=new_epoch,
        )
        _files.failpoint("restore-built")
        async with contextlib.AsyncExitStack() as stack:
            if not locked:
                await stack.enter_async_context(store._write_lock)
            await w.drain()
            live = store._live_meta()
            if policy is RestorePolicy.SAFE:
                check_safe(live, plan.epoch, built.lsn)
            await w.call(partial(swap, w, gen, new_epoch))
            w.prune_pool()
            store._hub.rebuild(built.lsn)
    except BaseException:
        if w.generation != gen:
            await asyncio.to_thread(remove_db_files, store.path, gen)
        raise
    last = plan.chain[-1].id
    return RestoreResult(
        backup_id=last,
        chain=tuple(s.id for s in plan.chain),
        lsn=built.lsn,
        restored_epoch=plan.epoch,
        epoch=new_epoch,
        previous_epoch=before.epoch,
        previous_lsn=before.lsn,
        warnings=plan.warnings,
    )
