"""
Periodic backups: each tick asks for the backups whose schedule is due.

A partition is due when its effective policy's schedule has a slot between the
last scheduled backup (or, before the first one, the moment backup was enabled)
and now. However many slots were missed while the controller was down, one
backup is taken and the next slot is counted from now: missed schedules run
once, not once per slot. Suspended partitions are skipped; a partition that is
busy with another job is tried again at the next tick.
"""

from __future__ import annotations

import logging
from datetime import datetime

from safehold.core.errors import ConflictError, SafeholdError
from safehold.core.policy import FrequencySchedule, effective_config, next_due
from safehold.service.context import ServiceContext
from safehold.service.jobs import request_backup
from safehold.service.model import JobRecord, PartitionRecord
from safehold.service.protection import load_policy
from safehold.service.uow import UnitOfWork

__all__ = ["due_partitions", "tick"]

log = logging.getLogger("safehold.scheduler")


def _enabled_at(uow: UnitOfWork, p: PartitionRecord, scope: str) -> datetime | None:
    entity = next(e for e in p.chain() if e.kind == scope)
    return uow.mappings.enabled_at(entity)


def due_partitions(ctx: ServiceContext, now: datetime) -> list[str]:
    """Return the ids of the partitions whose periodic backup is due at *now*."""
    due = []
    with ctx.uow() as uow:
        mappings = uow.mappings.all()
        suspended = uow.mappings.suspensions()
        for p in uow.partitions.list():
            eff = effective_config(p.chain(), mappings, suspended)
            if eff.policy_name is None or eff.suspended:
                continue
            schedule = load_policy(ctx, uow, eff.policy_name).schedule
            if p.last_scheduled_at is None and isinstance(schedule, FrequencySchedule):
                due.append(p.partition_id)  # the first backup starts at once, as in SF
                continue
            ref = p.last_scheduled_at or _enabled_at(uow, p, eff.policy_from) or now
            if next_due(schedule, ref) <= now:
                due.append(p.partition_id)
    return due


def tick(ctx: ServiceContext) -> list[JobRecord]:
    """Accept the periodic backups that are due now; return the new jobs."""
    now = ctx.clock()
    jobs = []
    for pid in due_partitions(ctx, now):
        try:
            jobs.append(request_backup(ctx, pid, scheduled=True))
        except ConflictError:
            continue  # busy: try again at the next tick
        except SafeholdError as exc:
            # One partition's unreachable storage must not stop the others.
            log.warning("periodic backup of partition %s not started: %s", pid, exc.message)
            continue
        with ctx.uow() as uow:
            p = uow.partitions.get(pid)
            if p is not None:
                p.last_scheduled_at = now
                uow.partitions.save(p)
                uow.commit()
    return jobs
