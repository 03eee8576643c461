"""
The catalog store of consistency groups (``GroupRepo``, ``uow.groups``), and its tables.

The tables belong to the catalog (revisions 0006 and 0007); they are declared
here, beside the only code that reads them. Every method runs on the unit of
work's connection, inside its transaction. The schedules' slots (``due``,
``take_slot``, ``note``) are methods of ``GroupRepo`` only, not of the
``GroupStore`` protocol: ``service.group_schedule`` runs on the SQL catalog.
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from safehold.service import catalog as t

__all__ = ["GroupRecord", "GroupRepo", "GroupSchedule", "PointRecord", "SlotKind"]

#: The two things a group is scheduled for.
SlotKind = Literal["backup", "drill"]

groups = sa.Table(
    "consistency_groups",
    t.metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("doc", sa.Text, nullable=False),
    sa.Column("created_at", t.UTCDateTime, nullable=False),
    sa.Column("next_backup_at", t.UTCDateTime),
    sa.Column("next_drill_at", t.UTCDateTime),
    sa.Column("backup_note", sa.Text),
    sa.Column("drill_note", sa.Text),
    sa.Index("ix_consistency_groups_next_backup", "next_backup_at"),
    sa.Index("ix_consistency_groups_next_drill", "next_drill_at"),
)
members = sa.Table(
    "consistency_group_members",
    t.metadata,
    sa.Column("partition_id", sa.String(36), primary_key=True),
    sa.Column(
        "group_name", sa.String(128), sa.ForeignKey("consistency_groups.name"), nullable=False
    ),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Index("ix_consistency_group_members_group", "group_name"),
)
points = sa.Table(
    "consistency_group_points",
    t.metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("group_name", sa.String(128), nullable=False),
    sa.Column("time", t.UTCDateTime, nullable=False),
    sa.Column("restore_point", sa.String(256), nullable=False),
    sa.Column("snapshot_id", sa.String(64), nullable=False),
    sa.Column("members", sa.Text, nullable=False),
    sa.Column("storage", sa.Text, nullable=False),
    sa.Column("job_id", sa.String(36)),
    sa.Index("ix_consistency_group_points_group_time", "group_name", "time"),
)


@dataclass
class GroupSchedule:
    """
    A group's backup or drill schedule: the SF ``Schedule`` document (as
    ``core.policy`` writes it), since when (its slots' anchor), and the next slot.
    """

    doc: dict[str, Any]
    since: datetime
    next_at: datetime | None = None
    note: str | None = None  # why the scheduler last let a slot pass (read only)


@dataclass
class GroupRecord:
    """A consistency group: its member partitions, in order, its validators, its schedules."""

    name: str
    members: list[str]
    validators: list[dict[str, Any]] = field(default_factory=list)
    created_at: datetime | None = None
    backup: GroupSchedule | None = None
    drill: GroupSchedule | None = None


@dataclass
class PointRecord:
    """
    One point of a group: when, the PostgreSQL restore point's name, the point's
    own snapshot, each member's snapshot, and the storage (secrets sealed).
    """

    id: str
    group: str
    time: datetime
    restore_point: str
    snapshot_id: str
    members: dict[str, str]  # partition id -> snapshot id
    storage: dict[str, Any]
    job_id: str | None = None


class GroupRepo:
    """Groups, their members (a partition is in one group at most) and their points."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def get(self, name: str) -> GroupRecord | None:
        """The group *name*, or None."""
        row = self.conn.execute(sa.select(groups).where(groups.c.name == name)).first()
        return None if row is None else self._group(row)

    def list(self) -> builtins.list[GroupRecord]:
        """Every group, by name."""
        return [
            self._group(r) for r in self.conn.execute(sa.select(groups).order_by(groups.c.name))
        ]

    def _group(self, row: Any) -> GroupRecord:
        doc = json.loads(row.doc)
        c = members.c
        ids = self.conn.execute(
            sa.select(c.partition_id).where(c.group_name == row.name).order_by(c.position)
        ).scalars()
        return GroupRecord(
            row.name,
            list(ids),
            list(doc.get("validators", [])),
            row.created_at,
            _schedule(doc.get("backup_schedule"), row.next_backup_at, row.backup_note),
            _schedule(doc.get("drill_schedule"), row.next_drill_at, row.drill_note),
        )

    def group_of(self, partition_ids: builtins.list[str]) -> dict[str, str]:
        """The group each of *partition_ids* belongs to (those in none are left out)."""
        c = members.c
        q = sa.select(c.partition_id, c.group_name).where(c.partition_id.in_(partition_ids))
        return {r.partition_id: r.group_name for r in self.conn.execute(q)}

    def put(self, g: GroupRecord, now: datetime) -> None:
        """
        Create or replace group *g*, its membership and its schedules (the caller
        checked the members and chose the next slots).

        A schedule the stored group has already keeps its anchor and its next slot
        as stored, read under the row's lock: a scheduler that took the slot
        since the caller read it is not undone.
        """
        row = self.conn.execute(
            sa.select(groups.c.doc, groups.c.next_backup_at, groups.c.next_drill_at)
            .where(groups.c.name == g.name)
            .with_for_update()
        ).first()
        backup, drill = g.backup, g.drill
        if row is not None:
            old = json.loads(row.doc)
            backup = _kept(backup, old.get("backup_schedule"), row.next_backup_at)
            drill = _kept(drill, old.get("drill_schedule"), row.next_drill_at)
        doc = json.dumps(
            {
                "validators": g.validators,
                "backup_schedule": _schedule_doc(backup),
                "drill_schedule": _schedule_doc(drill),
            }
        )
        values: dict[str, Any] = {
            "doc": doc,
            "next_backup_at": backup.next_at if backup else None,
            "next_drill_at": drill.next_at if drill else None,
        }
        self.conn.execute(members.delete().where(members.c.group_name == g.name))
        if row is None:
            self.conn.execute(groups.insert().values(name=g.name, created_at=now, **values))
        else:
            self.conn.execute(groups.update().where(groups.c.name == g.name).values(**values))
        if g.members:
            self.conn.execute(
                members.insert(),
                [
                    {"partition_id": pid, "group_name": g.name, "position": i}
                    for i, pid in enumerate(g.members)
                ],
            )

    def due(self, kind: SlotKind, now: datetime, limit: int) -> builtins.list[tuple[str, datetime]]:
        """The groups whose next *kind* slot is at or before *now*, and that slot; oldest first."""
        col = _slot_column(kind)
        q = (
            sa.select(groups.c.name, col)
            .where(col <= now)
            .order_by(col, groups.c.name)
            .limit(limit)
        )
        return [(r[0], r[1]) for r in self.conn.execute(q)]

    def take_slot(
        self, name: str, kind: SlotKind, read: datetime, nxt: datetime | None, note: str | None
    ) -> bool:
        """
        Move group *name*'s *kind* slot from *read* to *nxt*, only if it still is
        *read*; return whether it moved. Of two schedulers that read one slot,
        only one takes it; the row stays locked until the transaction ends.
        """
        col = _slot_column(kind)
        q = (
            groups.update()
            .where(groups.c.name == name, col == read)
            .values({col.name: nxt, f"{kind}_note": note})
        )
        return int(self.conn.execute(q).rowcount or 0) == 1

    def note(self, name: str, kind: SlotKind, note: str | None) -> None:
        """Say why group *name*'s last *kind* slot passed without a job (None: it did not)."""
        q = groups.update().where(groups.c.name == name).values({f"{kind}_note": note})
        self.conn.execute(q)

    def delete(self, name: str) -> None:
        """Forget group *name*, its members and its points (the storage keeps the points)."""
        self.conn.execute(members.delete().where(members.c.group_name == name))
        self.conn.execute(points.delete().where(points.c.group_name == name))
        self.conn.execute(groups.delete().where(groups.c.name == name))

    def add_point(self, p: PointRecord) -> bool:
        """Record a point; False (and nothing changed) if it is recorded already."""
        if self.conn.execute(sa.select(points.c.id).where(points.c.id == p.id)).first():
            return False
        self.conn.execute(
            points.insert().values(
                id=p.id,
                group_name=p.group,
                time=p.time,
                restore_point=p.restore_point,
                snapshot_id=p.snapshot_id,
                members=json.dumps(p.members),
                storage=json.dumps(p.storage),
                job_id=p.job_id,
            )
        )
        return True

    def points(self, name: str) -> builtins.list[PointRecord]:
        """The recorded points of group *name*, oldest first."""
        c = points.c
        q = sa.select(points).where(c.group_name == name).order_by(c.time, c.id)
        return [_point(r) for r in self.conn.execute(q)]


def _slot_column(kind: SlotKind) -> sa.Column[Any]:
    return groups.c.next_backup_at if kind == "backup" else groups.c.next_drill_at


def _schedule_doc(s: GroupSchedule | None) -> dict[str, Any] | None:
    return None if s is None else {"schedule": s.doc, "since": s.since.isoformat()}


def _kept(new: GroupSchedule | None, raw: Any, next_at: datetime | None) -> GroupSchedule | None:
    """*new*, or the stored schedule (anchor, next slot) if it is the same schedule."""
    old = _schedule(raw, next_at, None)
    if new is None or old is None or old.doc != new.doc or old.next_at is None:
        return new
    return GroupSchedule(new.doc, old.since, old.next_at)


def _schedule(raw: Any, next_at: datetime | None, note: str | None) -> GroupSchedule | None:
    if not raw:
        return None
    return GroupSchedule(dict(raw["schedule"]), datetime.fromisoformat(raw["since"]), next_at, note)


def _point(row: Any) -> PointRecord:
    return PointRecord(
        id=row.id,
        group=row.group_name,
        time=row.time,
        restore_point=row.restore_point,
        snapshot_id=row.snapshot_id,
        members=dict(json.loads(row.members)),
        storage=dict(json.loads(row.storage)),
        job_id=row.job_id,
    )
