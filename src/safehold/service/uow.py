"""
The unit of work over the catalog: one transaction, with a repository per record kind.

Use as ``with uow_factory() as uow: ...; uow.commit()``; leaving the block
without ``commit`` rolls everything back, so a multi-step use case is atomic.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

import sqlalchemy as sa

from safehold.core.policy import EntityRef
from safehold.core.snapshot import Epoch
from safehold.service import catalog as t
from safehold.service.model import ACTIVE_STATES, BackupRecord, JobRecord, PartitionRecord

__all__ = ["SqlUnitOfWork", "UnitOfWork", "UowFactory"]


class _Repo:
    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn


class PolicyRepo(_Repo):
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


def _partition(row: Any) -> PartitionRecord:
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
    )


class PartitionRepo(_Repo):
    """Registered partitions."""

    def get(self, partition_id: str) -> PartitionRecord | None:
        """Return one partition."""
        row = self.conn.execute(
            sa.select(t.partitions).where(t.partitions.c.partition_id == partition_id)
        ).first()
        return None if row is None else _partition(row)

    def list(
        self, *, application: str | None = None, service: str | None = None
    ) -> list[PartitionRecord]:
        """Return the partitions, optionally of one application or service."""
        q = sa.select(t.partitions).order_by(t.partitions.c.partition_id)
        if application is not None:
            q = q.where(t.partitions.c.application == application)
        if service is not None:
            q = q.where(t.partitions.c.service == service)
        return [_partition(r) for r in self.conn.execute(q)]

    def save(self, p: PartitionRecord) -> None:
        """Insert or update a partition."""
        values = {
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
        }
        done = self.conn.execute(
            t.partitions.update()
            .where(t.partitions.c.partition_id == p.partition_id)
            .values(**values)
        )
        if done.rowcount == 0:
            self.conn.execute(t.partitions.insert().values(partition_id=p.partition_id, **values))

    def delete(self, partition_id: str) -> None:
        """Remove a partition."""
        self.conn.execute(t.partitions.delete().where(t.partitions.c.partition_id == partition_id))


class MappingRepo(_Repo):
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

    def assign(self, entity: EntityRef, policy: str, now: datetime) -> None:
        """Enable *policy* on *entity* (replacing an earlier mapping)."""
        self.remove(entity)
        self.conn.execute(
            t.mappings.insert().values(
                kind=entity.kind, key=entity.key, policy_name=policy, enabled_at=now
            )
        )

    def remove(self, entity: EntityRef) -> bool:
        """Remove the mapping of *entity*; return whether there was one."""
        done = self.conn.execute(
            t.mappings.delete().where(
                t.mappings.c.kind == entity.kind, t.mappings.c.key == entity.key
            )
        )
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

    def resume(self, entity: EntityRef) -> None:
        """Resume *entity* (idempotent)."""
        self.conn.execute(
            t.suspensions.delete().where(
                t.suspensions.c.kind == entity.kind, t.suspensions.c.key == entity.key
            )
        )


def _job(row: Any) -> JobRecord:
    return JobRecord(
        id=row.id,
        partition_id=row.partition_id,
        kind=row.kind,
        state=row.state,
        scheduled=row.scheduled,
        created_at=row.created_at,
        deadline=row.deadline,
        params=json.loads(row.params),
        started_at=row.started_at,
        finished_at=row.finished_at,
        agent_id=row.agent_id,
        heartbeat_at=row.heartbeat_at,
        result=json.loads(row.result) if row.result else None,
        failure_code=row.failure_code,
        failure_message=row.failure_message,
        progress=json.loads(row.progress) if row.progress else {},
    )


class JobRepo(_Repo):
    """Jobs, newest last."""

    def get(self, job_id: str) -> JobRecord | None:
        """Return one job."""
        row = self.conn.execute(sa.select(t.jobs).where(t.jobs.c.id == job_id)).first()
        return None if row is None else _job(row)

    def latest(self, partition_id: str, kinds: Iterable[str]) -> JobRecord | None:
        """Return the partition's newest job of one of *kinds*."""
        row = self.conn.execute(
            sa.select(t.jobs)
            .where(t.jobs.c.partition_id == partition_id, t.jobs.c.kind.in_(list(kinds)))
            .order_by(t.jobs.c.created_at.desc(), t.jobs.c.id.desc())
            .limit(1)
        ).first()
        return None if row is None else _job(row)

    def active(self, partition_id: str | None = None) -> list[JobRecord]:
        """Return the jobs that are accepted or running, oldest first."""
        q = sa.select(t.jobs).where(t.jobs.c.state.in_(ACTIVE_STATES)).order_by(t.jobs.c.created_at)
        if partition_id is not None:
            q = q.where(t.jobs.c.partition_id == partition_id)
        return [_job(r) for r in self.conn.execute(q)]

    def save(self, j: JobRecord) -> None:
        """Insert or update a job."""
        values = {
            "partition_id": j.partition_id,
            "kind": j.kind,
            "state": j.state,
            "scheduled": j.scheduled,
            "created_at": j.created_at,
            "started_at": j.started_at,
            "finished_at": j.finished_at,
            "deadline": j.deadline,
            "agent_id": j.agent_id,
            "heartbeat_at": j.heartbeat_at,
            "params": json.dumps(j.params),
            "result": json.dumps(j.result) if j.result is not None else None,
            "failure_code": j.failure_code,
            "failure_message": j.failure_message,
            "progress": json.dumps(j.progress),
        }
        done = self.conn.execute(t.jobs.update().where(t.jobs.c.id == j.id).values(**values))
        if done.rowcount == 0:
            self.conn.execute(t.jobs.insert().values(id=j.id, **values))

    def finished_backups(self, limit: int = 1000) -> list[JobRecord]:
        """Return the newest finished backup jobs (for health and metrics)."""
        q = (
            sa.select(t.jobs)
            .where(t.jobs.c.kind == "backup", t.jobs.c.state.not_in(ACTIVE_STATES))
            .order_by(t.jobs.c.finished_at.desc())
            .limit(limit)
        )
        return [_job(r) for r in self.conn.execute(q)]


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
    )


class BackupRepo(_Repo):
    """Backups known to the catalog."""

    def get(self, backup_id: str) -> BackupRecord | None:
        """Return one backup."""
        row = self.conn.execute(
            sa.select(t.backups).where(t.backups.c.backup_id == backup_id)
        ).first()
        return None if row is None else _backup(row)

    def list(
        self,
        *,
        partition_id: str | None = None,
        application: str | None = None,
        service: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[BackupRecord]:
        """Return backups, oldest first, filtered by entity and creation time (inclusive)."""
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
        return [_backup(r) for r in self.conn.execute(q)]

    def add(self, b: BackupRecord) -> None:
        """Insert a backup."""
        self.conn.execute(
            t.backups.insert().values(
                backup_id=b.backup_id,
                snapshot_id=b.snapshot_id,
                partition_id=b.partition_id,
                application=b.application,
                service=b.service,
                backup_type=b.backup_type,
                chain_id=b.chain_id,
                parent_id=b.parent_id,
                location=b.location,
                data_loss_number=b.epoch.data_loss_number,
                configuration_number=b.epoch.configuration_number,
                lsn=b.lsn,
                created_at=b.created_at,
                size_bytes=b.size_bytes,
                storage=json.dumps(b.storage),
            )
        )

    def delete(self, backup_ids: Iterable[str]) -> None:
        """Remove backups from the catalog."""
        ids = list(backup_ids)
        if ids:
            self.conn.execute(t.backups.delete().where(t.backups.c.backup_id.in_(ids)))


class AgentRepo(_Repo):
    """Agents and when they were last heard from."""

    def seen(self, agent_id: str, now: datetime) -> None:
        """Record a heartbeat."""
        done = self.conn.execute(
            t.agents.update().where(t.agents.c.id == agent_id).values(last_seen=now)
        )
        if done.rowcount == 0:
            self.conn.execute(t.agents.insert().values(id=agent_id, last_seen=now))

    def all(self) -> dict[str, datetime]:
        """Return every agent's last heartbeat."""
        return {r.id: r.last_seen for r in self.conn.execute(sa.select(t.agents))}


class OperationRepo(_Repo):
    """Long-running configuration backup/restore operations."""

    def get(self, op_id: str) -> dict[str, Any] | None:
        """Return one operation."""
        row = self.conn.execute(sa.select(t.operations).where(t.operations.c.id == op_id)).first()
        return None if row is None else dict(row._mapping)

    def fail_in_progress(self, now: datetime, message: str) -> None:
        """End every operation still in progress as Failed."""
        self.conn.execute(
            t.operations.update()
            .where(t.operations.c.state == "InProgress")
            .values(state="Failed", finished_at=now, message=message)
        )

    def save(self, op_id: str, **values: Any) -> None:
        """Insert or update an operation."""
        done = self.conn.execute(
            t.operations.update().where(t.operations.c.id == op_id).values(**values)
        )
        if done.rowcount == 0:
            self.conn.execute(t.operations.insert().values(id=op_id, **values))


class SqlUnitOfWork:
    """One catalog transaction, with a repository per record kind."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def __enter__(self) -> SqlUnitOfWork:
        try:
            self._conn = self._engine.connect()
            self._tx = self._conn.begin()
        except sa.exc.OperationalError as exc:
            raise t.CatalogUnavailable(f"the catalog is not available: {exc.orig}") from exc
        self.policies = PolicyRepo(self._conn)
        self.partitions = PartitionRepo(self._conn)
        self.mappings = MappingRepo(self._conn)
        self.jobs = JobRepo(self._conn)
        self.backups = BackupRepo(self._conn)
        self.agents = AgentRepo(self._conn)
        self.operations = OperationRepo(self._conn)
        return self

    def __exit__(
        self, t_: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._tx.is_active:
                self._tx.rollback()
        finally:
            self._conn.close()
        if isinstance(e, sa.exc.OperationalError):
            raise t.CatalogUnavailable(f"the catalog is not available: {e.orig}") from e

    def commit(self) -> None:
        """Make the changes durable."""
        self._tx.commit()

    def lock_partition(self, partition_id: str) -> None:
        """Serialise job creation per partition (row lock on PostgreSQL; SQLite locks the file)."""
        q = sa.select(t.partitions.c.partition_id).where(
            t.partitions.c.partition_id == partition_id
        )
        if self._conn.dialect.name == "postgresql":
            q = q.with_for_update()
        else:
            # Take SQLite's write lock now, so two creators cannot both see "no active job".
            self._conn.execute(
                t.partitions.update()
                .where(t.partitions.c.partition_id == partition_id)
                .values(lsn=t.partitions.c.lsn)
            )
        self._conn.execute(q)


# --- The contract ------------------------------------------------------------------
#
# Use cases are typed against these Protocols, so that ``safehold.testing``'s
# ``FakeUnitOfWork`` (in memory) and ``SqlUnitOfWork`` (the catalog) are
# interchangeable.


class PolicyStore(Protocol):
    """**Protocol**: policies, as JSON with secrets sealed."""

    def get(self, name: str) -> dict[str, Any] | None: ...
    def list(self) -> list[dict[str, Any]]: ...
    def add(self, name: str, doc: dict[str, Any], now: datetime) -> None: ...
    def update(self, name: str, doc: dict[str, Any]) -> None: ...
    def delete(self, name: str) -> None: ...


class PartitionStore(Protocol):
    """**Protocol**: registered partitions, by id."""

    def get(self, partition_id: str) -> PartitionRecord | None: ...
    def list(
        self, *, application: str | None = None, service: str | None = None
    ) -> list[PartitionRecord]: ...
    def save(self, p: PartitionRecord) -> None: ...
    def delete(self, partition_id: str) -> None: ...


class MappingStore(Protocol):
    """**Protocol**: policy mappings and suspensions."""

    def all(self) -> dict[EntityRef, str]: ...
    def enabled_at(self, entity: EntityRef) -> datetime | None: ...
    def assign(self, entity: EntityRef, policy: str, now: datetime) -> None: ...
    def remove(self, entity: EntityRef) -> bool: ...
    def of_policy(self, policy: str) -> list[EntityRef]: ...
    def suspensions(self) -> set[EntityRef]: ...
    def suspend(self, entity: EntityRef) -> None: ...
    def resume(self, entity: EntityRef) -> None: ...


class JobStore(Protocol):
    """**Protocol**: jobs."""

    def get(self, job_id: str) -> JobRecord | None: ...
    def latest(self, partition_id: str, kinds: Iterable[str]) -> JobRecord | None: ...
    def active(self, partition_id: str | None = None) -> list[JobRecord]: ...
    def save(self, j: JobRecord) -> None: ...
    def finished_backups(self, limit: int = 1000) -> list[JobRecord]: ...


class BackupStore(Protocol):
    """**Protocol**: catalogued backups, oldest first."""

    def get(self, backup_id: str) -> BackupRecord | None: ...
    def list(
        self,
        *,
        partition_id: str | None = None,
        application: str | None = None,
        service: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[BackupRecord]: ...
    def add(self, b: BackupRecord) -> None: ...
    def delete(self, backup_ids: Iterable[str]) -> None: ...


class AgentStore(Protocol):
    """**Protocol**: agents' last heartbeats."""

    def seen(self, agent_id: str, now: datetime) -> None: ...
    def all(self) -> dict[str, datetime]: ...


class OperationStore(Protocol):
    """**Protocol**: configuration backup/restore operations."""

    def get(self, op_id: str) -> dict[str, Any] | None: ...
    def save(self, op_id: str, **values: Any) -> None: ...
    def fail_in_progress(self, now: datetime, message: str) -> None: ...


class UnitOfWork(Protocol):
    """
    **Protocol**: one transaction over the catalog.

    ``with uow: ...; uow.commit()``; leaving without ``commit`` discards every
    change. ``lock_partition`` serialises job creation for one partition.
    """

    @property
    def policies(self) -> PolicyStore: ...
    @property
    def partitions(self) -> PartitionStore: ...
    @property
    def mappings(self) -> MappingStore: ...
    @property
    def jobs(self) -> JobStore: ...
    @property
    def backups(self) -> BackupStore: ...
    @property
    def agents(self) -> AgentStore: ...
    @property
    def operations(self) -> OperationStore: ...
    def __enter__(self) -> UnitOfWork: ...
    def __exit__(
        self, t_: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def commit(self) -> None: ...
    def lock_partition(self, partition_id: str) -> None: ...


UowFactory = Callable[[], UnitOfWork]
