"""
``StateStore``: one partition's durable, transactional state, with backups built in.

Threads and locks. Commits run inline on the event loop, on the writer
connection; at FULL a thread of their own fsyncs the WAL, once for every commit
before it (``_writer``, ``_durable``). The writer thread does maintenance on that
connection; point reads of a transaction run inline, enumerations and snapshots
on worker threads with their own connections; backups and restores read and build
on other threads (and store backups from a child process, ``_offload``). Two
asyncio locks order the rest:

- the *write lock*, held by a write transaction from its start until it is
  committed or submitted for commit (not until it is durable): one writer at a time;
- the *maintenance lock*, held by a backup or a restore: one at a time.

Whoever needs both takes maintenance first. A data-loss hook runs holding both.
Snapshot transactions take neither.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextvars import ContextVar
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload

from safehold.core.errors import UsageError
from safehold.core.snapshot import Epoch, PartitionRef, Snapshot
from safehold.state import _files, _maintenance
from safehold.state._backup_job import take_backup
from safehold.state._db import Durability, Meta
from safehold.state._recovery import attach, damage
from safehold.state._restoring import run_restore
from safehold.state._scopes import Opening, SnapshotScope, TransactionScope
from safehold.state._writer import Writer
from safehold.state.backup import (
    BackupCallback,
    BackupInfo,
    BackupOption,
)
from safehold.state.dataloss import DataLossHook, DataLossMode, DataLossReport, RestoreContext
from safehold.state.dictionary import Dictionary
from safehold.state.errors import (
    BackupInProgress,
    NoBackupFound,
    StateError,
    StoreClosed,
    TransactionError,
)
from safehold.state.events import ChangeHub
from safehold.state.manager import StateManager
from safehold.state.queues import Queue
from safehold.state.restore import (
    RestorePolicy,
    RestoreResult,
    partition_backups,
)
from safehold.state.serializers import KeySerializer, Serializer
from safehold.state.target import BackupSource, BackupTarget

__all__ = ["StateStore"]

log = logging.getLogger(__name__)
T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
H = TypeVar("H", bound=DataLossHook)
C = TypeVar("C", bound=BackupCallback)


class StateStore:
    """
    A partition's state: dictionaries and queues, changed in transactions.

    Open it with ``await StateStore.open(path, partition=...)`` or
    ``async with StateStore.open(...) as store:``. The directory *path* holds one
    partition's state and nothing else (see ``docs/state.md``).

    Args:
        path: the store's directory; created if missing.
        partition: the partition id, or a ``PartitionRef`` with application and service.
        target: where backups go and restores come from (``RepositoryTarget``).
        on_data_loss: the data-loss hook; also settable with ``@store.on_data_loss``.
        on_backup: the default post-backup callback; also ``@store.on_backup``.
        auto_restore: with no hook, restore the latest backup after a data loss.
        durability: ``"full"`` (the default) syncs every commit to disk, so a
            committed transaction survives power loss; ``"normal"`` only survives a
            process crash. See ``docs/state.md`` for why the default is FULL.
        truncate_log: after each accepted backup, drop the change log up to its LSN.
        verify: check the whole database with ``PRAGMA quick_check`` on open.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        partition: str | PartitionRef,
        target: BackupTarget | None = None,
        on_data_loss: DataLossHook | None = None,
        on_backup: BackupCallback | None = None,
        auto_restore: bool = False,
        durability: Durability = "full",
        truncate_log: bool = True,
        verify: bool = True,
    ) -> None:
        ref = PartitionRef(partition_id=partition) if isinstance(partition, str) else partition
        if not ref.partition_id:
            raise UsageError("a state store needs a partition id")
        if durability not in ("full", "normal"):
            raise UsageError(f"durability must be 'full' or 'normal', not {durability!r}")
        self.path = Path(path)
        self.partition_ref = ref
        self.partition: str = ref.partition_id
        self.target = target
        self.auto_restore = auto_restore
        self.last_data_loss: DataLossReport | None = None
        self._hook = on_data_loss
        self._on_backup = on_backup
        self._durability: Durability = durability
        self._truncate = truncate_log
        self._verify = verify
        self._writer: Writer | None = None
        self._lock_fd: int | None = None
        self._write_lock = asyncio.Lock()
        self._maintenance = asyncio.Lock()
        self._in_tx: ContextVar[bool] = ContextVar(f"state-tx-{id(self)}", default=False)
        self._in_hook: ContextVar[bool] = ContextVar(f"state-hook-{id(self)}", default=False)
        self._pending: tuple[str, DataLossMode | None, Path | None] | None = None
        self._hub = ChangeHub()
        self._waiting = 0  # transactions waiting for the write lock
        self._streak = 0  # transactions in a row that did not give the loop a turn
        self.collections = StateManager(self, self._hub, self.snapshot)

    # -- opening and closing -------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        partition: str | PartitionRef,
        target: BackupTarget | None = None,
        on_data_loss: DataLossHook | None = None,
        on_backup: BackupCallback | None = None,
        auto_restore: bool = False,
        durability: Durability = "full",
        truncate_log: bool = True,
        verify: bool = True,
    ) -> Opening:
        """
        Open (or create) the store at *path*; await it, or use it with ``async with``.

        Takes the same keyword arguments as the constructor. A data loss found on
        open runs the hook (or the automatic restore) before this returns; with
        neither, ``data_loss_pending`` is True and the hook runs when one is set,
        before the next transaction or backup.

        Raises:
            StoreLocked: the directory is open elsewhere.
            UsageError: the directory holds another partition's state.
        """
        return Opening(
            cls(
                path,
                partition=partition,
                target=target,
                on_data_loss=on_data_loss,
                on_backup=on_backup,
                auto_restore=auto_restore,
                durability=durability,
                truncate_log=truncate_log,
                verify=verify,
            )
        )

    async def start(self) -> None:
        """Open the store made with the constructor; ``open`` calls this."""
        if self._writer is not None:
            raise UsageError("the store is already open")
        await asyncio.to_thread(self.path.mkdir, parents=True, exist_ok=True)
        self._lock_fd = await asyncio.to_thread(_files.lock_directory, self.path)
        self._writer = Writer(
            self.path,
            self.partition,
            self._durability,
            self._truncate,
            self._hub.deliver,
            contended=lambda: self._waiting > 0,
        )
        try:
            await self._attach(None)
            if self._pending is not None and (self._hook is not None or self.auto_restore):
                async with self._maintenance, self._write_lock:
                    await self._handle_loss()
        except BaseException:
            await self._shutdown()
            raise

    async def close(self) -> None:
        """Wait for the running transaction and backup, then close; idempotent."""
        if self._writer is None:
            return
        self._not_inside("close the store")
        async with self._maintenance, self._write_lock:
            await self._shutdown()

    async def _shutdown(self) -> None:
        if self._writer is not None:
            await self._writer.shutdown()
            self._writer = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def __aenter__(self) -> StateStore:
        if self._writer is None:
            await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- what it holds --------------------------------------------------------------

    @property
    def epoch(self) -> Epoch:
        """The partition's epoch: new transactions commit in it."""
        return self._w().head()[0].epoch

    @property
    def lsn(self) -> int:
        """The LSN of the last committed transaction (0 when there is none)."""
        return self._w().head()[1]

    @property
    def meta(self) -> Meta:
        """The store's bookkeeping: epoch, LSN, tail, log floor, backup base."""
        return self._live_meta()

    @property
    def data_loss_pending(self) -> bool:
        """Whether a data loss was found and its hook has not run yet."""
        return self._pending is not None

    @overload
    def dictionary(self, name: str) -> Dictionary[str, Any]: ...
    @overload
    def dictionary(self, name: str, *, value: type[V] | Serializer[V]) -> Dictionary[str, V]: ...
    @overload
    def dictionary(
        self, name: str, *, key: type[K] | KeySerializer[K], value: type[V] | Serializer[V]
    ) -> Dictionary[K, V]: ...
    @overload
    def dictionary(self, name: str, *, key: type[K] | KeySerializer[K]) -> Dictionary[K, Any]: ...

    def dictionary(self, name: str, *, key: object = None, value: object = None) -> Any:
        """
        The dictionary called *name* (it exists in the state once a key is set in it).

        *key* and *value* give its types (``serializers``): by default ``str`` keys
        and plain JSON values. The first call for a name fixes them (``manager``).
        """
        return self.collections.dictionary(name, key, value)

    @overload
    def queue(self, name: str) -> Queue[Any]: ...
    @overload
    def queue(self, name: str, *, value: type[V] | Serializer[V]) -> Queue[V]: ...

    def queue(self, name: str, *, value: object = None) -> Any:
        """The queue called *name* (it exists once a value is enqueued); *value* its type."""
        return self.collections.queue(name, value)

    # -- hooks ------------------------------------------------------------------------

    def on_data_loss(self, hook: H) -> H:
        """Set the data-loss hook; usable as a decorator. See ``RestoreContext``."""
        self._hook = hook
        return hook

    def on_backup(self, callback: C) -> C:
        """Set the default post-backup callback; usable as a decorator."""
        self._on_backup = callback
        return callback

    # -- transactions ---------------------------------------------------------------

    def transaction(self, *, timeout: float | None = None) -> TransactionScope:
        """
        ``async with store.transaction() as tx:`` commits on normal exit, aborts on error.

        The block runs holding the write lock; on exit the changes join the next
        group commit, the lock passes on, and the block returns once they are
        durable (``tx.lsn`` is then set). Cancelled while waiting for that, the
        commit still happens.

        Args:
            timeout: seconds to wait for the write lock, and for earlier commits
                when a read needs them finished; None waits as long as it takes.

        Raises:
            OperationTimedOut: *timeout* passed first; nothing was committed.
            TransactionError: nested in another transaction of this store, or inside
                the data-loss hook.
        """
        return TransactionScope(self, timeout)

    def snapshot(self) -> SnapshotScope:
        """
        ``async with store.snapshot() as snap:``: a read-only view at the last commit.

        It takes no lock and blocks no writer; it reads the state at ``snap.lsn``
        (durable commits only) for as long as it is open.
        """
        return SnapshotScope(self)

    async def truncate_log(self, up_to: int | None = None) -> int:
        """
        Drop the change log's transactions up to LSN *up_to*; return how many went.

        By default, up to the last accepted backup, which keeps incrementals possible.
        Past it, the next incremental is refused with ``MissingFullBackup``.
        """
        await self._ready()
        w = self._w()
        return await w.call(partial(_maintenance.truncate_log, w, up_to))

    # -- backups ----------------------------------------------------------------------

    async def backup(
        self,
        option: BackupOption = BackupOption.FULL,
        *,
        on_backup: BackupCallback | None = None,
        tags: tuple[str, ...] = (),
    ) -> BackupInfo:
        """
        Back the store up into the target, while writers go on.

        Then the post-backup callback (*on_backup*, or the store's) sees the backup.
        If it returns True, the backup becomes the base that the next incremental
        follows (and, with ``truncate_log``, the log up to it is dropped).

        Raises:
            BackupInProgress: a backup or restore is running.
            MissingFullBackup: an incremental with no full backup to follow.
            BackupVetoed: the callback returned False or raised (its exception is
                chained); the snapshot was forgotten from the repository.
            UsageError: the store has no target.
        """
        self._not_inside("take a backup")
        await self._ready()
        target = self._require_target()
        if self._maintenance.locked():
            raise BackupInProgress(f"a backup or restore of partition {self.partition} is running")
        async with self._maintenance:
            callback = on_backup or self._on_backup
            return await take_backup(self._w(), target, self.partition_ref, option, callback, tags)

    async def backups(self, source: BackupSource | None = None) -> list[Snapshot]:
        """This partition's backups in *source* (by default the target), oldest first."""
        src = source or self._require_target()
        return partition_backups(await asyncio.to_thread(src.snapshots), self.partition)

    # -- restores ---------------------------------------------------------------------

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
        Replace the state with a backup's: a chain merged up to the point asked for.

        Give at most one of *backup_id* (an id or unique prefix), *lsn* and *time*;
        with none, the latest backup. See ``restore.plan_restore`` for how the chain
        is chosen. The store keeps serving until the new state is built; then it
        waits for the running transaction and swaps the new state in atomically.
        Afterwards the epoch's data-loss number has moved, and the next backup must
        be full.

        Raises:
            NoBackupFound, InvalidBackupChain, InvalidBackup: see ``plan_restore`` and
                ``build_restore``.
            RestoreSafetyCheckFailed: ``SAFE`` and the store is newer than the backup.
        """
        self._not_inside("restore")
        self._w().check_open()
        if self._pending is not None and self._hook is None and not self.auto_restore:
            # No hook will handle the pending loss: this restore does, in the loss's epoch.
            async with self._maintenance, self._write_lock:
                if self._pending is not None:
                    result = await self._restore(
                        backup_id=backup_id,
                        lsn=lsn,
                        time=time,
                        epoch=epoch,
                        policy=policy,
                        source=source,
                        locked=True,
                    )
                    await self._clear_pending()
                    if self.last_data_loss is not None:
                        self.last_data_loss = replace(
                            self.last_data_loss, state_changed=True, restore=result
                        )
                    return result
        await self._ready()
        async with self._maintenance:
            return await self._restore(
                backup_id=backup_id,
                lsn=lsn,
                time=time,
                epoch=epoch,
                policy=policy,
                source=source,
                locked=False,
            )

    async def _restore(
        self,
        *,
        backup_id: str | None,
        lsn: int | None,
        time: datetime | None,
        epoch: Epoch | None,
        policy: RestorePolicy,
        source: BackupSource | None,
        locked: bool,
    ) -> RestoreResult:
        return await run_restore(
            self,
            source or self._require_target(),
            backup_id=backup_id,
            lsn=lsn,
            time=time,
            epoch=epoch,
            policy=policy,
            locked=locked,
        )

    # -- data loss ----------------------------------------------------------------------

    async def induce_data_loss(self, mode: DataLossMode = DataLossMode.FULL) -> DataLossReport:
        """
        Damage the store on purpose, for a fire drill; then handle the loss as on open.

        Waits for the running transaction and backup. The hook (or the automatic
        restore) runs before this returns; with neither, the loss stays pending.
        The damaged files are kept in ``lost/<time>/``.
        """
        self._not_inside("induce a data loss")
        async with self._maintenance, self._write_lock:
            w = self._w()
            await w.drain()
            current = _files.Current(w.generation, self.partition, self._live_meta().epoch)
            await w.call(w.close_conn)
            await asyncio.to_thread(damage, self.path, current, mode)
            await self._attach(mode)
            if self._pending is None or self.last_data_loss is None:
                # A bug, not a user error: the damage just done was not detected.
                raise StateError("the induced data loss was not detected")
            if self._hook is not None or self.auto_restore:
                await self._handle_loss()
            return self.last_data_loss

    async def _attach(self, mode: DataLossMode | None) -> None:
        """Inspect the directory, start again after a loss, and open the live database."""
        current, loss = await attach(
            self.path,
            self.partition,
            backups=self.backups if self.target is not None else None,
            verify=self._verify,
            durability=self._durability,
        )
        if loss is not None:
            self._pending = (loss[0], mode, loss[1])
        w = self._w()
        await w.call(partial(w.open_conn, current.generation))
        w.prune_pool()
        if loss is not None:
            self._hub.rebuild(0)
        if self._pending is not None:
            reason, _, lost = self._pending
            self.last_data_loss = DataLossReport(
                reason=reason,
                mode=mode,
                lost_files=lost,
                epoch=self._live_meta().epoch,
                hook_ran=False,
                state_changed=False,
                restore=None,
            )

    async def _ready(self) -> None:
        """Before a transaction or backup: run a pending data-loss hook, or accept the loss."""
        self._w().check_open()
        if self._pending is None:
            return
        async with self._maintenance, self._write_lock:
            if self._pending is None:
                return
            if self._hook is not None or self.auto_restore:
                await self._handle_loss()
            else:
                log.warning(
                    "partition %s: data loss (%s) accepted without a hook: the state starts empty",
                    self.partition,
                    self._pending[0],
                )
                await self._clear_pending()

    async def _handle_loss(self) -> DataLossReport:
        """Run the hook (or the automatic restore) for the pending loss; both locks held."""
        assert self._pending is not None
        reason, mode, lost = self._pending
        epoch = self._live_meta().epoch
        ctx = RestoreContext(
            reason=reason,
            mode=mode,
            lost_files=lost,
            epoch=epoch,
            restorer=partial(self._restore, locked=True),
        )
        token = self._in_hook.set(True)
        try:
            if self._hook is not None:
                changed = bool(await self._hook(ctx))
            else:
                try:
                    await ctx.restore_latest()
                    changed = True
                except NoBackupFound:
                    log.warning(
                        "partition %s: no backup to restore after the data loss", self.partition
                    )
                    changed = False
        finally:
            ctx._spend()
            self._in_hook.reset(token)
        await self._clear_pending()
        self.last_data_loss = DataLossReport(
            reason=reason,
            mode=mode,
            lost_files=lost,
            epoch=epoch,
            hook_ran=True,
            state_changed=changed,
            restore=ctx.restored,
        )
        return self.last_data_loss

    async def _clear_pending(self) -> None:
        current = _files.Current(self._w().generation, self.partition, self._live_meta().epoch)
        await asyncio.to_thread(_files.write_current, self.path, current)
        self._pending = None

    # -- helpers ----------------------------------------------------------------------

    def _w(self) -> Writer:
        if self._writer is None:
            raise StoreClosed(f"the state store of partition {self.partition} is not open")
        return self._writer

    def _live_meta(self) -> Meta:
        return self._w().live_meta()

    def _require_target(self) -> BackupTarget:
        if self.target is None:
            raise UsageError(f"the state store of partition {self.partition} has no backup target")
        return self.target

    def _not_inside(self, what: str) -> None:
        if self._in_tx.get():
            raise TransactionError(f"cannot {what} inside a transaction of the same store")
        if self._in_hook.get():
            raise TransactionError(f"cannot {what} inside the data-loss hook")
