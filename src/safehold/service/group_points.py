"""
The points of consistency groups: recorded from a group backup's outcome
(``record_outcome``, for the job's completion) or from the storage alone
(``sync_points``), each member's snapshot as an ordinary backup of it.
"""

from __future__ import annotations

import io
import json
from datetime import datetime
from typing import Any

from safehold.core.policy import parse_storage
from safehold.core.snapshot import Epoch, format_time, parse_time
from safehold.core.work import GroupPointRef, Outcome, SnapshotRef
from safehold.service.context import ServiceContext
from safehold.service.errors import BackupNotEnabled
from safehold.service.group_model import (
    POINT_TAG,
    GroupInvalid,
    common_storage,
    get_record,
    last_storage,
    member_partitions,
    point_json,
)
from safehold.service.model import (
    BackupOutcome,
    BackupRecord,
    JobRecord,
    backup_id_for,
    backup_location,
)
from safehold.service.sql_groups import GroupRecord, PointRecord
from safehold.service.uow import UnitOfWork

__all__ = ["list_points", "record_outcome", "sync_points"]


def record_outcome(uow: UnitOfWork, job: JobRecord, outcome: Outcome, now: datetime) -> None:
    """
    Record a group job's outcome: a backup's members' backups and its point; a
    restore's new epoch for every member (a restore is a data loss, as for one
    partition; a drill changes nothing).

    Meant for the job's completion (``jobs.complete``), in its transaction. A
    failed backup is recorded as each member's backup outcome; a repeat changes nothing.
    """
    del now
    members = [str(m["PartitionId"]) for m in job.params.get("members", [])]
    if job.kind == "group-restore":
        if outcome.State == "Success" and not job.params.get("drill"):
            for pid in members:
                p = uow.partitions.get(pid)
                if p is not None:
                    p.epoch = Epoch(p.epoch.data_loss_number + 1, p.epoch.configuration_number)
                    uow.partitions.save(p)
        return
    if job.kind != "group-backup":
        return
    if outcome.State != "Success" or outcome.Group is None:
        err = outcome.Error
        failure = f"{err.Code}: {err.Message}" if err else "the group backup failed"
        for pid in members:
            uow.partitions.record_backup_outcome(
                pid, state="Failure", failure=failure, good_at=None
            )
        return
    _record_point(uow, job.params["group"], outcome.Group, job.params, job.id)


def _record_point(
    uow: UnitOfWork, group: str, ref: GroupPointRef, params: dict[str, Any], job_id: str | None
) -> bool:
    """Record the point and each member's snapshot as its backup; False if known already."""
    point = PointRecord(
        id=backup_id_for(ref.SnapshotId),
        group=group,
        time=parse_time(ref.Time),
        restore_point=ref.RestorePoint,
        snapshot_id=ref.SnapshotId,
        members={pid: s.Id for pid, s in ref.Members.items()},
        storage=params["storage"],
        job_id=job_id,
    )
    if not uow.groups.add_point(point):
        return False
    for pid, snap in ref.Members.items():
        p = uow.partitions.get(pid)
        if p is None:  # unregistered since: the point still names its snapshot
            continue
        epoch = params.get("epochs", {}).get(pid) or [
            p.epoch.data_loss_number,
            p.epoch.configuration_number,
        ]
        lsn = int(params.get("lsns", {}).get(pid, p.lsn + 1))
        created = parse_time(snap.Time)
        backup_id = backup_id_for(snap.Id)
        uow.backups.add(
            BackupRecord(
                backup_id=backup_id,
                snapshot_id=snap.Id,
                partition_id=pid,
                application=p.application,
                service=p.service,
                backup_type="Full",
                chain_id=backup_id,
                parent_id=None,
                location=backup_location(p.application, p.service, pid, created),
                epoch=Epoch(*epoch),
                lsn=lsn,
                created_at=created,
                size_bytes=snap.Size,
                storage=params["storage"],
                key=p.key,
            )
        )
        p.lsn = max(p.lsn, lsn)
        uow.partitions.save(p, BackupOutcome("Success", None, created))
    return True


def sync_points(ctx: ServiceContext, name: str) -> int:
    """
    Record the points of group *name* that its storage holds and the catalog lacks.

    The storage is the one the group's points are in, else its members' policies'.
    Reads the storage outside any catalog transaction; returns how many were added.
    """
    with ctx.reader() as uow:
        g = get_record(uow, name)
        known = {p.id for p in uow.groups.points(name)}
        sealed = _sealed_storage(ctx, uow, g)
    if sealed is None:
        return 0
    store = ctx.check_storage(parse_storage(ctx.secrets.open_storage(sealed), "Storage"))
    try:
        snaps = ctx.engine.snapshots(store)
        by_id = {s.id: s for s in snaps}
        found = []
        for s in snaps:
            if POINT_TAG not in s.tags or f"group={name}" not in s.tags:
                continue
            if backup_id_for(s.id) in known:
                continue
            buf = io.BytesIO()
            ctx.engine.dump(store, s.id, buf)
            doc = json.loads(buf.getvalue())
            members = {}
            for pid, sid in dict(doc["snapshots"]).items():
                m = by_id.get(sid)
                if m is not None:
                    members[pid] = SnapshotRef(
                        Id=m.id, Time=format_time(m.time), Size=m.sizes.logical
                    )
            ref = GroupPointRef(
                Group=name,
                Time=str(doc["time"]),
                RestorePoint=str(doc["restore_point"]),
                SnapshotId=s.id,
                Members=members,
            )
            found.append(ref)
    finally:
        store.close()
    added = 0
    with ctx.uow() as uow:
        get_record(uow, name)
        for ref in found:
            added += _record_point(uow, name, ref, {"storage": sealed}, None)
        uow.commit()
    return added


def _sealed_storage(ctx: ServiceContext, uow: UnitOfWork, g: GroupRecord) -> dict[str, Any] | None:
    last = last_storage(uow, g)
    if last is not None:
        return last
    try:
        spec = common_storage(ctx, uow, member_partitions(uow, g.members))
    except (BackupNotEnabled, GroupInvalid):
        return None
    return ctx.secrets.seal_storage(spec.to_json())


def list_points(ctx: ServiceContext, name: str) -> list[dict[str, Any]]:
    """
    The points of group *name* the catalog holds, oldest first (a job's completion
    records them; a restore also looks for points only its storage holds, as
    after a catalog restored from an older configuration backup).
    """
    with ctx.reader() as uow:
        get_record(uow, name)
        return [point_json(p) for p in uow.groups.points(name)]
