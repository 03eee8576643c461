"""
An in-memory catalog for the service's unit tests: ``FakeUnitOfWork`` over ``FakeCatalog``.

It keeps the contracts of ``service.uow``'s Protocols (mypy checks it at the
bottom), including the fenced updates, so the service tests run on it as on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import builtins
import copy
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

from safehold.core.policy import EntityRef
from safehold.service.model import (
    RUNNING_STATE,
    RUNNING_STATES,
    BackupBrief,
    BackupOutcome,
    BackupRecord,
    Claimed,
    JobRecord,
    PartitionBrief,
    PartitionRecord,
)
from safehold.service.uow import UNSET, UnitOfWork, Unset
from safehold.testing.drills import FakeAlerts, FakeDrills, FakeDrillTables
from safehold.testing.groups import FakeGroups, FakeGroupTables

__all__ = ["FakeCatalog", "FakeUnitOfWork"]

# What the scheduler and job completion keep on a partition; ``save`` keeps them.
_KEPT = (
    "next_due_at",
    "schedule_key",
    "reschedule",
    "last_backup_at",
    "last_backup_state",
    "last_failure",
    "last_scheduled_at",
)


@dataclass
class FakeCatalog:
    """What a ``FakeUnitOfWork`` stores: the catalog's tables as dictionaries."""

    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    partitions: dict[str, PartitionRecord] = field(default_factory=dict)
    mappings: dict[EntityRef, tuple[str, datetime]] = field(default_factory=dict)
    suspensions: set[EntityRef] = field(default_factory=set)
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    backups: dict[str, BackupRecord] = field(default_factory=dict)
    agents: dict[str, datetime] = field(default_factory=dict)
    incarnations: dict[str, str] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    drill_tables: FakeDrillTables = field(default_factory=FakeDrillTables)
    group_tables: FakeGroupTables = field(default_factory=FakeGroupTables)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)


class _FakePolicies:
    def __init__(self, c: FakeCatalog) -> None:
        self.c = c

    def get(self, name: str) -> dict[str, Any] | None:
        doc = self.c.policies.get(name)
        return copy.deepcopy(doc) if doc is not None else None

    def list(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(self.c.policies[n]) for n in sorted(self.c.policies)]

    def add(self, name: str, doc: dict[str, Any], now: datetime) -> None:
        del now
        if name in self.c.policies:
            raise KeyError(f"duplicate policy {name}")
        self.c.policies[name] = copy.deepcopy(doc)

    def update(self, name: str, doc: dict[str, Any]) -> None:
        if name in self.c.policies:
            self.c.policies[name] = copy.deepcopy(doc)

    def delete(self, name: str) -> None:
        self.c.policies.pop(name, None)


class _FakePartitions:
    def __init__(self, c: FakeCatalog) -> None:
        self.c = c

    def get(self, partition_id: str) -> PartitionRecord | None:
        p = self.c.partitions.get(partition_id)
        return copy.deepcopy(p) if p is not None else None

    def list(
        self, *, application: str | None = None, service: str | None = None
    ) -> list[PartitionRecord]:
        return [
            copy.deepcopy(p)
            for _, p in sorted(self.c.partitions.items())
            if (application is None or p.application == application)
            and (service is None or p.service == service)
        ]

    def first(
        self, *, application: str | None = None, service: str | None = None
    ) -> PartitionRecord | None:
        found = self.list(application=application, service=service)
        return found[0] if found else None

    def brief(self) -> builtins.list[PartitionBrief]:
        return [
            PartitionBrief(
                p.partition_id,
                p.application,
                p.service,
                p.source,
                p.created_at,
                p.last_backup_at,
                p.last_backup_state,
                p.last_failure,
            )
            for _, p in sorted(self.c.partitions.items())
        ]

    def save(self, p: PartitionRecord, outcome: BackupOutcome | None = None) -> None:
        new = copy.deepcopy(p)
        old = self.c.partitions.get(p.partition_id)
        if old is not None:  # as in the catalog, save never writes what the scheduler keeps
            for name in _KEPT:
                setattr(new, name, getattr(old, name))
        self.c.partitions[p.partition_id] = new
        if outcome is not None:
            self.record_backup_outcome(
                p.partition_id,
                state=outcome.state,
                failure=outcome.failure,
                good_at=outcome.good_at,
            )

    def delete(self, partition_id: str) -> None:
        self.c.partitions.pop(partition_id, None)

    def count(self) -> int:
        return len(self.c.partitions)

    def due(self, now: datetime, limit: int) -> builtins.list[PartitionRecord]:
        due = [p for p in self.c.partitions.values() if p.next_due_at and p.next_due_at <= now]
        due.sort(key=lambda p: p.next_due_at or now)
        return [copy.deepcopy(p) for p in due[:limit]]

    def to_reschedule(self, limit: int) -> builtins.list[PartitionRecord]:
        marked = [p for _, p in sorted(self.c.partitions.items()) if p.reschedule]
        return [copy.deepcopy(p) for p in marked[:limit]]

    def set_schedule(
        self,
        partition_id: str,
        *,
        next_due_at: datetime | None,
        schedule_key: str | None,
        expected_due: datetime | Unset | None = UNSET,
        scheduled_at: datetime | None = None,
    ) -> bool:
        p = self.c.partitions.get(partition_id)
        if p is None or (not isinstance(expected_due, Unset) and p.next_due_at != expected_due):
            return False
        p.next_due_at, p.schedule_key, p.reschedule = next_due_at, schedule_key, False
        if scheduled_at is not None:
            p.last_scheduled_at = scheduled_at
        return True

    def reschedule_many(self, schedules: Sequence[tuple[str, datetime | None, str | None]]) -> None:
        for pid, nxt, key in schedules:
            self.set_schedule(pid, next_due_at=nxt, schedule_key=key)

    def record_backup_failures(self, partition_ids: Sequence[str], failure: str) -> None:
        for pid in partition_ids:
            self.record_backup_outcome(pid, state="Failure", failure=failure, good_at=None)

    def take_slots(
        self,
        slots: Sequence[tuple[str, datetime, datetime | None, str | None]],
        scheduled_at: datetime | None,
    ) -> set[str]:
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

    def mark_reschedule(
        self,
        *,
        application: str | None = None,
        service: str | None = None,
        partition_id: str | None = None,
    ) -> None:
        for p in self.c.partitions.values():
            if (
                (application is None or p.application == application)
                and (service is None or p.service == service)
                and (partition_id is None or p.partition_id == partition_id)
            ):
                p.reschedule = True

    def record_backup_outcome(
        self, partition_id: str, *, state: str, failure: str | None, good_at: datetime | None
    ) -> None:
        p = self.c.partitions.get(partition_id)
        if p is not None:
            p.last_backup_state, p.last_failure = state, failure
            if good_at is not None:
                p.last_backup_at = good_at


class _FakeMappings:
    def __init__(self, c: FakeCatalog) -> None:
        self.c = c

    def all(self) -> dict[EntityRef, str]:
        return {e: name for e, (name, _) in self.c.mappings.items()}

    def enabled_times(self) -> dict[EntityRef, datetime]:
        return {e: when for e, (_, when) in self.c.mappings.items()}

    def _touch(self, entity: EntityRef) -> None:
        field_name = {"Application": "application", "Service": "service"}.get(
            entity.kind, "partition_id"
        )
        _FakePartitions(self.c).mark_reschedule(**{field_name: entity.key})

    def enabled_at(self, entity: EntityRef) -> datetime | None:
        found = self.c.mappings.get(entity)
        return found[1] if found else None

    def assign(self, entity: EntityRef, policy: str, now: datetime) -> None:
        if policy not in self.c.policies:
            raise KeyError(f"no policy {policy}")  # the catalog's foreign key
        self.c.mappings[entity] = (policy, now)
        self._touch(entity)

    def remove(self, entity: EntityRef) -> bool:
        if self.c.mappings.pop(entity, None) is None:
            return False
        self._touch(entity)
        return True

    def of_policy(self, policy: str) -> list[EntityRef]:
        return [e for e, (name, _) in self.c.mappings.items() if name == policy]

    def suspensions(self) -> set[EntityRef]:
        return set(self.c.suspensions)

    def suspend(self, entity: EntityRef) -> None:
        self.c.suspensions.add(entity)
        self._touch(entity)

    def resume(self, entity: EntityRef) -> None:
        if entity in self.c.suspensions:
            self.c.suspensions.discard(entity)
            self._touch(entity)


class _FakeJobs:
    def __init__(self, c: FakeCatalog) -> None:
        self.c = c

    def get(self, job_id: str) -> JobRecord | None:
        j = self.c.jobs.get(job_id)
        return copy.deepcopy(j) if j is not None else None

    def latest(
        self, partition_id: str, kinds: Iterable[str], *, scheduled: bool | None = None
    ) -> JobRecord | None:
        wanted = set(kinds)
        mine = [
            j
            for j in self.c.jobs.values()
            if j.partition_id == partition_id
            and j.kind in wanted
            and (scheduled is None or j.scheduled == scheduled)
        ]
        return copy.deepcopy(max(mine, key=lambda j: (j.created_at, j.id))) if mine else None

    def active(self, partition_id: str | None = None) -> list[JobRecord]:
        found = [
            j
            for j in self.c.jobs.values()
            if j.active and (partition_id is None or j.partition_id == partition_id)
        ]
        return [copy.deepcopy(j) for j in sorted(found, key=lambda j: j.created_at)]

    def save(self, j: JobRecord) -> None:
        self.c.jobs[j.id] = copy.deepcopy(j)

    def insert_many(self, jobs: Sequence[JobRecord]) -> None:
        for j in jobs:
            self.save(j)

    def update_if(self, j: JobRecord, *, states: Sequence[str], attempt: int | None) -> bool:
        old = self.c.jobs.get(j.id)
        if (
            old is None
            or old.state not in states
            or (attempt is not None and old.attempt != attempt)
        ):
            return False
        self.save(j)
        return True

    def claim_next(
        self, agent_id: str, incarnation: str | None, now: datetime, kinds: Sequence[str]
    ) -> JobRecord | None:
        running = {j.partition_id for j in self.c.jobs.values() if j.state in RUNNING_STATES}
        for j in sorted(self.c.jobs.values(), key=lambda j: (j.created_at, j.id)):
            p = self.c.partitions.get(j.partition_id)
            if (
                j.state == "Accepted"
                and j.kind in kinds
                and p is not None
                and p.agent in (None, agent_id)
                and j.partition_id not in running
            ):
                j.state, j.agent_id, j.incarnation = RUNNING_STATE[j.kind], agent_id, incarnation
                j.attempt += 1
                j.started_at = j.heartbeat_at = now
                return copy.deepcopy(j)
        return None

    def heartbeat(
        self,
        job_id: str,
        agent_id: str,
        attempt: int | None,
        now: datetime,
        progress: dict[str, Any],
    ) -> bool:
        j = self.c.jobs.get(job_id)
        if (
            j is None
            or j.agent_id != agent_id
            or j.state not in RUNNING_STATES
            or (attempt is not None and j.attempt != attempt)
        ):
            return False
        j.heartbeat_at, j.progress = now, dict(progress)
        return True

    def fail_incarnations(self, agent_id: str, keep: str, now: datetime) -> list[JobRecord]:
        out = []
        for j in self.c.jobs.values():
            if j.agent_id == agent_id and j.state in RUNNING_STATES and j.incarnation != keep:
                out.append(copy.deepcopy(j))
                j.state, j.finished_at = "Failure", now
                j.failure_code = "SAFEHOLD_E_AGENT_RESTARTED"
                j.failure_message = f"agent {agent_id} restarted while running this job"
        return out

    def expired(self, now: datetime, silent_since: datetime) -> list[JobRecord]:
        return [
            copy.deepcopy(j)
            for j in self.c.jobs.values()
            if j.active
            and (
                j.deadline < now
                or (
                    j.state in RUNNING_STATES
                    and j.heartbeat_at is not None
                    and j.heartbeat_at < silent_since
                )
            )
        ]

    def running_count(self) -> int:
        return sum(1 for j in self.c.jobs.values() if j.state in RUNNING_STATES)

    def busy_partitions(self, partition_ids: Sequence[str]) -> set[str]:
        wanted = set(partition_ids)
        return {
            j.partition_id for j in self.c.jobs.values() if j.active and j.partition_id in wanted
        }

    def purge_finished(self, before: datetime, limit: int) -> int:
        old = [i for i, j in self.c.jobs.items() if j.finished_at and j.finished_at < before]
        for i in old[:limit]:
            del self.c.jobs[i]
        return len(old[:limit])

    def outcome_stats(self, kind: str) -> dict[str, tuple[int, float]]:
        out: dict[str, tuple[int, float]] = {}
        for j in self.c.jobs.values():
            if j.kind == kind and j.finished_at is not None:
                n, total = out.get(j.state, (0, 0.0))
                secs = (j.finished_at - j.started_at).total_seconds() if j.started_at else 0.0
                out[j.state] = (n + 1, total + secs)
        return out

    def running_by_agent(self) -> list[JobRecord]:
        return [copy.deepcopy(j) for j in self.c.jobs.values() if j.state in RUNNING_STATES]


class _FakeBackups:
    def __init__(self, c: FakeCatalog) -> None:
        self.c = c

    def get(self, backup_id: str) -> BackupRecord | None:
        b = self.c.backups.get(backup_id)
        return copy.deepcopy(b) if b is not None else None

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
        out = [
            b
            for b in self.c.backups.values()
            if (partition_id is None or b.partition_id == partition_id)
            and (application is None or b.application == application)
            and (service is None or b.service == service)
            and (start is None or b.created_at >= start)
            and (end is None or b.created_at <= end)
        ]
        ordered = sorted(out, key=lambda b: (b.created_at, b.backup_id))
        stop = None if limit is None else offset + limit
        return [copy.deepcopy(b) for b in ordered[offset:stop]]

    def add(self, b: BackupRecord) -> None:
        self.c.backups.setdefault(b.backup_id, copy.deepcopy(b))

    def delete(self, backup_ids: Iterable[str]) -> None:
        for bid in list(backup_ids):
            self.c.backups.pop(bid, None)

    def of_partitions(self, partition_ids: Sequence[str]) -> dict[str, builtins.list[BackupRecord]]:
        out: dict[str, list[BackupRecord]] = {pid: [] for pid in partition_ids}
        for b in sorted(self.c.backups.values(), key=lambda b: (b.created_at, b.backup_id)):
            if b.partition_id in out:
                out[b.partition_id].append(copy.deepcopy(b))
        return out

    def newest_of_partitions(
        self, partition_ids: Sequence[str], per_partition: int
    ) -> dict[str, builtins.list[BackupRecord]]:
        every = self.of_partitions(partition_ids)
        return {pid: bs[-per_partition:] if per_partition > 0 else [] for pid, bs in every.items()}

    def oldest(self) -> dict[str, datetime]:
        out: dict[str, datetime] = {}
        for b in self.c.backups.values():
            out[b.partition_id] = min(out.get(b.partition_id, b.created_at), b.created_at)
        return out

    def total_bytes(self) -> int:
        return sum(b.size_bytes for b in self.c.backups.values())


class _FakeAgents:
    def __init__(self, c: FakeCatalog) -> None:
        self.c = c

    def seen(self, agent_id: str, now: datetime, incarnation: str | None = None) -> str | None:
        before = self.c.incarnations.get(agent_id)
        self.c.agents[agent_id] = now
        if incarnation is not None:
            self.c.incarnations[agent_id] = incarnation
        return before

    def all(self) -> dict[str, datetime]:
        return dict(self.c.agents)


class _FakeOperations:
    def __init__(self, c: FakeCatalog) -> None:
        self.c = c

    def get(self, op_id: str) -> dict[str, Any] | None:
        op = self.c.operations.get(op_id)
        return dict(op) if op is not None else None

    def save(self, op_id: str, **values: Any) -> None:
        self.c.operations.setdefault(
            op_id, {"id": op_id, "finished_at": None, "message": None, "heartbeat_at": None}
        ).update(values)

    def fail_stale(self, now: datetime, silent_since: datetime, message: str) -> int:
        n = 0
        for op in self.c.operations.values():
            seen = op.get("heartbeat_at") or op["created_at"]
            if op["state"] == "InProgress" and seen < silent_since:
                op.update(state="Failed", finished_at=now, message=message)
                n += 1
        return n


class FakeUnitOfWork:
    """
    A ``UnitOfWork`` in memory: a transaction works on a copy of the catalog,
    which ``commit`` puts back. Transactions are serialised, as SQLite's are.
    """

    def __init__(self, catalog: FakeCatalog) -> None:
        self._shared = catalog
        self.committed = False

    def __enter__(self) -> FakeUnitOfWork:
        self._shared.lock.acquire()
        work = copy.copy(self._shared)
        for name in (
            "policies",
            "partitions",
            "mappings",
            "suspensions",
            "jobs",
            "backups",
            "agents",
            "incarnations",
            "operations",
            "drill_tables",
            "group_tables",
        ):
            setattr(work, name, copy.deepcopy(getattr(self._shared, name)))
        self._work = work
        self.policies = _FakePolicies(work)
        self.partitions = _FakePartitions(work)
        self.mappings = _FakeMappings(work)
        self.jobs = _FakeJobs(work)
        self.backups = _FakeBackups(work)
        self.agents = _FakeAgents(work)
        self.operations = _FakeOperations(work)
        self.drills = FakeDrills(work.drill_tables)
        self.alerts = FakeAlerts(work.drill_tables)
        self.groups = FakeGroups(work.group_tables)
        return self

    def __exit__(
        self, t_: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._shared.lock.release()

    def commit(self) -> None:
        """Put the working copy back."""
        for name in (
            "policies",
            "partitions",
            "mappings",
            "suspensions",
            "jobs",
            "backups",
            "agents",
            "incarnations",
            "operations",
            "drill_tables",
            "group_tables",
        ):
            setattr(self._shared, name, getattr(self._work, name))
        self.committed = True

    def lock_partition(self, partition_id: str) -> PartitionRecord | None:
        """Return the partition: fake transactions are serialised already."""
        return self.partitions.get(partition_id)

    def job_for_report(self, job_id: str) -> tuple[JobRecord, PartitionRecord | None] | None:
        """The job and its partition: fake transactions are serialised already."""
        job = self.jobs.get(job_id)
        return None if job is None else (job, self.partitions.get(job.partition_id))

    def claim_job(
        self, agent_id: str, incarnation: str | None, now: datetime, kinds: Sequence[str]
    ) -> Claimed | None:
        """Claim as ``jobs.claim_next``, with the partition and its backups."""
        job = self.jobs.claim_next(agent_id, incarnation, now, kinds)
        p = self.partitions.get(job.partition_id) if job is not None else None
        if job is None or p is None:
            return None
        mine = self.backups.list(partition_id=job.partition_id)
        return Claimed(job, p, [BackupBrief.of(b) for b in mine])


def _fake_uow_is_a_unit_of_work(catalog: FakeCatalog) -> UnitOfWork:
    # mypy checks here that the fake keeps up with the UnitOfWork Protocol.
    return FakeUnitOfWork(catalog)
