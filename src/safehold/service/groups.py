"""
Consistency groups in the service: partitions backed up as one group at one
point, restored together to one point, and checked with cross-reference validators.

A group (``PUT /safehold/groups/{name}``) lists member partitions, ``dir:`` and
``postgres:`` sources (what ``db.groups`` brings to one point); a partition is
in one group at most. A group backup is **one** job of kind ``group-backup``
and a group restore one of kind ``group-restore``: one agent runs
``db.groups.backup_group`` or ``restore_group`` over every member, so it must
serve every member's source. The job belongs to the group's *anchor* partition
(the first member pinned to an agent, else the first member), so the claim
rules of ordinary jobs apply: one job of that partition at a time, and only
its pinned agent takes it. Members pinned to different agents are refused.

Each member's snapshot becomes an ordinary catalogued backup of that
partition (it shows in ``GetBackups``), and the point is recorded with every
member's snapshot. Both happen in ``record_outcome`` when the job completes
(``jobs.complete``, in its transaction). ``sync_points`` records the same from
the storage alone (the point is a snapshot of its own there): a restore runs it
before it chooses a point, so a point the catalog lost (a catalog restored from
an older configuration backup) is still found. It lists the repository's
snapshots, so nothing that is polled runs it.

All members must back up to one storage (their effective policies'), since
one repository holds the point: a PostgreSQL member's WAL archive must be in it.

A group may carry a ``BackupSchedule`` and a ``DrillSchedule`` (SF schedules);
``service.group_schedule`` starts the same backup and drill as the requests here,
through ``backup_storage`` + ``accept_backup`` and ``accept_restore``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from safehold.core.errors import ConflictError
from safehold.core.policy import PolicyError, StorageSpec, parse_storage
from safehold.core.snapshot import format_time, parse_time
from safehold.core.work import GroupPointRef, SnapshotRef
from safehold.service.context import ServiceContext
from safehold.service.drill_records import DrillRun, DrillState
from safehold.service.errors import BackupNotEnabled
from safehold.service.group_model import (
    GROUP_KINDS,
    GroupBusy,
    GroupInvalid,
    GroupMemberTaken,
    GroupNotFound,
    GroupPointNotFound,
    active_jobs,
    anchor,
    check_name,
    check_validator,
    common_storage,
    get_record,
    group_json,
    guid,
    job_json,
    last_storage,
    member_partitions,
    member_specs,
    parse_group_schedule,
    parse_validators,
    plan_schedule,
    point_json,
)
from safehold.service.group_points import list_points, record_outcome, sync_points
from safehold.service.jobs import refuse_if_busy
from safehold.service.model import JobRecord, PartitionRecord, backup_id_for
from safehold.service.sql_groups import GroupRecord, PointRecord
from safehold.service.storages import ensure_repository
from safehold.service.uow import UnitOfWork

__all__ = [
    "GROUP_KINDS",
    "GroupBusy",
    "GroupInvalid",
    "GroupMemberTaken",
    "GroupNotFound",
    "GroupPointNotFound",
    "RestoreArgs",
    "accept_backup",
    "accept_restore",
    "backup_storage",
    "delete_group",
    "get_group",
    "get_job",
    "list_groups",
    "list_points",
    "put_group",
    "record_outcome",
    "request_backup",
    "request_restore",
    "restore_args",
    "sync_points",
]

# --- Definitions ---------------------------------------------------------------------


def put_group(ctx: ServiceContext, name: str, body: object) -> dict[str, Any]:
    """
    Create or replace group *name*: ``{"Members": [partition ids], "Validators": [...],
    "BackupSchedule": {...}, "DrillSchedule": {...}}`` (schedules optional: SF's
    ``FrequencyBased`` or ``TimeBased`` schedule objects).

    Raises:
        GroupInvalid: a bad name, no members, an unknown partition, a source no
            group can hold, a repeated member, a validator naming a non-member.
        PolicyError: a bad schedule (400 ``E_INVALIDARG``, naming the field).
        GroupMemberTaken: a member is in another group.
    """
    check_name(name)
    if not isinstance(body, dict) or not isinstance(body.get("Members"), list):
        raise GroupInvalid('give {"Members": [partition ids], "Validators": [...]}')
    ids = [guid(x) for x in body["Members"]]
    if not ids:
        raise GroupInvalid("a group needs at least one member")
    if len(set(ids)) != len(ids):
        raise GroupInvalid("a partition is listed twice among the members")
    validators = parse_validators(body.get("Validators") or [])
    backup_schedule = parse_group_schedule(body.get("BackupSchedule"), "BackupSchedule")
    drill_schedule = parse_group_schedule(body.get("DrillSchedule"), "DrillSchedule")
    with ctx.uow() as uow:
        parts = member_partitions(uow, ids)
        for v in validators:
            check_validator(v, parts)
        taken = {pid: g for pid, g in uow.groups.group_of(ids).items() if g != name}
        if taken:
            pid, other = next(iter(taken.items()))
            raise GroupMemberTaken(f"partition {pid} is a member of group {other!r} already")
        old, now, spread = uow.groups.get(name), ctx.clock(), ctx.schedule_spread
        rec = GroupRecord(
            name,
            ids,
            [v.model_dump() for v in validators],
            backup=plan_schedule(
                name, "backup", backup_schedule, old.backup if old else None, now, spread
            ),
            drill=plan_schedule(
                name, "drill", drill_schedule, old.drill if old else None, now, spread
            ),
        )
        uow.groups.put(rec, now)
        uow.commit()
        return group_json(uow, uow.groups.get(name) or rec)


def get_group(ctx: ServiceContext, name: str) -> dict[str, Any]:
    """Group *name*, its members and its newest jobs (404 if there is none)."""
    with ctx.reader() as uow:
        return group_json(uow, get_record(uow, name))


def list_groups(ctx: ServiceContext) -> list[dict[str, Any]]:
    """Every group."""
    with ctx.reader() as uow:
        return [group_json(uow, g) for g in uow.groups.list()]


def delete_group(ctx: ServiceContext, name: str) -> None:
    """Forget group *name* (its backups stay: members' backups and the points in storage)."""
    with ctx.uow() as uow:
        g = get_record(uow, name)
        if active_jobs(uow, g):
            raise GroupBusy(f"group {name!r} has a job accepted or running")
        uow.groups.delete(name)
        uow.commit()


def request_backup(
    ctx: ServiceContext, name: str, *, storage_doc: object | None = None, timeout_minutes: int = 60
) -> JobRecord:
    """
    Accept a backup of group *name*: one ``group-backup`` job.

    The storage is *storage_doc*, or the one every member's policy backs up to.

    Raises:
        GroupNotFound, GroupInvalid, BackupNotEnabled, GroupBusy (a group job, or
        a member's restore or on-demand backup, is accepted or running),
        StorageError (the storage cannot be reached).
    """
    timeout = _timeout(timeout_minutes)
    storage = backup_storage(ctx, name, storage_doc)
    with ctx.uow() as uow:
        job = accept_backup(ctx, uow, name, storage, timeout)
        uow.commit()
    return job


def backup_storage(
    ctx: ServiceContext, name: str, storage_doc: object | None = None
) -> StorageSpec:
    """
    The storage a backup of group *name* goes to, its repository made ready: a
    backup's first step, with its storage I/O outside any catalog transaction.

    Raises:
        as ``request_backup`` (GroupBusy: as read now; ``accept_backup`` checks again).
    """
    explicit = parse_storage(storage_doc, "BackupStorage") if storage_doc is not None else None
    with ctx.uow() as uow:
        g = get_record(uow, name)
        parts = member_partitions(uow, g.members)
        storage = explicit or _default_storage(ctx, uow, g, parts)
        _refuse_if_busy(uow, g)
    ensure_repository(ctx, storage)  # outside the transaction: it may wait on the storage
    return storage


def accept_backup(
    ctx: ServiceContext,
    uow: UnitOfWork,
    name: str,
    storage: StorageSpec,
    timeout: timedelta,
    *,
    scheduled: bool = False,
) -> JobRecord:
    """
    A backup's second step, in the caller's transaction (which commits): lock
    the members, refuse a busy group, and save the ``group-backup`` job. A
    *scheduled* one (``group_schedule``) is refused by any job of a member.
    """
    g = get_record(uow, name)
    parts = _lock(uow, g)
    _refuse_if_busy(uow, g, strict=scheduled)
    now = ctx.clock()
    job = JobRecord(
        id=str(uuid.uuid4()),
        partition_id=anchor(parts).partition_id,
        kind="group-backup",
        state="Accepted",
        scheduled=scheduled,
        created_at=now,
        deadline=now + timeout,
        params={
            "storage": ctx.secrets.seal_storage(storage.to_json()),
            "group": name,
            "members": member_specs(parts),
            "epochs": {
                pid: [p.epoch.data_loss_number, p.epoch.configuration_number]
                for pid, p in parts.items()
            },
            "lsns": {pid: p.lsn + 1 for pid, p in parts.items()},
        },
    )
    uow.jobs.save(job)
    return job


def _default_storage(
    ctx: ServiceContext, uow: UnitOfWork, g: GroupRecord, parts: dict[str, PartitionRecord]
) -> StorageSpec:
    """The members' policies' storage; without policies, the one of the group's newest point."""
    try:
        return common_storage(ctx, uow, parts)
    except BackupNotEnabled:
        sealed = last_storage(uow, g)
        if sealed is None:
            raise
        return parse_storage(ctx.secrets.open_storage(sealed), "BackupStorage")


def _timeout(minutes: int) -> timedelta:
    if not isinstance(minutes, int) or not 1 <= minutes <= 24 * 60:
        raise PolicyError("TimeoutMinutes is 1 to 1440")
    return timedelta(minutes=minutes)


def _lock(uow: UnitOfWork, g: GroupRecord) -> dict[str, PartitionRecord]:
    """Lock every member's row (in id order, so two requests never deadlock)."""
    for pid in sorted(g.members):
        uow.lock_partition(pid)
    return member_partitions(uow, g.members)


def _refuse_if_busy(uow: UnitOfWork, g: GroupRecord, *, strict: bool = False) -> None:
    """
    Refuse a group job while the group has one, or a member a restore or
    on-demand backup (*strict*, for the scheduler: any job of a member).
    """
    if active_jobs(uow, g):
        raise GroupBusy(f"group {g.name!r} has a job accepted or running")
    busy = sorted(uow.jobs.busy_partitions(g.members)) if strict else []
    if busy:
        raise GroupBusy(f"group {g.name!r}: member {busy[0]} has a job accepted or running")
    for pid in g.members:
        try:
            refuse_if_busy(uow, pid)
        except ConflictError as exc:
            raise GroupBusy(f"group {g.name!r}: {exc.message}") from exc


# --- Restores and drills ---------------------------------------------------------------


@dataclass(frozen=True)
class RestoreArgs:
    """A restore or drill request, checked: the point (an id or a time) and the timeout."""

    point_id: object
    at: object
    timeout: timedelta
    drill: bool


def restore_args(body: object, *, drill: bool) -> RestoreArgs:
    """Check a restore's or drill's body (GroupInvalid, PolicyError: 400)."""
    doc = body if isinstance(body, dict) else {}
    point_id, at = doc.get("Point"), doc.get("Time")
    if point_id is not None and at is not None:
        raise GroupInvalid("give Point or Time, not both")
    if point_id is None and at is None and not drill:
        raise GroupInvalid('give {"Point": id} or {"Time": "2026-12-01T14:03:07Z"}')
    return RestoreArgs(point_id, at, _timeout(int(doc.get("TimeoutMinutes", 60))), drill)


def request_restore(
    ctx: ServiceContext, name: str, body: object, *, drill: bool = False
) -> JobRecord:
    """
    Accept a restore of group *name* to one point: ``{"Point": id}`` or ``{"Time": iso}``
    (the newest point at or before it); a *drill* restores into a sandbox and
    runs the validators there (``{}``: the newest point).

    Raises:
        GroupNotFound, GroupPointNotFound, GroupInvalid (no such point time, a
        member without a restore target), GroupBusy.
    """
    args = restore_args(body, drill=drill)
    sync_points(ctx, name)  # storage I/O: before the transaction
    with ctx.uow() as uow:
        job = accept_restore(ctx, uow, name, args)
        uow.commit()
    return job


def accept_restore(
    ctx: ServiceContext,
    uow: UnitOfWork,
    name: str,
    args: RestoreArgs,
    *,
    scheduled: bool = False,
) -> JobRecord:
    """
    A restore's or drill's step in the catalog, in the caller's transaction
    (which commits; ``sync_points`` ran before it): choose the point, lock the
    members, refuse a busy group, save the ``group-restore`` job (and a drill's
    run: trigger ``Schedule`` when *scheduled*, as ``accept_backup``).
    """
    drill = args.drill
    g = get_record(uow, name)
    point = _choose_point(uow, g, args.point_id, args.at)
    parts = _lock(uow, g)
    missing = [pid for pid in g.members if pid not in point.members]
    if missing:
        raise GroupInvalid(
            f"point {point.id} has no snapshot of member {missing[0]} (it joined later)"
        )
    if not drill:
        for p in parts.values():
            if p.source.startswith("postgres:") and not (p.restore_to or "").startswith("pgdata:"):
                raise GroupInvalid(
                    f"member {p.partition_id} restores into a data directory: "
                    "register its restore target as pgdata:PATH"
                )
    _refuse_if_busy(uow, g, strict=scheduled)
    now = ctx.clock()
    ref = GroupPointRef(
        Group=name,
        Time=format_time(point.time),
        RestorePoint=point.restore_point,
        SnapshotId=point.snapshot_id,
        Members={pid: SnapshotRef(Id=sid, Time="") for pid, sid in point.members.items()},
    )
    job = JobRecord(
        id=str(uuid.uuid4()),
        partition_id=anchor(parts).partition_id,
        kind="group-restore",
        state="Accepted",
        scheduled=scheduled,
        created_at=now,
        deadline=now + args.timeout,
        params={
            "storage": point.storage,
            "group": name,
            "point_id": point.id,
            "members": member_specs(parts),
            "point": ref.model_dump(),
            "validators": g.validators,
            "drill": drill,
        }
        | ({"drill_id": str(uuid.uuid4())} if drill else {}),
    )
    uow.jobs.save(job)
    if drill:
        _drill_run(uow, job, point, now, "Schedule" if scheduled else "Manual")
    return job


def _drill_run(
    uow: UnitOfWork, job: JobRecord, point: PointRecord, now: datetime, trigger: str
) -> None:
    """
    Record a group drill as a drill run of the anchor partition (the job's), so that
    it shows in the drill history, metrics and health as any drill does; its
    policy reads ``group:<name>`` and it restored the anchor's snapshot of the point.
    """
    run = DrillRun(
        id=job.params["drill_id"],
        partition_id=job.partition_id,
        policy_name=f"group:{point.group}",
        job_id=job.id,
        trigger=trigger,
        state="Accepted",
        created_at=now,
        backup_id=backup_id_for(point.members[job.partition_id]),
        backup_time=point.time,
    )
    uow.drills.add_run(run)
    st = uow.drills.state(job.partition_id) or DrillState(job.partition_id)
    st.last_run_id, st.last_started_at = run.id, now
    uow.drills.save_state(st)


def _choose_point(uow: UnitOfWork, g: GroupRecord, point_id: object, at: object) -> PointRecord:
    recorded = uow.groups.points(g.name)
    if point_id is not None:
        found = [p for p in recorded if p.id == str(point_id) or p.snapshot_id == str(point_id)]
        if not found:
            raise GroupPointNotFound(f"group {g.name!r} has no point {str(point_id)[:80]!r}")
        return found[0]
    if at is None:
        if not recorded:
            raise GroupPointNotFound(f"group {g.name!r} has no point yet: back it up first")
        return recorded[-1]
    try:
        when = parse_time(str(at))
    except ValueError:
        raise GroupInvalid(f"Time {str(at)[:80]!r} is not an ISO 8601 time") from None
    before = [p for p in recorded if p.time <= when]
    if not before:
        raise GroupInvalid(
            f"group {g.name!r} has no point at or before {format_time(when)} "
            "(a group is consistent only at its points)"
        )
    return before[-1]


def get_job(ctx: ServiceContext, name: str, job_id: str) -> dict[str, Any]:
    """
    One job of group *name*. A backup that succeeded shows its point (recorded
    by the job's completion; polled by ``--wait``, so it reads no storage).
    """
    with ctx.reader() as uow:
        get_record(uow, name)
        job = uow.jobs.get(job_id)
    if job is None or job.kind not in GROUP_KINDS or job.params.get("group") != name:
        raise GroupNotFound(f"group {name!r} has no job {job_id[:40]!r}")
    doc = job_json(job)
    if job.kind == "group-backup" and job.state == "Success":
        with ctx.reader() as uow:
            mine = [p for p in uow.groups.points(name) if p.job_id in (job.id, None)]
            after = [p for p in mine if p.time >= job.created_at]
            doc["Point"] = point_json(after[0]) if after else None
    return doc
