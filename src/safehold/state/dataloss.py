"""
Data loss: what the ``on_data_loss`` hook receives, and what a loss reports.

A loss is detected when the store opens (or when a drill induces one): its files are
missing or damaged. The store then moves what is left to ``lost/<time>/``, starts
again empty with a new data-loss number, and runs the hook::

    @store.on_data_loss
    async def restore(ctx: RestoreContext) -> bool:
        await ctx.restore_latest(policy=RestorePolicy.SAFE)
        return True          # the state changed

Until the hook returns, the loss stays recorded in ``CURRENT``: a crash or an error
in the hook means it runs again at the next open.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from safehold.core.snapshot import Epoch
from safehold.state.errors import TransactionError
from safehold.state.restore import RestorePolicy, RestoreResult
from safehold.state.target import BackupSource

__all__ = ["DataLossHook", "DataLossMode", "DataLossReport", "RestoreContext"]


class DataLossMode(enum.Enum):
    """
    How a drill damages the store (``StateStore.induce_data_loss``).

    ``FULL`` removes the database files, as a lost disk would. ``PARTIAL`` damages
    the database's header, as a torn or corrupted write would; the store then finds
    it unreadable. Either way the files are kept in ``lost/<time>/``.
    """

    FULL = "FullDataLoss"
    PARTIAL = "PartialDataLoss"


class _Restorer(Protocol):
    async def __call__(
        self,
        *,
        backup_id: str | None,
        lsn: int | None,
        time: datetime | None,
        epoch: Epoch | None,
        policy: RestorePolicy,
        source: BackupSource | None,
    ) -> RestoreResult: ...


class RestoreContext:
    """
    What the ``on_data_loss`` hook gets: why the loss happened, and how to restore.

    The store's locks are held while the hook runs: the hook may restore, but may not
    start a transaction or a backup (``TransactionError``). The context is valid only
    until the hook returns.

    Attributes:
        reason: what was found, e.g. "the database state-3.db is missing".
        mode: the drill's mode, or None for a loss found on open.
        lost_files: where the remains of the lost state were moved, if anything remained.
        epoch: the store's epoch now, after the loss moved it.
    """

    def __init__(
        self,
        *,
        reason: str,
        mode: DataLossMode | None,
        lost_files: Path | None,
        epoch: Epoch,
        restorer: _Restorer,
    ) -> None:
        self.reason = reason
        self.mode = mode
        self.lost_files = lost_files
        self.epoch = epoch
        self._restorer: _Restorer | None = restorer
        self.restored: RestoreResult | None = None

    async def restore(
        self,
        *,
        backup_id: str | None = None,
        lsn: int | None = None,
        time: datetime | None = None,
        epoch: Epoch | None = None,
        policy: RestorePolicy = RestorePolicy.SAFE,
        source: BackupSource | None = None,
    ) -> RestoreResult:
        """
        Restore as ``StateStore.restore`` does (same arguments, same errors).

        *source* reads backups from elsewhere than the store's target, e.g. the copy
        that a post-backup callback made.
        """
        if self._restorer is None:
            raise TransactionError("the data-loss hook has returned; its context is spent")
        result = await self._restorer(
            backup_id=backup_id, lsn=lsn, time=time, epoch=epoch, policy=policy, source=source
        )
        self.restored = result
        return result

    async def restore_latest(
        self, *, policy: RestorePolicy = RestorePolicy.SAFE, source: BackupSource | None = None
    ) -> RestoreResult:
        """Restore the newest backup whose chain is intact."""
        return await self.restore(policy=policy, source=source)

    def _spend(self) -> None:
        self._restorer = None


DataLossHook = Callable[[RestoreContext], Awaitable[bool]]
"""``async def hook(ctx) -> bool``: restore if it can; return whether the state changed."""


@dataclass(frozen=True)
class DataLossReport:
    """
    What happened in a data loss.

    Attributes:
        reason: what was found.
        mode: the drill's mode, or None for a loss found on open.
        lost_files: where the remains went (None when nothing remained).
        epoch: the epoch the loss moved the store to (a restore in its hook keeps it).
        hook_ran: whether an ``on_data_loss`` hook (or the automatic restore) ran.
        state_changed: what the hook returned (True after an automatic restore).
        restore: the restore done in the hook, if any.
    """

    reason: str
    mode: DataLossMode | None
    lost_files: Path | None
    epoch: Epoch
    hook_ran: bool
    state_changed: bool
    restore: RestoreResult | None
