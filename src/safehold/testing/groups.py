"""The in-memory consistency-group store of ``FakeUnitOfWork`` (``uow.groups``)."""

from __future__ import annotations

import builtins
import copy
from dataclasses import dataclass, field, replace
from datetime import datetime

from safehold.service.sql_groups import GroupRecord, PointRecord

__all__ = ["FakeGroupTables", "FakeGroups"]


@dataclass
class FakeGroupTables:
    """The groups and their points, as the fake catalog keeps them."""

    groups: dict[str, GroupRecord] = field(default_factory=dict)
    points: dict[str, PointRecord] = field(default_factory=dict)


class FakeGroups:
    """``GroupStore`` over ``FakeGroupTables``, with ``sql_groups.GroupRepo``'s contracts."""

    def __init__(self, tables: FakeGroupTables) -> None:
        self.t = tables

    def get(self, name: str) -> GroupRecord | None:
        g = self.t.groups.get(name)
        return copy.deepcopy(g) if g is not None else None

    def list(self) -> builtins.list[GroupRecord]:
        return [copy.deepcopy(self.t.groups[n]) for n in sorted(self.t.groups)]

    def group_of(self, partition_ids: builtins.list[str]) -> dict[str, str]:
        wanted = set(partition_ids)
        return {p: g.name for g in self.t.groups.values() for p in g.members if p in wanted}

    def put(self, g: GroupRecord, now: datetime) -> None:
        old = self.t.groups.get(g.name)
        created = old.created_at if old is not None else now
        self.t.groups[g.name] = replace(copy.deepcopy(g), created_at=created)

    def delete(self, name: str) -> None:
        self.t.groups.pop(name, None)
        self.t.points = {k: p for k, p in self.t.points.items() if p.group != name}

    def add_point(self, p: PointRecord) -> bool:
        if p.id in self.t.points:
            return False
        self.t.points[p.id] = copy.deepcopy(p)
        return True

    def points(self, name: str) -> builtins.list[PointRecord]:
        mine = [copy.deepcopy(p) for p in self.t.points.values() if p.group == name]
        return sorted(mine, key=lambda p: (p.time, p.id))
