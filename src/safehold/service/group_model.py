"""
The records of consistency groups as the service's use cases share them: the
errors, reading and checking a group and its members, the storage its points
are in, and their JSON (``service.groups`` is the entry point).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from pydantic import ValidationError

from safehold.core.errors import ConflictError, NotFoundError, UsageError
from safehold.core.policy import EntityRef, StorageSpec
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
from safehold.service.sql_groups import GroupRecord, PointRecord
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
    "parse_validators",
    "point_json",
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
        "Jobs": [job_json(j) for j in group_jobs(uow, g)],
    }


def job_json(j: JobRecord) -> dict[str, Any]:
    return {
        "JobId": j.id,
        "Kind": j.kind,
        "Group": j.params.get("group"),
        "State": j.state,
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
