"""
The records of consistency groups as the service's use cases share them: the
errors, reading and checking a group and its members, the storage its points
are in, and their JSON (``service.groups`` is the entry point).
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from safehold.core.errors import ConflictError, NotFoundError, UsageError
from safehold.core.policy import EntityRef, PolicyError, Schedule, StorageSpec, parse_schedule
from safehold.core.slots import slot_after, slot_at_or_after
from safehold.core.snapshot import format_time
from safehold.core.work import GroupMember, GroupValidator
from safehold.service.context import ServiceContext
from safehold.service.entities import effective_for
from safehold.service.errors import BackupNotEnabled
from safehold.service.model import (
    ACTIVE_STATES,
    JobRecord,
    PartitionRecord,
    backup_id_for,
)
from safehold.service.policies import load_policy
from safehold.service.sql_groups import GroupRecord, GroupSchedule, PointRecord, SlotKind
from safehold.service.storages import storage_key
from safehold.service.uow import UnitOfWork

__all__ = [
    "GROUP_KINDS",
    "GROUP_SOURCES",
    "POINT_TAG",
    "GroupBusy",
    "GroupInvalid",
    "GroupMemberTaken",
    "GroupNotFound",
    "GroupPointNotFound",
    "active_jobs",
    "anchor",
    "check_name",
    "check_validator",
    "common_storage",
    "get_record",
    "group_jobs",
    "group_json",
    "guid",
    "job_json",
    "last_storage",
    "member_partitions",
    "member_specs",
    "next_slot",
    "parse_group_schedule",
    "parse_validators",
    "plan_schedule",
    "point_json",
    "slot_key",
]

GROUP_KINDS = ("group-backup", "group-restore")
#: The sources ``db.groups`` brings to one point.
GROUP_SOURCES = ("dir:", "postgres:")
#: How the library stores a point (``db.groups``; the service does not import ``db``).
POINT_TAG = "group-point"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class GroupNotFound(NotFoundError):
    """No consistency group has this name."""

    code = "SAFEHOLD_E_GROUP_NOT_FOUND"


class GroupPointNotFound(NotFoundError):
    """The group has no such point."""

    code = "SAFEHOLD_E_GROUP_POINT_NOT_FOUND"


class GroupInvalid(UsageError):
    """A group's definition or request is malformed (an unknown member, a bad validator)."""

    code = "SAFEHOLD_E_GROUP_INVALID"


class GroupMemberTaken(ConflictError):
    """A partition is a member of another group already."""

    code = "SAFEHOLD_E_GROUP_MEMBER_TAKEN"


class GroupBusy(ConflictError):
    """The group, or one of its members, has a job accepted or running."""

    code = "SAFEHOLD_E_GROUP_BUSY"


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise GroupInvalid(f"group name {name[:140]!r}: 1-128 letters, digits, '.', '_', '-'")


def guid(value: object) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise GroupInvalid(f"member {str(value)[:80]!r} is not a partition GUID") from None


def parse_validators(raw: object) -> list[GroupValidator]:
    if not isinstance(raw, list):
        raise GroupInvalid("Validators is a list")
    try:
        return [GroupValidator.model_validate(v) for v in raw]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise GroupInvalid(f"a validator: {where}: {first['msg']}") from None


def parse_group_schedule(raw: object, field: str) -> Schedule | None:
    """
    A group's ``BackupSchedule`` or ``DrillSchedule``: an SF ``Schedule``
    (``FrequencyBased`` or ``TimeBased``), checked as a policy's is, or None.

    Raises:
        PolicyError: 400 ``E_INVALIDARG``, naming the field.
    """
    if raw is None:
        return None
    try:
        return parse_schedule(raw)
    except PolicyError as exc:
        raise PolicyError(f"{field}: {exc.message}") from None


def slot_key(name: str, kind: SlotKind) -> str:
    """What spreads a group's slots (``core.slots`` hashes it as it does a partition id)."""
    return f"group-{kind}:{name}"


def plan_schedule(
    name: str,
    kind: SlotKind,
    schedule: Schedule | None,
    old: GroupSchedule | None,
    now: datetime,
    spread: float,
) -> GroupSchedule | None:
    """
    The schedule a group's definition gives it: an unchanged schedule keeps its
    anchor and next slot; a new or changed one is anchored *now* and is due at
    its first slot (at once with no spread, as a partition newly protected).
    """
    if schedule is None:
        return None
    doc = schedule.to_json()
    if old is not None and old.doc == doc and old.next_at is not None:
        return GroupSchedule(doc, old.since, old.next_at)
    first = slot_at_or_after(
        schedule, now, anchor=now, partition_id=slot_key(name, kind), spread=spread
    )
    return GroupSchedule(doc, now, first)


def next_slot(
    name: str, kind: SlotKind, s: GroupSchedule, after: datetime, spread: float
) -> datetime:
    """The group's first *kind* slot strictly after *after* (missed slots are not caught up)."""
    return slot_after(
        parse_schedule(s.doc),
        after,
        anchor=s.since,
        partition_id=slot_key(name, kind),
        spread=spread,
    )


def check_validator(v: GroupValidator, parts: dict[str, PartitionRecord]) -> None:
    for role, pid, prefix in (
        ("Database", v.Database, "postgres:"),
        ("Directory", v.Directory, "dir:"),
    ):
        p = parts.get(pid)
        if p is None or not p.source.startswith(prefix):
            raise GroupInvalid(
                f"validator {v.Kind}: {role} {pid!r} must be a {prefix} member of the group"
            )


def member_partitions(uow: UnitOfWork, ids: list[str]) -> dict[str, PartitionRecord]:
    """The members' partitions, in order; a 400 names one unknown or unusable."""
    out = {}
    for pid in ids:
        p = uow.partitions.get(pid)
        if p is None:
            raise GroupInvalid(f"partition {pid} is not registered")
        if not p.source.startswith(GROUP_SOURCES):
            raise GroupInvalid(
                f"partition {pid}: a group holds dir: and postgres: sources, "
                f"not {p.source.split(':', 1)[0]}:"
            )
        out[pid] = p
    return out


def get_record(uow: UnitOfWork, name: str) -> GroupRecord:
    g = uow.groups.get(name)
    if g is None:
        raise GroupNotFound(f"consistency group {name!r} does not exist")
    return g


def anchor(parts: dict[str, PartitionRecord]) -> PartitionRecord:
    """The partition a group's jobs belong to: the one pinned to an agent, else the first."""
    pinned = {p.agent for p in parts.values() if p.agent}
    if len(pinned) > 1:
        raise GroupInvalid(
            f"the members are pinned to different agents ({', '.join(sorted(pinned))}): "
            "one agent must serve every member"
        )
    return next((p for p in parts.values() if p.agent), next(iter(parts.values())))


def group_jobs(uow: UnitOfWork, g: GroupRecord) -> list[JobRecord]:
    """The group's newest backup and restore jobs (on any member: the anchor may change)."""
    out = []
    for kind in GROUP_KINDS:
        found = [uow.jobs.latest(pid, [kind]) for pid in g.members]
        mine = [j for j in found if j is not None and j.params.get("group") == g.name]
        if mine:
            out.append(max(mine, key=lambda j: j.created_at))
    return out


def active_jobs(uow: UnitOfWork, g: GroupRecord) -> list[JobRecord]:
    return [j for j in group_jobs(uow, g) if j.state in ACTIVE_STATES]


def group_json(uow: UnitOfWork, g: GroupRecord) -> dict[str, Any]:
    return {
        "Name": g.name,
        "Members": g.members,
        "Validators": g.validators,
        "CreatedUtc": format_time(g.created_at) if g.created_at else None,
        "BackupSchedule": g.backup.doc if g.backup else None,
        "DrillSchedule": g.drill.doc if g.drill else None,
        "NextBackupUtc": _next(g.backup),
        "NextDrillUtc": _next(g.drill),
        "ScheduleNotes": {
            k: s.note for k, s in (("Backup", g.backup), ("Drill", g.drill)) if s and s.note
        },
        "Jobs": [job_json(j) for j in group_jobs(uow, g)],
    }


def _next(s: GroupSchedule | None) -> str | None:
    return format_time(s.next_at) if s is not None and s.next_at is not None else None


def job_json(j: JobRecord) -> dict[str, Any]:
    return {
        "JobId": j.id,
        "Kind": j.kind,
        "Group": j.params.get("group"),
        "State": j.state,
        "Scheduled": j.scheduled,
        "CreatedUtc": format_time(j.created_at),
        "FinishedUtc": format_time(j.finished_at) if j.finished_at else None,
        "Agent": j.agent_id,
        "Failure": (
            {"Code": j.failure_code, "Message": j.failure_message} if j.failure_code else None
        ),
        "PointId": j.params.get("point_id"),
    }


def member_specs(parts: dict[str, PartitionRecord]) -> list[dict[str, Any]]:
    return [
        GroupMember(
            PartitionId=p.partition_id, Source=p.source, RestoreTo=p.restore_to
        ).model_dump()
        for p in parts.values()
    ]


def common_storage(
    ctx: ServiceContext, uow: UnitOfWork, parts: dict[str, PartitionRecord]
) -> StorageSpec:
    """The one storage every member's effective policy backs up to."""
    found: dict[str, StorageSpec] = {}
    for p in parts.values():
        eff = effective_for(uow, EntityRef("Partition", p.partition_id))
        if eff.policy_name is None:
            raise BackupNotEnabled(f"member {p.partition_id} has no backup policy: enable one")
        spec = load_policy(ctx, uow, eff.policy_name).storage
        found.setdefault(storage_key(spec), spec)
    if len(found) != 1:
        raise GroupInvalid(
            "the members' policies back up to different storages: a group's point and "
            "every member's backup must be in one storage"
        )
    return next(iter(found.values()))


def last_storage(uow: UnitOfWork, g: GroupRecord) -> dict[str, Any] | None:
    """The storage (sealed) of the group's newest point, or of its newest backup job."""
    recorded = uow.groups.points(g.name)
    if recorded:
        return recorded[-1].storage
    done = [j for j in group_jobs(uow, g) if j.kind == "group-backup" and j.state == "Success"]
    return dict(done[0].params["storage"]) if done else None


def point_json(p: PointRecord) -> dict[str, Any]:
    return {
        "PointId": p.id,
        "Group": p.group,
        "TimeUtc": format_time(p.time),
        "RestorePoint": p.restore_point,
        "SnapshotId": p.snapshot_id,
        "Members": {
            pid: {"BackupId": backup_id_for(s), "SnapshotId": s} for pid, s in p.members.items()
        },
        "JobId": p.job_id,
    }
