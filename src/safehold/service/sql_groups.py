"""
The catalog store of consistency groups (``GroupRepo``, ``uow.groups``), and its tables.

The tables belong to the catalog (revision 0006); they are declared here, beside
the only code that reads them. Every method runs on the unit of work's
connection, inside its transaction.
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from safehold.service import catalog as t

__all__ = ["GroupRecord", "GroupRepo", "PointRecord"]

groups = sa.Table(
    "consistency_groups",
    t.metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("doc", sa.Text, nullable=False),
    sa.Column("created_at", t.UTCDateTime, nullable=False),
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
class GroupRecord:
    """A consistency group: its member partitions, in order, and its validators."""

    name: str
    members: list[str]
    validators: list[dict[str, Any]] = field(default_factory=list)
    created_at: datetime | None = None


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
        return GroupRecord(row.name, list(ids), list(doc.get("validators", [])), row.created_at)

    def group_of(self, partition_ids: builtins.list[str]) -> dict[str, str]:
        """The group each of *partition_ids* belongs to (those in none are left out)."""
        c = members.c
        q = sa.select(c.partition_id, c.group_name).where(c.partition_id.in_(partition_ids))
        return {r.partition_id: r.group_name for r in self.conn.execute(q)}

    def put(self, g: GroupRecord, now: datetime) -> None:
        """Create or replace group *g* and its membership (the caller checked the members)."""
        doc = json.dumps({"validators": g.validators})
        self.conn.execute(members.delete().where(members.c.group_name == g.name))
        if self.get(g.name) is None:
            self.conn.execute(groups.insert().values(name=g.name, doc=doc, created_at=now))
        else:
            self.conn.execute(groups.update().where(groups.c.name == g.name).values(doc=doc))
        if g.members:
            self.conn.execute(
                members.insert(),
                [
                    {"partition_id": pid, "group_name": g.name, "position": i}
                    for i, pid in enumerate(g.members)
                ],
            )

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
