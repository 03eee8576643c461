"""
The data work of a job, as an agent runs it: back up a source, restore it, clean a storage.

Sources:

- ``dir:PATH``: the directory is backed up; a restore replaces it whole (the
  snapshot is restored beside it, then swapped in, so a failed restore leaves
  the old data in place).
- ``command:CMD``: ``CMD`` runs through the shell and its stdout is stored as one
  file, ``dump``. A restore needs the partition's restore target:
  ``command:CMD`` gets the content on its stdin, ``file:PATH`` gets it written
  (atomically), ``dir:PATH`` gets a file ``PATH/dump``.
- ``postgres:URL``, ``mariadb:URL``, ``redis:URL``: database sources (``agent.sources``),
  restored into ``pgdata:PATH``, ``mysqldata:PATH`` or ``dir:PATH``, to a time if asked.

``execute`` never raises for a job's own failure: it returns the ``Outcome``
to be reported to the controller. A job of a kind this agent does not know is
refused with ``SAFEHOLD_E_UNKNOWN_JOB_KIND``: nothing is done, and nothing is
ever deleted on a guess.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

from pydantic import ValidationError

from safehold.agent.drill import run_drill
from safehold.agent.group import GROUP_KINDS, run_group
from safehold.agent.hooks import around_backup
from safehold.agent.sources import backup_db, expire_db, is_db_source, restore_db, swap_in
from safehold.core.errors import SafeholdError
from safehold.core.policy import parse_storage
from safehold.core.progress import ProgressSink
from safehold.core.retention_basic import BackupItem, apply_basic_retention
from safehold.core.snapshot import (
    Epoch,
    PartitionRef,
    Snapshot,
    SnapshotMeta,
    format_time,
    parse_time,
)
from safehold.core.work import Outcome, SnapshotRef, WorkItem
from safehold.service.engine import BackupEngine, StorageOpener

__all__ = ["KINDS", "execute"]

#: The job kinds this agent runs.
KINDS = ("backup", "restore", "clean", "drill", *GROUP_KINDS)

log = logging.getLogger("safehold.agent")

STREAM_NAME = "dump"


class SourceError(SafeholdError):
    """A partition's source or restore target cannot be used."""

    code = "SAFEHOLD_E_SOURCE"


def _meta(item: WorkItem, now: datetime) -> SnapshotMeta:
    part = item.Partition
    params = item.backup()
    incremental = params.backup_type == "Incremental"
    return SnapshotMeta(
        host=f"partition-{part.PartitionId}",
        tags=("safehold-service",),
        partition=PartitionRef(
            part.ApplicationName,
            part.ServiceName,
            part.PartitionId,
            kind=None if part.Kind == "Singleton" else part.Kind,
            low_key=part.LowKey,
            high_key=part.HighKey,
            name=part.Name,
        ),
        backup_type="incremental" if incremental else "full",
        parent=params.parent_snapshot if incremental else None,
        chain_id=params.chain_snapshot if incremental else None,
        epoch=Epoch(*params.epoch),
        lsn=params.lsn,
        time=now,
    )


def _backup(
    item: WorkItem, engine: BackupEngine, storage: Any, progress: ProgressSink, now: datetime
) -> Snapshot:
    source = item.Partition.Source
    meta = _meta(item, now)
    if is_db_source(source):  # postgres:, mariadb:, redis: (agent.sources)
        return backup_db(item, engine, storage, meta, progress)
    if source.startswith("dir:"):
        path = Path(source[4:])
        if not path.is_dir():
            raise SourceError(f"the source directory {path} does not exist")
        params = item.backup()
        parent = params.previous_snapshot or params.parent_snapshot
        return engine.backup_dir(storage, path, meta=meta, progress=progress, parent=parent)
    cmd = source.split(":", 1)[1]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=err)  # noqa: S602
        assert proc.stdout is not None
        try:
            snap = engine.backup_stream(
                storage, cast(BinaryIO, proc.stdout), name=STREAM_NAME, meta=meta, progress=progress
            )
        finally:
            proc.stdout.close()
            code = proc.wait()
        if code != 0:
            err.seek(0)
            tail = err.read()[-500:].decode(errors="replace").strip()
            engine.forget(storage, [snap.id])
            raise SourceError(f"the dump command exited with status {code}: {tail}")
    return snap


def _parent(s: Snapshot) -> str | None:
    return s.parent if s.backup_type == "incremental" else None


def _retention(
    item: WorkItem, engine: BackupEngine, storage: Any, new: Snapshot, now: datetime
) -> list[str]:
    params = item.backup()
    rule = params.retention
    if rule is None:
        return []
    if params.known is not None:
        # The catalog's list and the new backup: no need to read every snapshot of
        # a repository that a whole fleet shares.
        items = [
            BackupItem(k.SnapshotId, parse_time(k.Time), k.Full, k.ParentSnapshotId)
            for k in params.known
            if k.SnapshotId != new.id
        ]
        items.append(BackupItem(new.id, new.time, new.backup_type == "full", _parent(new)))
    else:
        pid = item.Partition.PartitionId
        items = [
            BackupItem(s.id, s.time, s.backup_type == "full", _parent(s))
            for s in engine.snapshots(storage)
            if s.partition and s.partition.partition_id == pid
        ]
    decision = apply_basic_retention(
        items, duration=timedelta(hours=rule.hours), minimum=rule.minimum, now=now
    )
    engine.forget(storage, decision.remove)
    if decision.remove and is_db_source(item.Partition.Source):
        expire_db(item, engine, storage)  # the WAL no kept base backup needs
    return decision.remove


def _restore(item: WorkItem, engine: BackupEngine, storage: Any, progress: ProgressSink) -> None:
    part = item.Partition
    snapshot_id = item.restore().snapshot_id
    source = part.Source
    target = part.RestoreTo
    if is_db_source(source):
        restore_db(item, engine, storage, progress)
        return
    if source.startswith("dir:") and (target is None or target.startswith("dir:")):
        dest = Path((target or source)[4:])
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{dest.name}.restore-", dir=dest.parent) as tmp:
            snap = engine.restore_dir(storage, snapshot_id, Path(tmp), progress=progress)
            if snap.source_kind != "dir" or not snap.paths:
                raise SourceError(f"backup {snap.short_id} holds a stream, not a directory")
            swap_in(Path(tmp) / Path(snap.paths[0]).name, dest)
        return
    if target is None:
        raise SourceError(
            "this partition's source is a command: register a restore target "
            "(--restore-to command:CMD or file:PATH) to restore it"
        )
    kind, where = target.split(":", 1)
    if kind == "command":
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(where, shell=True, stdin=subprocess.PIPE, stderr=err)  # noqa: S602
            assert proc.stdin is not None
            try:
                engine.dump(storage, snapshot_id, cast(BinaryIO, proc.stdin))
            finally:
                proc.stdin.close()
                code = proc.wait()
            if code != 0:
                err.seek(0)
                tail = err.read()[-500:].decode(errors="replace").strip()
                raise SourceError(f"the restore command exited with status {code}: {tail}")
        return
    path = Path(where) / STREAM_NAME if kind == "dir" else Path(where)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            engine.dump(storage, snapshot_id, out)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp_name).replace(path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _clean(item: WorkItem, engine: BackupEngine, storage: Any) -> list[str]:
    pid = item.Partition.PartitionId
    ids = [
        s.id for s in engine.snapshots(storage) if s.partition and s.partition.partition_id == pid
    ]
    engine.forget(storage, ids)
    return ids


def execute(
    item: WorkItem,
    *,
    engine: BackupEngine,
    open_storage: StorageOpener,
    progress: ProgressSink,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Outcome:
    """Run one work item; return the outcome to report (stamped with the item's attempt)."""
    if item.Kind not in KINDS:
        return Outcome.refused(item.Kind, attempt=item.Attempt)
    try:
        outcome = _run(item, engine, open_storage, progress, clock)
    except SafeholdError as exc:
        outcome = Outcome.failure(exc.code, exc.message)
    except ValidationError as exc:
        # A work item this agent cannot read (a newer controller's, say): refused.
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors(include_input=False))
        outcome = Outcome.failure("E_INVALIDARG", f"malformed {item.Kind} work item: {fields}")
    except OSError as exc:
        outcome = Outcome.failure(
            "FABRIC_E_BACKUPCOPIER_UNEXPECTED_ERROR", f"{exc.strerror}: {exc.filename}"
        )
    except Exception as exc:
        outcome = _unexpected(exc)
    return outcome.with_attempt(item.Attempt)


def _run(
    item: WorkItem,
    engine: BackupEngine,
    open_storage: StorageOpener,
    progress: ProgressSink,
    clock: Callable[[], datetime],
) -> Outcome:
    if item.Storage is None:
        raise SourceError(f"the {item.Kind} job names no storage")
    storage = open_storage(parse_storage(item.Storage))
    try:
        if item.Kind == "backup":
            with around_backup(item) as hooks:  # the partition's before/after commands
                snap = _backup(item, engine, storage, progress, clock())
            removed = _retention(item, engine, storage, snap, clock())
            ref = SnapshotRef(Id=snap.id, Time=format_time(snap.time), Size=snap.sizes.logical)
            return Outcome(State="Success", Snapshot=ref, Removed=removed, Result=hooks.result())
        if item.Kind == "restore":
            _restore(item, engine, storage, progress)
            return Outcome(State="Success")
        if item.Kind == "clean":
            return Outcome(State="Success", Removed=_clean(item, engine, storage))
        if item.Kind == "drill":  # restore into a sandbox and validate (agent.drill)
            return run_drill(item, engine, storage, progress, clock)
        if item.Kind in GROUP_KINDS:  # a consistency group, every member at once (agent.group)
            return run_group(item, engine, storage, progress, clock)
        return Outcome.refused(item.Kind)  # pragma: no cover - KINDS is checked first
    finally:
        storage.close()


def _unexpected(exc: BaseException) -> Outcome:
    # The message of an unexpected exception could quote anything; only its type
    # goes to the controller, the traceback to the agent's log.
    log.exception("unexpected error in a job", exc_info=exc)
    return Outcome.failure(
        "E_UNEXPECTED", f"unexpected {type(exc).__name__} in the agent; see the agent's log"
    )
