"""
The unit of work over the catalog: one transaction, with a store per record kind.

Use as ``with uow_factory() as uow: ...; uow.commit()``; leaving the block
without ``commit`` rolls everything back, so a multi-step use case is atomic.
The stores' contracts are the Protocols below; ``SqlUnitOfWork`` implements them
over the catalog (``sql_stores``, ``sql_jobs``) and ``safehold.testing``'s
``FakeUnitOfWork`` in memory.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

import sqlalchemy as sa

from safehold.core.policy import EntityRef
from safehold.service import catalog as t
from safehold.service.drill_records import AlertRecord, DrillRun, DrillState
from safehold.service.model import (
    BackupOutcome,
    BackupRecord,
    Claimed,
    JobRecord,
    PartitionBrief,
    PartitionRecord,
)
from safehold.service.sql_claim import claim_job, job_for_report
from safehold.service.sql_drills import AlertRepo, DrillRepo
from safehold.service.sql_groups import GroupRecord, GroupRepo, PointRecord
from safehold.service.sql_jobs import JobRepo
from safehold.service.sql_partitions import PartitionRepo, partition_by_id, partition_from_row
from safehold.service.sql_stores import (
    UNSET,
    AgentRepo,
    BackupRepo,
    MappingRepo,
    OperationRepo,
    PolicyRepo,
    Unset,
    built,
)
from safehold.service.work_signal import CHANNEL, WorkSignal

__all__ = ["UNSET", "SqlUnitOfWork", "UnitOfWork", "Unset", "UowFactory"]


class SqlUnitOfWork:
    """
    One catalog transaction, with a repository per record kind.

    When the transaction makes work claimable (new jobs, an ended job), waiting
    claims are woken once it commits: on PostgreSQL by a ``NOTIFY`` sent in the
    transaction (every replica listens), on SQLite through *work* directly.
    """

    def __init__(
        self, engine: sa.Engine, work: WorkSignal | None = None, *, read_only: bool = False
    ) -> None:
        self._engine = engine
        self._work = work
        self._read_only = read_only
        self._new_work = 0

    def __enter__(self) -> SqlUnitOfWork:
        try:
            self._conn = self._engine.connect()
            if self._read_only and self._conn.dialect.name == "postgresql":
                # Each statement its own snapshot, with no BEGIN and COMMIT: two
                # round trips fewer, and under load each round trip is a wait for
                # the GIL too. A read-only unit of work never needs a snapshot
                # across statements (it answers a request that is stale at once).
                self._conn.execution_options(isolation_level="AUTOCOMMIT")
            elif self._read_only:  # on SQLite, a deferred BEGIN: no write lock held
                self._conn.execution_options(**{t.READ_ONLY: True})
            self._tx = self._conn.begin()
        except sa.exc.OperationalError as exc:
            raise t.CatalogUnavailable(f"the catalog is not available: {exc.orig}") from exc
        self.policies = PolicyRepo(self._conn)
        self.partitions = PartitionRepo(self._conn)
        self.mappings = MappingRepo(self._conn)
        self.jobs = JobRepo(
            self._conn,
            self._work_created,
            wake_on_every_end=self._work is None or self._work.capped,
        )
        self.backups = BackupRepo(self._conn)
        self.agents = AgentRepo(self._conn)
        self.operations = OperationRepo(self._conn)
        self.drills = DrillRepo(self._conn)
        self.alerts = AlertRepo(self._conn)
        self.groups = GroupRepo(self._conn)
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
        if self._new_work and self._work is not None:
            self._work.notify(self._new_work)
        self._new_work = 0

    def _work_created(self, n: int) -> None:
        if self._conn.dialect.name == "postgresql":
            # Delivered to every replica's listener at commit, dropped on rollback.
            self._conn.execute(built(self._conn, "work.notify", _notify), {"_n": str(n)})
        else:
            self._new_work += n

    def claim_job(
        self, agent_id: str, incarnation: str | None, now: datetime, kinds: Sequence[str]
    ) -> Claimed | None:
        """Claim a job for *agent_id*, with its partition and backups (``sql_claim``)."""
        return claim_job(self._conn, agent_id, incarnation, now, kinds)

    def job_for_report(self, job_id: str) -> tuple[JobRecord, PartitionRecord | None] | None:
        """The job an agent reports on, and its partition read under its lock (``sql_claim``)."""
        return job_for_report(self._conn, job_id, self.lock_partition)

    def lock_partition(self, partition_id: str) -> PartitionRecord | None:
        """
        Serialise job changes per partition; return the partition, read under the lock.

        A row lock on PostgreSQL; SQLite locks the whole file.
        """
        q = built(self._conn, "partitions.lock", _partition_for_update)
        if self._conn.dialect.name != "postgresql":
            # Take SQLite's write lock now, so two creators cannot both see "no active job".
            self._conn.execute(
                t.partitions.update()
                .where(t.partitions.c.partition_id == partition_id)
                .values(lsn=t.partitions.c.lsn)
            )
        row = self._conn.execute(q, {"_pid": partition_id}).first()
        return None if row is None else partition_from_row(row)


def _notify(_dialect: str) -> Any:
    return sa.select(sa.func.pg_notify(CHANNEL, sa.bindparam("_n", type_=sa.String)))


def _partition_for_update(dialect: str) -> Any:
    q = partition_by_id(dialect)
    return q.with_for_update() if dialect == "postgresql" else q


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
    def brief(self) -> builtins.list[PartitionBrief]: ...
    def first(
        self, *, application: str | None = None, service: str | None = None
    ) -> PartitionRecord | None: ...
    def save(self, p: PartitionRecord, outcome: BackupOutcome | None = None) -> None: ...
    def delete(self, partition_id: str) -> None: ...
    def count(self) -> int: ...
    def due(self, now: datetime, limit: int) -> builtins.list[PartitionRecord]: ...
    def to_reschedule(self, limit: int) -> builtins.list[PartitionRecord]: ...
    def set_schedule(
        self,
        partition_id: str,
        *,
        next_due_at: datetime | None,
        schedule_key: str | None,
        expected_due: datetime | Unset | None = UNSET,
        scheduled_at: datetime | None = None,
    ) -> bool: ...
    def reschedule_many(
        self, schedules: Sequence[tuple[str, datetime | None, str | None]]
    ) -> None: ...
    def take_slots(
        self,
        slots: Sequence[tuple[str, datetime, datetime | None, str | None]],
        scheduled_at: datetime | None,
    ) -> set[str]: ...
    def record_backup_failures(self, partition_ids: Sequence[str], failure: str) -> None: ...
    def mark_reschedule(
        self,
        *,
        application: str | None = None,
        service: str | None = None,
        partition_id: str | None = None,
    ) -> None: ...
    def record_backup_outcome(
        self, partition_id: str, *, state: str, failure: str | None, good_at: datetime | None
    ) -> None: ...


class MappingStore(Protocol):
    """**Protocol**: policy mappings and suspensions."""

    def all(self) -> dict[EntityRef, str]: ...
    def enabled_at(self, entity: EntityRef) -> datetime | None: ...
    def enabled_times(self) -> dict[EntityRef, datetime]: ...
    def assign(self, entity: EntityRef, policy: str, now: datetime) -> None: ...
    def remove(self, entity: EntityRef) -> bool: ...
    def of_policy(self, policy: str) -> list[EntityRef]: ...
    def suspensions(self) -> set[EntityRef]: ...
    def suspend(self, entity: EntityRef) -> None: ...
    def resume(self, entity: EntityRef) -> None: ...


class JobStore(Protocol):
    """**Protocol**: jobs."""

    def get(self, job_id: str) -> JobRecord | None: ...
    def latest(
        self, partition_id: str, kinds: Iterable[str], *, scheduled: bool | None = None
    ) -> JobRecord | None: ...
    def active(self, partition_id: str | None = None) -> list[JobRecord]: ...
    def save(self, j: JobRecord) -> None: ...
    def insert_many(self, jobs: Sequence[JobRecord]) -> None: ...
    def update_if(self, j: JobRecord, *, states: Sequence[str], attempt: int | None) -> bool: ...
    def claim_next(
        self, agent_id: str, incarnation: str | None, now: datetime, kinds: Sequence[str]
    ) -> JobRecord | None: ...
    def heartbeat(
        self,
        job_id: str,
        agent_id: str,
        attempt: int | None,
        now: datetime,
        progress: dict[str, Any],
    ) -> bool: ...
    def fail_incarnations(self, agent_id: str, keep: str, now: datetime) -> list[JobRecord]: ...
    def expired(self, now: datetime, silent_since: datetime) -> list[JobRecord]: ...
    def running_count(self) -> int: ...
    def busy_partitions(self, partition_ids: Sequence[str]) -> set[str]: ...
    def purge_finished(self, before: datetime, limit: int) -> int: ...
    def outcome_stats(self, kind: str) -> dict[str, tuple[int, float]]: ...
    def running_by_agent(self) -> list[JobRecord]: ...


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
        offset: int = 0,
        limit: int | None = None,
    ) -> list[BackupRecord]: ...
    def add(self, b: BackupRecord) -> None: ...
    def delete(self, backup_ids: Iterable[str]) -> None: ...
    def newest_of_partitions(
        self, partition_ids: Sequence[str], per_partition: int
    ) -> dict[str, builtins.list[BackupRecord]]: ...
    def oldest(self) -> dict[str, datetime]: ...
    def of_partitions(
        self, partition_ids: Sequence[str]
    ) -> dict[str, builtins.list[BackupRecord]]: ...
    def total_bytes(self) -> int: ...


class AgentStore(Protocol):
    """**Protocol**: agents' last heartbeats."""

    def seen(self, agent_id: str, now: datetime, incarnation: str | None = None) -> str | None: ...
    def all(self) -> dict[str, datetime]: ...


class OperationStore(Protocol):
    """**Protocol**: configuration backup/restore operations."""

    def get(self, op_id: str) -> dict[str, Any] | None: ...
    def save(self, op_id: str, **values: Any) -> None: ...
    def fail_stale(self, now: datetime, silent_since: datetime, message: str) -> int: ...


class DrillStore(Protocol):
    """**Protocol**: drill policies and attachments, drill runs, per-partition drill state."""

    def get_policy(self, name: str) -> dict[str, Any] | None: ...
    def list_policies(self) -> list[dict[str, Any]]: ...
    def add_policy(self, name: str, doc: dict[str, Any], now: datetime) -> None: ...
    def update_policy(self, name: str, doc: dict[str, Any]) -> None: ...
    def delete_policy(self, name: str) -> None: ...
    def mappings(self) -> dict[EntityRef, tuple[str, datetime]]: ...
    def assign(self, entity: EntityRef, policy: str, now: datetime) -> None: ...
    def unassign(self, entity: EntityRef) -> bool: ...
    def of_policy(self, policy: str) -> list[EntityRef]: ...
    def add_run(self, run: DrillRun) -> None: ...
    def save_run(self, run: DrillRun) -> None: ...
    def get_run(self, drill_id: str) -> DrillRun | None: ...
    def runs(self, partition_id: str | None = None, limit: int = 100) -> list[DrillRun]: ...
    def active_runs(self) -> list[DrillRun]: ...
    def states(self) -> dict[str, DrillState]: ...
    def state(self, partition_id: str) -> DrillState | None: ...
    def save_state(self, st: DrillState) -> None: ...
    def forget_partitions(self, partition_ids: Sequence[str]) -> None: ...


class AlertStore(Protocol):
    """**Protocol**: alert conditions, one per key (firing or resolved)."""

    def all(self) -> list[AlertRecord]: ...
    def get(self, key: str) -> AlertRecord | None: ...
    def save(self, alert: AlertRecord) -> None: ...


class GroupStore(Protocol):
    """**Protocol**: consistency groups, their members and points (``service.groups``)."""

    def get(self, name: str) -> GroupRecord | None: ...
    def list(self) -> builtins.list[GroupRecord]: ...
    def group_of(self, partition_ids: builtins.list[str]) -> dict[str, str]: ...
    def put(self, g: GroupRecord, now: datetime) -> None: ...
    def delete(self, name: str) -> None: ...
    def add_point(self, p: PointRecord) -> bool: ...
    def points(self, name: str) -> builtins.list[PointRecord]: ...


class UnitOfWork(Protocol):
    """
    **Protocol**: one transaction over the catalog.

    ``with uow: ...; uow.commit()``; leaving without ``commit`` discards every
    change. ``lock_partition`` serialises job changes for one partition and
    returns it as read under the lock.
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
    @property
    def drills(self) -> DrillStore: ...
    @property
    def alerts(self) -> AlertStore: ...
    @property
    def groups(self) -> GroupStore: ...
    def claim_job(
        self, agent_id: str, incarnation: str | None, now: datetime, kinds: Sequence[str]
    ) -> Claimed | None: ...
    def job_for_report(self, job_id: str) -> tuple[JobRecord, PartitionRecord | None] | None: ...
    def __enter__(self) -> UnitOfWork: ...
    def __exit__(
        self, t_: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def commit(self) -> None: ...
    def lock_partition(self, partition_id: str) -> PartitionRecord | None: ...


UowFactory = Callable[[], UnitOfWork]
