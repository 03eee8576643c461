"""
The catalog's stores over SQLAlchemy Core: one class per record kind.

Each method is one or a few statements, and its docstring says which rows it
reads; the scale-sensitive ones (due partitions, claims, sweeps, purges) read
through an index and never the whole table. ``SqlUnitOfWork`` hands them one
connection inside one transaction.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.dialects.postgresql
import sqlalchemy.dialects.sqlite

from safehold.core.policy import EntityRef
from safehold.core.snapshot import Epoch
from safehold.service import catalog as t
from safehold.service.model import BackupRecord, PartitionKey

__all__ = [
    "UNSET",
    "AgentRepo",
    "BackupRepo",
    "MappingRepo",
    "OperationRepo",
    "PolicyRepo",
    "Repo",
    "Unset",
    "built",
    "id_batches",
    "one_of",
]

#: How many ids go into one ``IN (...)`` list.
CHUNK = 500


class Unset:
    """The type of ``UNSET``: an argument that was not given (``None`` is a value)."""


UNSET = Unset()


def _insert_for(conn: sa.Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (PostgreSQL and SQLite both do)."""
    return _dialect_insert(conn.dialect.name, table)


def _dialect_insert(dialect: str, table: sa.Table) -> Any:
    if dialect == "postgresql":
        return sa.dialects.postgresql.insert(table)
    return sa.dialects.sqlite.insert(table)


def one_of(conn: sa.Connection, column: Any, ids: Sequence[str]) -> Any:
    """
    ``column IN ids`` as the dialect does it best.

    On PostgreSQL, ``= ANY(array)`` with the ids as one array parameter: the
    statement's text (and its compiled form) stays the same whatever the number
    of ids, where an ``IN`` list costs compiling and parsing per id. Callers
    pass at most ``CHUNK`` ids on SQLite (its parameter limit).
    """
    if conn.dialect.name == "postgresql":
        array = sa.dialects.postgresql.ARRAY(sa.String)
        return column == sa.any_(sa.cast(sa.bindparam(None, list(ids), type_=array), array))
    return column.in_(list(ids))


def id_batches(conn: sa.Connection, ids: Sequence[str]) -> Iterator[Sequence[str]]:
    """
    Split *ids* into the batches ``one_of`` takes: all at once on PostgreSQL (one
    array parameter), at most ``CHUNK`` at a time on SQLite (its parameter limit).
    """
    step = len(ids) if conn.dialect.name == "postgresql" else CHUNK
    for i in range(0, len(ids), max(step, 1)):
        yield ids[i : i + step]


_BUILT: dict[tuple[str, str], Any] = {}


def built(conn: sa.Connection, name: str, build: Callable[[str], Any]) -> Any:
    """
    The statement *name* for *conn*'s dialect, made by ``build(dialect_name)`` once and kept.

    The per-job paths (a claim, a completion) run statements built once, with
    bind parameters whose values are given at execution (an ``UPDATE`` without
    ``values()`` sets the columns the parameters name). Building a SQLAlchemy
    statement and its cache key afresh cost more CPU than PostgreSQL took to run
    it: about 40 % of the controller's CPU per job, profiled.
    """
    key = (name, conn.dialect.name)
    stmt = _BUILT.get(key)
    if stmt is None:  # two threads may both build it: the same statement, either kept
        stmt = _BUILT[key] = build(conn.dialect.name)
    return stmt


class Repo:
    """A store bound to the unit of work's connection."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn


class PolicyRepo(Repo):
    """Policies, stored as their JSON with secrets sealed."""

    def get(self, name: str) -> dict[str, Any] | None:
        """Return the stored JSON of policy *name*."""
        row = self.conn.execute(
            sa.select(t.policies.c.doc).where(t.policies.c.name == name)
        ).first()
        return None if row is None else dict(json.loads(row.doc))

    def list(self) -> list[dict[str, Any]]:
        """Return every policy, by name."""
        rows = self.conn.execute(sa.select(t.policies.c.doc).order_by(t.policies.c.name))
        return [json.loads(r.doc) for r in rows]

    def add(self, name: str, doc: dict[str, Any], now: datetime) -> None:
        """Insert a policy."""
        self.conn.execute(
            t.policies.insert().values(name=name, doc=json.dumps(doc), created_at=now)
        )

    def update(self, name: str, doc: dict[str, Any]) -> None:
        """Replace a policy's JSON."""
        self.conn.execute(
            t.policies.update().where(t.policies.c.name == name).values(doc=json.dumps(doc))
        )

    def delete(self, name: str) -> None:
        """Remove a policy."""
        self.conn.execute(t.policies.delete().where(t.policies.c.name == name))


class MappingRepo(Repo):
    """Which policy is enabled where, and which entities are suspended."""

    def all(self) -> dict[EntityRef, str]:
        """Return every mapping."""
        rows = self.conn.execute(sa.select(t.mappings))
        return {EntityRef(r.kind, r.key): r.policy_name for r in rows}

    def enabled_at(self, entity: EntityRef) -> datetime | None:
        """Return when backup was enabled on *entity* directly."""
        row = self.conn.execute(
            sa.select(t.mappings.c.enabled_at).where(
                t.mappings.c.kind == entity.kind, t.mappings.c.key == entity.key
            )
        ).first()
        return None if row is None else row.enabled_at

    def enabled_times(self) -> dict[EntityRef, datetime]:
        """Return when backup was enabled on each entity that has a mapping."""
        rows = self.conn.execute(
            sa.select(t.mappings.c.kind, t.mappings.c.key, t.mappings.c.enabled_at)
        )
        return {EntityRef(r.kind, r.key): r.enabled_at for r in rows}

    def _touch(self, entity: EntityRef) -> None:
        # Every change to protection marks the entity's partitions, so the
        # scheduler looks at exactly those again (and not at the whole fleet).
        col = {
            "Application": t.partitions.c.application,
            "Service": t.partitions.c.service,
            "Partition": t.partitions.c.partition_id,
        }[entity.kind]
        self.conn.execute(t.partitions.update().where(col == entity.key).values(reschedule=True))

    def assign(self, entity: EntityRef, policy: str, now: datetime) -> None:
        """Enable *policy* on *entity* (replacing an earlier mapping)."""
        self.remove(entity)
        self.conn.execute(
            t.mappings.insert().values(
                kind=entity.kind, key=entity.key, policy_name=policy, enabled_at=now
            )
        )
        self._touch(entity)

    def remove(self, entity: EntityRef) -> bool:
        """Remove the mapping of *entity*; return whether there was one."""
        done = self.conn.execute(
            t.mappings.delete().where(
                t.mappings.c.kind == entity.kind, t.mappings.c.key == entity.key
            )
        )
        if done.rowcount:
            self._touch(entity)
        return bool(done.rowcount)

    def of_policy(self, policy: str) -> list[EntityRef]:
        """Return the entities that *policy* is enabled on."""
        rows = self.conn.execute(sa.select(t.mappings).where(t.mappings.c.policy_name == policy))
        return [EntityRef(r.kind, r.key) for r in rows]

    def suspensions(self) -> set[EntityRef]:
        """Return the suspended entities."""
        return {EntityRef(r.kind, r.key) for r in self.conn.execute(sa.select(t.suspensions))}

    def suspend(self, entity: EntityRef) -> None:
        """Suspend *entity* (idempotent)."""
        self.resume(entity)
        self.conn.execute(t.suspensions.insert().values(kind=entity.kind, key=entity.key))
        self._touch(entity)

    def resume(self, entity: EntityRef) -> None:
        """Resume *entity* (idempotent)."""
        done = self.conn.execute(
            t.suspensions.delete().where(
                t.suspensions.c.kind == entity.kind, t.suspensions.c.key == entity.key
            )
        )
        if done.rowcount:
            self._touch(entity)


def _backup(row: Any) -> BackupRecord:
    return BackupRecord(
        backup_id=row.backup_id,
        snapshot_id=row.snapshot_id,
        partition_id=row.partition_id,
        application=row.application,
        service=row.service,
        backup_type=row.backup_type,
        chain_id=row.chain_id,
        parent_id=row.parent_id,
        location=row.location,
        epoch=Epoch(row.data_loss_number, row.configuration_number),
        lsn=row.lsn,
        created_at=row.created_at,
        size_bytes=row.size_bytes,
        storage=json.loads(row.storage),
        key=PartitionKey.parse(json.loads(row.partition_info) if row.partition_info else None),
    )


class BackupRepo(Repo):
    """Backups known to the catalog."""

    def get(self, backup_id: str) -> BackupRecord | None:
        """Return one backup."""
        q = built(self.conn, "backups.get", _backup_by_id)
        row = self.conn.execute(q, {"_id": backup_id}).first()
        return None if row is None else _backup(row)

    def list(
        self,
        *,
        partition_id: str | None = None,
        application: str | None = None,
        service: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[BackupRecord]:
        """
        Return backups, oldest first, filtered by entity and creation time (inclusive);
        from the *offset*-th, at most *limit* of them (a page, read as one).
        """
        paged = offset or limit is not None
        if (
            partition_id is not None
            and (application, service, start, end) == (None,) * 4
            and not paged
        ):
            mine = built(self.conn, "backups.of_partition", _backups_of_partition)
            return [_backup(r) for r in self.conn.execute(mine, {"_pid": partition_id})]
        q = sa.select(t.backups).order_by(t.backups.c.created_at, t.backups.c.backup_id)
        if partition_id is not None:
            q = q.where(t.backups.c.partition_id == partition_id)
        if application is not None:
            q = q.where(t.backups.c.application == application)
        if service is not None:
            q = q.where(t.backups.c.service == service)
        if start is not None:
            q = q.where(t.backups.c.created_at >= start)
        if end is not None:
            q = q.where(t.backups.c.created_at <= end)
        if paged:
            q = q.offset(offset).limit(limit)
        return [_backup(r) for r in self.conn.execute(q)]

    def add(self, b: BackupRecord) -> None:
        """Insert a backup, unless one with its id is catalogued (a repeated report)."""
        q = built(self.conn, "backups.add", _backup_insert)
        self.conn.execute(
            q,
            {
                "backup_id": b.backup_id,
                "snapshot_id": b.snapshot_id,
                "partition_id": b.partition_id,
                "application": b.application,
                "service": b.service,
                "backup_type": b.backup_type,
                "chain_id": b.chain_id,
                "parent_id": b.parent_id,
                "location": b.location,
                "data_loss_number": b.epoch.data_loss_number,
                "configuration_number": b.epoch.configuration_number,
                "lsn": b.lsn,
                "created_at": b.created_at,
                "size_bytes": b.size_bytes,
                "storage": json.dumps(b.storage),
                "partition_info": json.dumps(b.key.stored()),
            },
        )

    def of_partitions(self, partition_ids: Sequence[str]) -> dict[str, builtins.list[BackupRecord]]:
        """Return the backups of each of *partition_ids*, oldest first, in few queries."""
        out: dict[str, list[BackupRecord]] = {pid: [] for pid in partition_ids}
        for batch in id_batches(self.conn, partition_ids):
            q = (
                sa.select(t.backups)
                .where(one_of(self.conn, t.backups.c.partition_id, batch))
                .order_by(t.backups.c.created_at, t.backups.c.backup_id)
            )
            for row in self.conn.execute(q):
                out[row.partition_id].append(_backup(row))
        return out

    def newest_of_partitions(
        self, partition_ids: Sequence[str], per_partition: int
    ) -> dict[str, builtins.list[BackupRecord]]:
        """
        The newest *per_partition* backups of each of *partition_ids*, oldest first:
        what the next backup's chain depends on, whatever the history's length.
        """
        out: dict[str, list[BackupRecord]] = {pid: [] for pid in partition_ids}
        c = t.backups.c
        for batch in id_batches(self.conn, partition_ids):
            rank = (
                sa.func.row_number()
                .over(
                    partition_by=c.partition_id, order_by=(c.created_at.desc(), c.backup_id.desc())
                )
                .label("_rank")
            )
            inner = sa.select(t.backups, rank).where(one_of(self.conn, c.partition_id, batch))
            ranked = inner.subquery()
            q = (
                sa.select(*[ranked.c[col.name] for col in t.backups.c])
                .where(ranked.c._rank <= per_partition)
                .order_by(ranked.c.created_at, ranked.c.backup_id)
            )
            for row in self.conn.execute(q):
                out[row.partition_id].append(_backup(row))
        return out

    def oldest(self) -> dict[str, datetime]:
        """Each partition's oldest catalogued backup time (one grouped query)."""
        c = t.backups.c
        q = sa.select(c.partition_id, sa.func.min(c.created_at)).group_by(c.partition_id)
        return {row[0]: row[1] for row in self.conn.execute(q)}

    def total_bytes(self) -> int:
        """Return the logical bytes of every catalogued backup."""
        q = sa.select(sa.func.coalesce(sa.func.sum(t.backups.c.size_bytes), 0))
        return int(self.conn.execute(q).scalar_one())

    def delete(self, backup_ids: Iterable[str]) -> None:
        """Remove backups from the catalog."""
        ids = list(backup_ids)
        if ids:
            q = built(self.conn, "backups.delete", _backups_delete)
            self.conn.execute(q, {"_ids": ids})


def _backup_by_id(_dialect: str) -> Any:
    return sa.select(t.backups).where(t.backups.c.backup_id == sa.bindparam("_id"))


def _backups_of_partition(_dialect: str) -> Any:
    c = t.backups.c
    q = sa.select(t.backups).where(c.partition_id == sa.bindparam("_pid"))
    return q.order_by(c.created_at, c.backup_id)


def _backup_insert(dialect: str) -> Any:
    insert = _dialect_insert(dialect, t.backups)
    return insert.on_conflict_do_nothing(index_elements=[t.backups.c.backup_id])


def _backups_delete(_dialect: str) -> Any:
    return t.backups.delete().where(t.backups.c.backup_id.in_(sa.bindparam("_ids", expanding=True)))


class AgentRepo(Repo):
    """Agents and when they were last heard from."""

    def seen(self, agent_id: str, now: datetime, incarnation: str | None = None) -> str | None:
        """
        Record that *agent_id* was heard from; return the incarnation it had before.

        Without *incarnation* (a heartbeat, an older agent) the stored one is kept.
        """
        c = t.agents.c
        row = self.conn.execute(sa.select(c.incarnation).where(c.id == agent_id)).first()
        values: dict[str, Any] = {"last_seen": now}
        if incarnation is not None:
            values["incarnation"] = incarnation
        # An upsert: two slots of a new agent may say hello at the same moment.
        insert = _insert_for(self.conn, t.agents).values(id=agent_id, **values)
        self.conn.execute(insert.on_conflict_do_update(index_elements=[c.id], set_=values))
        if row is None:
            return None
        return str(row.incarnation) if row.incarnation is not None else None

    def all(self) -> dict[str, datetime]:
        """Return every agent's last heartbeat."""
        return {r.id: r.last_seen for r in self.conn.execute(sa.select(t.agents))}


class OperationRepo(Repo):
    """Long-running configuration backup/restore operations."""

    def get(self, op_id: str) -> dict[str, Any] | None:
        """Return one operation."""
        row = self.conn.execute(sa.select(t.operations).where(t.operations.c.id == op_id)).first()
        return None if row is None else dict(row._mapping)

    def fail_stale(self, now: datetime, silent_since: datetime, message: str) -> int:
        """End as Failed the operations in progress not heard of since *silent_since*."""
        c = t.operations.c
        done = self.conn.execute(
            t.operations.update()
            .where(
                c.state == "InProgress",
                sa.func.coalesce(c.heartbeat_at, c.created_at) < silent_since,
            )
            .values(state="Failed", finished_at=now, message=message)
        )
        return int(done.rowcount)

    def save(self, op_id: str, **values: Any) -> None:
        """Insert or update an operation."""
        done = self.conn.execute(
            t.operations.update().where(t.operations.c.id == op_id).values(**values)
        )
        if done.rowcount == 0:
            self.conn.execute(t.operations.insert().values(id=op_id, **values))
