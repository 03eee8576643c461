"""
Health per partition, in the spirit of SF's ``System.BackupRestoreManager`` reports, and metrics.

A partition with backup enabled is ``Ok`` when its last backup succeeded and is
within its schedule, ``Warning`` when the last attempt failed, it is suspended,
or the last good backup is late by up to one more period, and ``Error`` when it
is later than that or has never succeeded after two periods.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from safehold.core.policy import FrequencySchedule, Schedule, effective_config, next_due
from safehold.core.snapshot import format_time
from safehold.service.context import ServiceContext
from safehold.service.protection import load_policy

__all__ = ["PartitionHealth", "partition_health"]


@dataclass(frozen=True)
class PartitionHealth:
    """One partition's health state and why."""

    partition_id: str
    state: str
    reason: str
    last_good: datetime | None

    def to_json(self) -> dict[str, Any]:
        """Return the API shape."""
        return {
            "PartitionId": self.partition_id,
            "SourceId": "System.BackupRestoreManager",
            "Property": "Backup",
            "HealthState": self.state,
            "Description": self.reason,
            "LastSuccessfulBackupUtc": format_time(self.last_good) if self.last_good else None,
        }


def _period(schedule: Schedule, ref: datetime) -> timedelta:
    if isinstance(schedule, FrequencySchedule):
        return schedule.interval
    first = next_due(schedule, ref)
    return next_due(schedule, first) - first


def partition_health(ctx: ServiceContext) -> list[PartitionHealth]:
    """Return every registered partition's backup health."""
    now = ctx.clock()
    out = []
    with ctx.uow() as uow:
        mappings = uow.mappings.all()
        suspended = uow.mappings.suspensions()
        for p in uow.partitions.list():
            eff = effective_config(p.chain(), mappings, suspended)
            backups = uow.backups.list(partition_id=p.partition_id)
            last_good = backups[-1].created_at if backups else None
            last_job = uow.jobs.latest(p.partition_id, ["backup"])
            if eff.policy_name is None:
                out.append(
                    PartitionHealth(
                        p.partition_id, "Ok", "periodic backup is not enabled", last_good
                    )
                )
                continue
            if eff.suspended:
                out.append(
                    PartitionHealth(
                        p.partition_id,
                        "Warning",
                        f"periodic backup is suspended (at the {eff.suspended_from} level)",
                        last_good,
                    )
                )
                continue
            schedule = load_policy(ctx, uow, eff.policy_name).schedule
            entity = next(e for e in p.chain() if e.kind == eff.policy_from)
            since = last_good or uow.mappings.enabled_at(entity) or p.created_at
            period = _period(schedule, since)
            late = now - next_due(schedule, since)
            if last_job is not None and last_job.state in ("Failure", "Timeout"):
                state, reason = (
                    "Warning",
                    (
                        f"Failed to take periodic backup for this partition with error:\n"
                        f"{last_job.failure_code}: {last_job.failure_message}"
                    ),
                )
                if late > period:
                    state = "Error"
            elif late > period:
                state, reason = (
                    "Error",
                    (
                        f"no successful backup since {format_time(since)}: "
                        "more than two periods late"
                    ),
                )
            elif late > timedelta(0) + period / 2:
                state, reason = (
                    "Warning",
                    f"the backup due at {format_time(next_due(schedule, since))} is late",
                )
            elif last_good is not None:
                state, reason = (
                    "Ok",
                    f"Partition successfully backed up at {format_time(last_good)} GMT",
                )
            else:
                state, reason = "Ok", "waiting for the first scheduled backup"
            out.append(PartitionHealth(p.partition_id, state, reason, last_good))
    return out


def metrics_snapshot(ctx: ServiceContext) -> dict[str, Any]:
    """Return what ``/metrics`` exposes, read from the catalog."""
    now = ctx.clock()
    outcomes: dict[str, int] = {}
    durations: list[float] = []
    with ctx.uow() as uow:
        for job in uow.jobs.finished_backups(limit=100000):
            outcomes[job.state] = outcomes.get(job.state, 0) + 1
            if job.started_at and job.finished_at:
                durations.append((job.finished_at - job.started_at).total_seconds())
        ages = {}
        total_bytes = 0
        for p in uow.partitions.list():
            backups = uow.backups.list(partition_id=p.partition_id)
            total_bytes += sum(b.size_bytes for b in backups)
            if backups:
                ages[p.partition_id] = (now - backups[-1].created_at).total_seconds()
    return {"outcomes": outcomes, "durations": durations, "bytes": total_bytes, "ages": ages}


def health_of(ctx: ServiceContext, partition_id: str) -> PartitionHealth:
    """Return one partition's health; 404 if it is not registered."""
    from safehold.service.protection import find_partition

    pid = find_partition(ctx, partition_id).partition_id
    return next(h for h in partition_health(ctx) if h.partition_id == pid)
