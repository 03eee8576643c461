"""
The partitions table over SQLAlchemy Core: registration, schedules and outcomes.

The scheduler's reads go through the ``next_due_at`` and ``reschedule`` indexes
and read only what is due; the fleet-wide reads (``list``, ``brief``) read every
row, and ``brief`` only the columns health and alerts need.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from safehold.core.snapshot import Epoch
from safehold.service import catalog as t
from safehold.service.model import (
    BackupOutcome,
    Hooks,
    PartitionBrief,
    PartitionKey,
    PartitionRecord,
)
from safehold.service.sql_stores import UNSET, Repo, Unset, built, id_batches, one_of

__all__ = ["PartitionRepo", "partition_by_id", "partition_from_row"]


def partition_from_row(row: Any) -> PartitionRecord:
    """A partitions row as a ``PartitionRecord``."""
    return PartitionRecord(
        partition_id=row.partition_id,
        application=row.application,
        service=row.service,
        source=row.source,
        restore_to=row.restore_to,
        agent=row.agent,
        epoch=Epoch(row.data_loss_number, row.configuration_number),
        lsn=row.lsn,
        last_scheduled_at=row.last_scheduled_at,
        created_at=row.created_at,
        next_due_at=row.next_due_at,
        schedule_key=row.schedule_key,
        reschedule=bool(row.reschedule),
        last_backup_at=row.last_backup_at,
        last_backup_state=row.last_backup_state,
        last_failure=row.last_failure,
        key=PartitionKey(row.partition_kind, row.low_key, row.high_key, row.partition_name),
        hooks=_hooks(row.hooks),
        strict_restore=bool(row.strict_restore),
    )


def _hooks(text: str | None) -> Hooks | None:
    if not text:
        return None
    doc = json.loads(text)
    return Hooks(doc.get("Before"), doc.get("After"), float(doc.get("TimeoutSeconds", 300)))


class PartitionRepo(Repo):
    """Registered partitions."""

    def brief(self) -> builtins.list[PartitionBrief]:
        """Every partition, with only the columns fleet-wide reads need (reads N rows)."""
        c = t.partitions.c
        rows = self.conn.execute(
            sa.select(
                c.partition_id,
                c.application,
                c.service,
                c.source,
                c.created_at,
                c.last_backup_at,
                c.last_backup_state,
                c.last_failure,
            ).order_by(c.partition_id)
        )
        return [PartitionBrief(*r) for r in rows]

    def get(self, partition_id: str) -> PartitionRecord | None:
        """Return one partition."""
        q = built(self.conn, "partitions.get", partition_by_id)
        row = self.conn.execute(q, {"_pid": partition_id}).first()
        return None if row is None else partition_from_row(row)

    def first(
        self, *, application: str | None = None, service: str | None = None
    ) -> PartitionRecord | None:
        """One partition of *application* or *service* (an index lookup), or None."""
        q = sa.select(t.partitions).limit(1)
        if application is not None:
            q = q.where(t.partitions.c.application == application)
        if service is not None:
            q = q.where(t.partitions.c.service == service)
        row = self.conn.execute(q).first()
        return None if row is None else partition_from_row(row)

    def list(
        self, *, application: str | None = None, service: str | None = None
    ) -> list[PartitionRecord]:
        """Return the partitions, optionally of one application or service."""
        q = sa.select(t.partitions).order_by(t.partitions.c.partition_id)
        if application is not None:
            q = q.where(t.partitions.c.application == application)
        if service is not None:
            q = q.where(t.partitions.c.service == service)
        return [partition_from_row(r) for r in self.conn.execute(q)]

    def save(self, p: PartitionRecord, outcome: BackupOutcome | None = None) -> None:
        """Insert or update a partition; with *outcome*, its newest backup's too (one statement)."""
        values: dict[str, Any] = {
            "application": p.application,
            "service": p.service,
            "source": p.source,
            "restore_to": p.restore_to,
            "agent": p.agent,
            "data_loss_number": p.epoch.data_loss_number,
            "configuration_number": p.epoch.configuration_number,
            "lsn": p.lsn,
            "last_scheduled_at": p.last_scheduled_at,
            "created_at": p.created_at,
            "partition_kind": p.key.kind,
            "low_key": p.key.low_key,
            "high_key": p.key.high_key,
            "partition_name": p.key.name,
            "hooks": json.dumps(p.hooks.to_json()) if p.hooks else None,
            "strict_restore": p.strict_restore,
        }
        if outcome is not None:
            values |= _outcome_values(outcome)
        q = built(self.conn, "partitions.save", _partition_update)
        done = self.conn.execute(q, {"_pid": p.partition_id, **values})
        if done.rowcount == 0:
            self.conn.execute(t.partitions.insert().values(partition_id=p.partition_id, **values))

    def delete(self, partition_id: str) -> None:
        """Remove a partition."""
        self.conn.execute(t.partitions.delete().where(t.partitions.c.partition_id == partition_id))

    def count(self) -> int:
        """Return how many partitions are registered."""
        return int(
            self.conn.execute(sa.select(sa.func.count()).select_from(t.partitions)).scalar_one()
        )

    def due(self, now: datetime, limit: int) -> builtins.list[PartitionRecord]:
        """Return up to *limit* partitions whose next periodic backup is due, most overdue first."""
        q = (
            sa.select(t.partitions)
            .where(t.partitions.c.next_due_at <= now)
            .order_by(t.partitions.c.next_due_at)
            .limit(limit)
        )
        return [partition_from_row(r) for r in self.conn.execute(q)]

    def to_reschedule(self, limit: int) -> builtins.list[PartitionRecord]:
        """
        Return up to *limit* partitions whose protection changed since they were scheduled.

        Their rows stay locked (PostgreSQL) until the transaction ends, so a change
        made meanwhile marks them again after this scheduler is done, not before.
        """
        q = sa.select(t.partitions).where(t.partitions.c.reschedule == sa.true()).limit(limit)
        if self.conn.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        return [partition_from_row(r) for r in self.conn.execute(q)]

    def set_schedule(
        self,
        partition_id: str,
        *,
        next_due_at: datetime | None,
        schedule_key: str | None,
        expected_due: datetime | Unset | None = UNSET,
        scheduled_at: datetime | None = None,
    ) -> bool:
        """
        Set when the partition is next due (and clear its reschedule mark).

        With *expected_due*, only if the partition is still due at that time: two
        schedulers cannot both take the same slot. Returns whether it was set.
        """
        c = t.partitions.c
        q = t.partitions.update().where(c.partition_id == partition_id)
        if not isinstance(expected_due, Unset):
            q = q.where(
                c.next_due_at.is_(None) if expected_due is None else c.next_due_at == expected_due
            )
        values: dict[str, Any] = {
            "next_due_at": next_due_at,
            "schedule_key": schedule_key,
            "reschedule": False,
        }
        if scheduled_at is not None:
            values["last_scheduled_at"] = scheduled_at
        return bool(self.conn.execute(q.values(**values)).rowcount)

    def reschedule_many(self, schedules: Sequence[tuple[str, datetime | None, str | None]]) -> None:
        """
        Set many partitions' next slot and schedule key, and clear their marks.

        Each of *schedules* is ``(partition id, next slot or None, key or None)``.
        One ``UPDATE … FROM unnest(arrays)`` on PostgreSQL; one update each on SQLite.
        """
        if self.conn.dialect.name != "postgresql":
            for pid, due, key in schedules:
                self.set_schedule(pid, next_due_at=due, schedule_key=key)
            return
        if schedules:
            pids, nxt, keys = (list(x) for x in zip(*schedules, strict=True))
            self.conn.execute(
                sa.text(
                    "UPDATE partitions AS p SET next_due_at = v.nxt, schedule_key = v.skey,"
                    " reschedule = false FROM unnest(CAST(:pids AS varchar[]),"
                    " CAST(:nxt AS timestamptz[]), CAST(:keys AS varchar[])) AS v(pid, nxt, skey)"
                    " WHERE p.partition_id = v.pid"
                ),
                {"pids": pids, "nxt": nxt, "keys": keys},
            )

    def take_slots(
        self,
        slots: Sequence[tuple[str, datetime, datetime | None, str | None]],
        scheduled_at: datetime | None,
    ) -> set[str]:
        """
        Take many partitions' slots at once; return the ids of those taken.

        Each of *slots* is ``(partition id, the slot read, the next slot, schedule
        key)``; a partition whose slot changed meanwhile (another scheduler took
        it) is left alone. With *scheduled_at*, it is the partition's new last
        scheduled backup (a slot taken for a backup, not just moved). On
        PostgreSQL this is one ``UPDATE … FROM unnest(arrays) RETURNING``,
        whatever the number; on SQLite, one update each.
        """
        if self.conn.dialect.name != "postgresql":
            return {
                pid
                for pid, expected, nxt, key in slots
                if self.set_schedule(
                    pid,
                    next_due_at=nxt,
                    schedule_key=key,
                    expected_due=expected,
                    scheduled_at=scheduled_at,
                )
            }
        if not slots:
            return set()
        pids, expected, nxt, keys = (list(x) for x in zip(*slots, strict=True))
        rows = self.conn.execute(
            sa.text(
                "UPDATE partitions AS p SET next_due_at = v.nxt, schedule_key = v.skey,"
                " reschedule = false,"
                " last_scheduled_at = COALESCE(CAST(:at AS timestamptz), p.last_scheduled_at)"
                " FROM unnest(CAST(:pids AS varchar[]), CAST(:expected AS timestamptz[]),"
                " CAST(:nxt AS timestamptz[]), CAST(:keys AS varchar[]))"
                " AS v(pid, expected, nxt, skey)"
                " WHERE p.partition_id = v.pid AND p.next_due_at = v.expected"
                " RETURNING p.partition_id"
            ),
            {"pids": pids, "expected": expected, "nxt": nxt, "keys": keys, "at": scheduled_at},
        )
        return {r.partition_id for r in rows}

    def mark_reschedule(
        self,
        *,
        application: str | None = None,
        service: str | None = None,
        partition_id: str | None = None,
    ) -> None:
        """Mark the partitions of an entity (all, with no argument) to be scheduled anew."""
        c = t.partitions.c
        q = t.partitions.update().values(reschedule=True)
        if application is not None:
            q = q.where(c.application == application)
        if service is not None:
            q = q.where(c.service == service)
        if partition_id is not None:
            q = q.where(c.partition_id == partition_id)
        self.conn.execute(q)

    def record_backup_failures(self, partition_ids: Sequence[str], failure: str) -> None:
        """Record the same failure as the newest backup outcome of many partitions."""
        for batch in id_batches(self.conn, partition_ids):
            self.conn.execute(
                t.partitions.update()
                .where(one_of(self.conn, t.partitions.c.partition_id, batch))
                .values(last_backup_state="Failure", last_failure=failure)
            )

    def record_backup_outcome(
        self, partition_id: str, *, state: str, failure: str | None, good_at: datetime | None
    ) -> None:
        """Keep the outcome of the partition's newest backup job (health reads it)."""
        self.conn.execute(
            t.partitions.update()
            .where(t.partitions.c.partition_id == partition_id)
            .values(**_outcome_values(BackupOutcome(state, failure, good_at)))
        )


def partition_by_id(_dialect: str) -> Any:
    """``SELECT`` one partition; its id is the parameter ``_pid`` (for ``sql_stores.built``)."""
    return sa.select(t.partitions).where(t.partitions.c.partition_id == sa.bindparam("_pid"))


def _partition_update(_dialect: str) -> Any:
    return t.partitions.update().where(t.partitions.c.partition_id == sa.bindparam("_pid"))


def _outcome_values(o: BackupOutcome) -> dict[str, Any]:
    values: dict[str, Any] = {"last_backup_state": o.state, "last_failure": o.failure}
    if o.good_at is not None:
        values["last_backup_at"] = o.good_at
    return values
