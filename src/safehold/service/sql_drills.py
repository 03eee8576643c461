"""
The catalog stores of restore drills and alerts (``DrillStore``, ``AlertStore`` in ``uow``).

Every method runs on the unit of work's connection, inside its transaction.
Writes of one row are a delete and an insert in that transaction (both
databases), which keeps them portable without an upsert per table.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from safehold.core.policy import EntityRef
from safehold.service import catalog as t
from safehold.service.drill_records import AlertRecord, DrillRun, DrillState

__all__ = ["ACTIVE_DRILL_STATES", "AlertRepo", "DrillRepo"]

ACTIVE_DRILL_STATES = ("Accepted", "InProgress")


class DrillRepo:
    """Drill policies, where they are attached, drill runs, and each partition's drill state."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    # -- policies -----------------------------------------------------------------

    def get_policy(self, name: str) -> dict[str, Any] | None:
        """Return the stored JSON of drill policy *name*."""
        c = t.drill_policies.c
        row = self.conn.execute(sa.select(c.doc).where(c.name == name)).first()
        return None if row is None else dict(json.loads(row.doc))

    def list_policies(self) -> list[dict[str, Any]]:
        """Return every drill policy, by name."""
        c = t.drill_policies.c
        return [json.loads(r.doc) for r in self.conn.execute(sa.select(c.doc).order_by(c.name))]

    def add_policy(self, name: str, doc: dict[str, Any], now: datetime) -> None:
        """Store a new drill policy (the caller checked that the name is free)."""
        self.conn.execute(
            t.drill_policies.insert().values(name=name, doc=json.dumps(doc), created_at=now)
        )

    def update_policy(self, name: str, doc: dict[str, Any]) -> None:
        """Replace a drill policy's JSON."""
        c = t.drill_policies.c
        self.conn.execute(
            t.drill_policies.update().where(c.name == name).values(doc=json.dumps(doc))
        )

    def delete_policy(self, name: str) -> None:
        """Delete a drill policy (the caller checked it is attached nowhere)."""
        self.conn.execute(t.drill_policies.delete().where(t.drill_policies.c.name == name))

    # -- mappings -----------------------------------------------------------------

    def mappings(self) -> dict[EntityRef, tuple[str, datetime]]:
        """Every attachment: entity → (policy, when it was attached)."""
        rows = self.conn.execute(sa.select(t.drill_mappings))
        return {EntityRef(r.kind, r.key): (r.policy_name, r.enabled_at) for r in rows}

    def assign(self, entity: EntityRef, policy: str, now: datetime) -> None:
        """Attach *policy* to *entity* (replacing an earlier attachment)."""
        self.unassign(entity)
        self.conn.execute(
            t.drill_mappings.insert().values(
                kind=entity.kind, key=entity.key, policy_name=policy, enabled_at=now
            )
        )

    def unassign(self, entity: EntityRef) -> bool:
        """Detach whatever drill policy *entity* has; return whether it had one."""
        c = t.drill_mappings.c
        done = self.conn.execute(
            t.drill_mappings.delete().where(c.kind == entity.kind, c.key == entity.key)
        )
        return bool(done.rowcount)

    def of_policy(self, policy: str) -> list[EntityRef]:
        """The entities *policy* is attached to."""
        c = t.drill_mappings.c
        rows = self.conn.execute(sa.select(c.kind, c.key).where(c.policy_name == policy))
        return [EntityRef(r.kind, r.key) for r in rows]

    # -- runs ---------------------------------------------------------------------

    def add_run(self, run: DrillRun) -> None:
        """Store a new drill run."""
        self.conn.execute(t.drill_runs.insert().values(**_run_row(run)))

    def save_run(self, run: DrillRun) -> None:
        """Store a drill run's changes."""
        c = t.drill_runs.c
        self.conn.execute(t.drill_runs.update().where(c.id == run.id).values(**_run_row(run)))

    def get_run(self, drill_id: str) -> DrillRun | None:
        """Return one drill run."""
        row = self.conn.execute(
            sa.select(t.drill_runs).where(t.drill_runs.c.id == drill_id)
        ).first()
        return None if row is None else _run(row)

    def runs(self, partition_id: str | None = None, limit: int = 100) -> builtins.list[DrillRun]:
        """Drill runs, newest first (of one partition, or of all)."""
        c = t.drill_runs.c
        q = sa.select(t.drill_runs).order_by(c.created_at.desc(), c.id).limit(limit)
        if partition_id is not None:
            q = q.where(c.partition_id == partition_id)
        return [_run(r) for r in self.conn.execute(q)]

    def active_runs(self) -> builtins.list[DrillRun]:
        """Drill runs whose job has not reported yet."""
        c = t.drill_runs.c
        q = sa.select(t.drill_runs).where(c.state.in_(ACTIVE_DRILL_STATES))
        return [_run(r) for r in self.conn.execute(q)]

    # -- per-partition state ------------------------------------------------------

    def states(self) -> dict[str, DrillState]:
        """Every partition's drill state, in one query."""
        rows = self.conn.execute(sa.select(t.drill_state))
        return {r.partition_id: DrillState(**r._asdict()) for r in rows}

    def state(self, partition_id: str) -> DrillState | None:
        """One partition's drill state."""
        c = t.drill_state.c
        row = self.conn.execute(sa.select(t.drill_state).where(c.partition_id == partition_id))
        found = row.first()
        return None if found is None else DrillState(**found._asdict())

    def save_state(self, st: DrillState) -> None:
        """Store a partition's drill state."""
        c = t.drill_state.c
        self.conn.execute(t.drill_state.delete().where(c.partition_id == st.partition_id))
        self.conn.execute(t.drill_state.insert().values(**st.__dict__))

    def forget_partitions(self, partition_ids: Sequence[str]) -> None:
        """Drop the drill state of partitions that are no longer registered."""
        c = t.drill_state.c
        if partition_ids:
            self.conn.execute(t.drill_state.delete().where(c.partition_id.in_(partition_ids)))


def _run_row(run: DrillRun) -> dict[str, Any]:
    row = dict(run.__dict__)
    row["result"] = json.dumps(run.result)
    return row


def _run(row: Any) -> DrillRun:
    values = row._asdict()
    values["result"] = json.loads(values["result"] or "{}")
    return DrillRun(**values)


class AlertRepo:
    """Alert conditions, one row each."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def all(self) -> list[AlertRecord]:
        """Every alert, firing or resolved."""
        rows = self.conn.execute(sa.select(t.alerts).order_by(t.alerts.c.key))
        return [AlertRecord(**r._asdict()) for r in rows]

    def get(self, key: str) -> AlertRecord | None:
        """One alert."""
        row = self.conn.execute(sa.select(t.alerts).where(t.alerts.c.key == key)).first()
        return None if row is None else AlertRecord(**row._asdict())

    def save(self, alert: AlertRecord) -> None:
        """Store an alert (new or changed)."""
        self.conn.execute(t.alerts.delete().where(t.alerts.c.key == alert.key))
        self.conn.execute(t.alerts.insert().values(**alert.__dict__))
