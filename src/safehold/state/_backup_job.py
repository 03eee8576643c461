"""
One backup, from the consistent view to the accepted base.

1. Open a read connection and fix its view on the writer thread, stamping the time.
2. Write the full or incremental backup to a file in ``staging/`` (off the writer).
3. Store the file in the target as a snapshot with the chain's manifest fields.
4. Run the post-backup callback; a veto forgets the snapshot.
5. Make the backup the base of the next incremental, on the writer thread.

The caller holds the store's maintenance lock; transactions go on throughout.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from safehold.core.snapshot import PartitionRef, Snapshot, SnapshotMeta
from safehold.state import _files
from safehold.state._maintenance import accept
from safehold.state._writer import Writer
from safehold.state.backup import (
    BackupCallback,
    BackupInfo,
    BackupOption,
    IncrementalHeader,
    begin_view,
    open_view,
    write_full,
    write_incremental,
)
from safehold.state.errors import BackupVetoed
from safehold.state.restore import STATE_TAG
from safehold.state.target import BackupTarget

__all__ = ["take_backup"]

log = logging.getLogger(__name__)


async def take_backup(
    writer: Writer,
    target: BackupTarget,
    partition: PartitionRef,
    option: BackupOption,
    callback: BackupCallback | None,
    tags: tuple[str, ...],
) -> BackupInfo:
    """
    Take one backup of the store that *writer* serves; see the module docstring.

    Raises:
        MissingFullBackup: an incremental with no base to follow.
        BackupVetoed: the callback refused; the snapshot was forgotten.
    """
    pid = partition.partition_id or ""
    gen = writer.generation
    staging = await asyncio.to_thread(_files.staging_dir, writer.root)
    full = option is BackupOption.FULL
    tmp = staging / f"backup-{uuid.uuid4().hex}.{'sqlite' if full else 'jsonl'}"
    try:
        view = await asyncio.to_thread(open_view, writer.db_path())
        try:
            # Fix the view and stamp its time on the writer thread, between two
            # commits: the backup then holds exactly the transactions stamped before.
            time = await writer.call(partial(writer.between_commits, partial(_fix_view, view)))
            # At FULL: no backup may hold an LSN that a power cut could still take
            # back (and give to another transaction).
            await writer.durable()
            if full:
                meta = await asyncio.to_thread(write_full, view, tmp)
                chain, parent, start = str(uuid.uuid4()), None, 0
                lsn, epoch = meta.lsn, meta.epoch
            else:
                header = await asyncio.to_thread(_write_incremental_file, view, tmp, pid)
                chain, parent, start = header.chain_id, header.parent, header.from_lsn
                lsn, epoch = header.to_lsn, header.epoch
        finally:
            await asyncio.to_thread(view.close)
        _files.failpoint("backup-written")
        snap = await asyncio.to_thread(
            _store_file,
            target,
            tmp,
            _name(option, start, lsn),
            SnapshotMeta(
                tags=(STATE_TAG, *tags),
                partition=partition,
                backup_type=option.value,
                parent=parent,
                chain_id=chain,
                epoch=epoch,
                lsn=lsn,
                time=time,
            ),
        )
        _files.failpoint("backup-stored")
        info = BackupInfo(
            backup_id=snap.id,
            option=option,
            partition=pid,
            chain_id=chain,
            parent_id=parent,
            epoch=epoch,
            lsn=lsn,
            start_lsn=start,
            time=time,
            size=(await asyncio.to_thread(tmp.stat)).st_size,
            path=tmp,
            location=target.location,
            snapshot=snap,
        )
        await _run_callback(target, callback, info)
        if not await writer.call(partial(accept, writer, gen, info)):
            log.warning(
                "partition %s was restored or lost while backup %s ran: it is stored, "
                "but incrementals will not follow it",
                pid,
                snap.short_id,
            )
        return info
    finally:
        await asyncio.to_thread(tmp.unlink, missing_ok=True)


def _name(option: BackupOption, start: int, lsn: int) -> str:
    if option is BackupOption.FULL:
        return f"state.full.{lsn}.sqlite"
    return f"state.incremental.{start}-{lsn}.jsonl"


async def _run_callback(
    target: BackupTarget, callback: BackupCallback | None, info: BackupInfo
) -> None:
    if callback is None:
        return
    try:
        accepted = await callback(info)
    except BaseException as exc:
        await _forget(target, info.backup_id)
        raise BackupVetoed(
            f"the post-backup callback failed: {exc!r}; backup {info.snapshot.short_id} "
            "was forgotten",
            info,
        ) from exc
    if not accepted:
        await _forget(target, info.backup_id)
        raise BackupVetoed(
            f"the post-backup callback vetoed backup {info.snapshot.short_id}; it was forgotten",
            info,
        )


async def _forget(target: BackupTarget, snapshot_id: str) -> None:
    try:
        await asyncio.to_thread(target.forget, snapshot_id)
    except Exception:
        # Not fatal: an unforgotten vetoed backup is a valid backup that nothing follows.
        log.exception("could not forget vetoed backup %s", snapshot_id[:8])


def _fix_view(view: sqlite3.Connection) -> datetime:
    begin_view(view)
    return datetime.now(UTC)


def _write_incremental_file(
    view: sqlite3.Connection, path: Path, partition: str
) -> IncrementalHeader:
    with path.open("x", encoding="utf-8") as out:
        return write_incremental(view, out, partition=partition)


def _store_file(target: BackupTarget, path: Path, name: str, meta: SnapshotMeta) -> Snapshot:
    store_file = getattr(target, "store_file", None)
    if store_file is not None:  # RepositoryTarget: maybe in its backup process (``_offload``)
        snap: Snapshot = store_file(path, name=name, meta=meta)
        return snap
    with path.open("rb") as f:
        return target.store(f, name=name, meta=meta)
