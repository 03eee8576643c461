"""
Read-only views for the operator console: paged, filtered, and a few queries each.

The use cases in ``protection``/``jobs`` answer one entity at a time, or all
of them; the console's lists must stay under 300 ms at 10,000 partitions, so
these views page and filter in the catalog: two or three queries per page
whatever the number of partitions. They never write. On the SQL catalog they
query its tables; on any other ``UnitOfWork`` (the in-memory one of the tests)
they fall back to the stores' lists, which give the same answers more slowly.

The overview's health is ``service.health``'s own: one source of truth for
what Ok, Warning and Error mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from safehold.core.policy import EntityRef, effective_config
from safehold.core.snapshot import Snapshot
from safehold.service import catalog as t
from safehold.service import health
from safehold.service.config_backup import CONFIG_TAG
from safehold.service.context import ServiceContext
from safehold.service.model import JobRecord
from safehold.service.rpo_views import RecoveryPoint, policy_periods, recovery_points
from safehold.service.uow import UnitOfWork

__all__ = [
    "Activity",
    "ConfigOperation",
    "EntityConfig",
    "Overview",
    "PartitionRow",
    "RecoveryPoint",
    "backup_outcome_counts",
    "config_backups",
    "config_operations",
    "job_history",
    "overview",
    "partition_page",
    "recovery_points",
]

SEVERITY = {"Error": 0, "Warning": 1, "Ok": 2}


@dataclass(frozen=True)
class PartitionRow:
    """One partition in the tree, with where its policy and suspension come from."""

    partition_id: str
    application: str
    service: str
    source: str
    policy: str | None
    policy_from: str | None
    suspended: bool
    suspended_from: str | None
    # The recovery point: the last good backup, the policy's period, the last drill's RTO.
    last_good: datetime | None = None
    objective: timedelta | None = None
    drill_rto: float | None = None
    late: bool = False


@dataclass(frozen=True)
class EntityConfig:
    """What is set directly on an application or service: its policy and suspension."""

    policy: str | None
    suspended: bool


@dataclass(frozen=True)
class Overview:
    """Health counts, the partitions that need attention (worst first), and jobs running."""

    counts: dict[str, int]
    problems: list[health.PartitionHealth]
    total: int
    active_jobs: int


def _conn(uow: UnitOfWork) -> sa.Connection | None:
    # The SQL unit of work's stores carry its connection; the in-memory one has none.
    conn = getattr(uow.partitions, "conn", None)
    return conn if isinstance(conn, sa.Connection) else None


def partition_page(
    ctx: ServiceContext, *, query: str = "", offset: int = 0, limit: int = 50
) -> tuple[list[PartitionRow], int, dict[EntityRef, EntityConfig]]:
    """
    Return one page of partitions ordered by application, service and id.

    *query* keeps the partitions whose application, service or id contains it.
    Also returns the total that match, and the direct configuration of the
    applications and services on the page.
    """
    offset, limit = max(offset, 0), max(1, min(limit, 500))
    now = ctx.clock()
    with ctx.uow() as uow:
        mappings = uow.mappings.all()
        suspended = uow.mappings.suspensions()
        periods = policy_periods(uow, set(mappings.values()), now)
        conn = _conn(uow)
        if conn is not None:
            p = t.partitions.c
            where: sa.ColumnElement[bool] = sa.true()
            if query:
                like = f"%{query.replace('%', '').replace('_', '')}%"
                where = sa.or_(
                    p.application.like(like), p.service.like(like), p.partition_id.like(like)
                )
            total = conn.execute(
                sa.select(sa.func.count()).where(where).select_from(t.partitions)
            ).scalar_one()
            d = t.drill_state.c
            rows = conn.execute(
                sa.select(
                    p.partition_id,
                    p.application,
                    p.service,
                    p.source,
                    p.last_backup_at,
                    p.created_at,
                    d.rto_seconds,
                )
                .select_from(
                    t.partitions.outerjoin(t.drill_state, d.partition_id == p.partition_id)
                )
                .where(where)
                .order_by(p.application, p.service, p.partition_id)
                .offset(offset)
                .limit(limit)
            ).all()
            items = [
                (
                    r.partition_id,
                    r.application,
                    r.service,
                    r.source,
                    r.last_backup_at,
                    r.rto_seconds,
                )
                for r in rows
            ]
        else:
            every = sorted(
                uow.partitions.list(), key=lambda r: (r.application, r.service, r.partition_id)
            )
            every = [
                r
                for r in every
                if not query or any(query in x for x in (r.application, r.service, r.partition_id))
            ]
            total = len(every)
            drill_states = uow.drills.states()
            items = [
                (
                    r.partition_id,
                    r.application,
                    r.service,
                    r.source,
                    r.last_backup_at,
                    getattr(drill_states.get(r.partition_id), "rto_seconds", None),
                )
                for r in every[offset : offset + limit]
            ]
    out = []
    entities: dict[EntityRef, EntityConfig] = {}
    for pid, app, svc, source, last_good, rto in items:
        chain = [
            EntityRef("Application", app),
            EntityRef("Service", svc),
            EntityRef("Partition", pid),
        ]
        eff = effective_config(chain, mappings, suspended)
        objective = periods.get(eff.policy_name) if eff.policy_name else None
        out.append(
            PartitionRow(
                pid,
                app,
                svc,
                source,
                eff.policy_name,
                eff.policy_from,
                eff.suspended,
                eff.suspended_from,
                last_good=last_good,
                objective=objective,
                drill_rto=rto,
                late=objective is not None
                and last_good is not None
                and now - last_good > objective,
            )
        )
        for e in chain[:2]:
            entities[e] = EntityConfig(mappings.get(e), e in suspended)
    return out, total, entities


def job_history(ctx: ServiceContext, partition_id: str, limit: int = 25) -> list[JobRecord]:
    """Return the partition's newest jobs, newest first (one query)."""
    with ctx.uow() as uow:
        conn = _conn(uow)
        if conn is None:
            found = [
                uow.jobs.latest(partition_id, [k])
                for k in ("backup", "restore", "clean", "dataloss")
            ]
            jobs = [j for j in found if j is not None]
            return sorted(jobs, key=lambda j: j.created_at, reverse=True)[:limit]
        ids = conn.execute(
            sa.select(t.jobs.c.id)
            .where(t.jobs.c.partition_id == partition_id)
            .order_by(t.jobs.c.created_at.desc(), t.jobs.c.id.desc())
            .limit(limit)
        ).scalars()
        return [j for j in (uow.jobs.get(i) for i in list(ids)) if j is not None]


def overview(
    ctx: ServiceContext,
    states: list[health.PartitionHealth] | None = None,
    *,
    problems: int = 50,
) -> Overview:
    """
    Health counts, the worst *problems* partitions first, and how many jobs run.

    *states* is the fleet's health when the caller has it (the app shares one
    ``health.FleetView`` between the console, ``/metrics`` and ``/safehold/health``);
    otherwise it is computed now.
    """
    if states is None:
        states = health.partition_health(ctx)
    counts = {"Ok": 0, "Warning": 0, "Error": 0}
    for h in states:
        counts[h.state] = counts.get(h.state, 0) + 1
    bad = sorted(
        (h for h in states if h.state != "Ok"), key=lambda h: (SEVERITY[h.state], h.partition_id)
    )
    with ctx.uow() as uow:
        active = uow.jobs.running_count()
    return Overview(counts, bad[:problems], len(states), active)


@dataclass(frozen=True)
class Activity:
    """Jobs finished per hour over the last *hours* hours, oldest hour first."""

    hours: list[datetime]
    succeeded: list[int]
    failed: list[int]


def _hour_key(column: Any, dialect: str) -> Any:
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD HH24")
    return sa.func.strftime("%Y-%m-%d %H", column)


def activity(
    ctx: ServiceContext, hours: int = 24, past: dict[datetime, tuple[int, int]] | None = None
) -> Activity:
    """
    Count the jobs that finished in each of the last *hours* hours (one grouped query).

    Succeeded means ``Success``; failed means ``Failure`` or ``Timeout``. On a
    catalog other than SQL (the in-memory one) every count is 0.

    *past*, kept by the caller between calls, holds the counts of hours that
    are over: those never change, so a later call reads only the jobs of the
    hours it does not hold (at a steady fleet, the current hour's), not a
    whole day of jobs again.
    """
    now = ctx.clock().replace(minute=0, second=0, microsecond=0)
    starts = [now - timedelta(hours=hours - 1 - i) for i in range(hours)]
    index = {h.strftime("%Y-%m-%d %H"): i for i, h in enumerate(starts)}
    ok, bad = [0] * hours, [0] * hours
    known = past if past is not None else {}
    first = next((i for i, h in enumerate(starts) if h not in known), hours)
    for i, h in enumerate(starts[:first]):
        ok[i], bad[i] = known[h]
    with ctx.uow() as uow:
        conn = _conn(uow)
        if conn is not None and first < hours:
            j = t.jobs.c
            key = _hour_key(j.finished_at, conn.dialect.name).label("hour")
            rows = conn.execute(
                sa.select(key, j.state, sa.func.count())
                .where(
                    j.finished_at >= starts[first],
                    j.state.in_(("Success", "Failure", "Timeout")),
                )
                .group_by(key, j.state)
            ).all()
            for hour, state, count in rows:
                k = index.get(hour)
                if k is not None and k >= first:
                    (ok if state == "Success" else bad)[k] += int(count)
    if past is not None and conn is not None:
        for i, h in enumerate(starts[:-1]):  # every hour but the current one is over
            past[h] = (ok[i], bad[i])
        for h in [h for h in past if h < starts[0]]:
            del past[h]
    return Activity(starts, ok, bad)


def job_json(j: JobRecord) -> dict[str, Any]:
    """A job as the console shows it (no parameters: they may name storages)."""
    return {
        "id": j.id,
        "kind": j.kind,
        "state": j.state,
        "scheduled": j.scheduled,
        "created_at": j.created_at,
        "finished_at": j.finished_at,
        "agent": j.agent_id,
        "failure": f"{j.failure_code}: {j.failure_message}" if j.failure_code else None,
        "progress": j.progress,
    }


def backup_outcome_counts(ctx: ServiceContext) -> dict[str, int]:
    """
    How many partitions' newest backup job ended in each state (one grouped query).

    ``Never`` counts the partitions with no outcome yet. A bounded stand-in for
    the health counts while the fleet's health is being computed; on a catalog
    other than SQL it reads the partitions.
    """
    out: dict[str, int] = {}
    with ctx.uow() as uow:
        conn = _conn(uow)
        if conn is not None:
            p = t.partitions.c
            for state, count in conn.execute(
                sa.select(p.last_backup_state, sa.func.count()).group_by(p.last_backup_state)
            ):
                key = state or "Never"
                out[key] = out.get(key, 0) + int(count)
        else:
            for r in uow.partitions.list():
                key = r.last_backup_state or "Never"
                out[key] = out.get(key, 0) + 1
    return out


# --- Configuration backups --------------------------------------------------------------


@dataclass(frozen=True)
class ConfigOperation:
    """A configuration backup or restore operation (``service.config_backup``)."""

    id: str
    kind: str
    state: str
    created_at: datetime
    finished_at: datetime | None
    message: str | None


def config_operations(ctx: ServiceContext, limit: int = 20) -> list[ConfigOperation]:
    """The newest configuration operations, newest first ([] on a catalog other than SQL)."""
    with ctx.uow() as uow:
        conn = _conn(uow)
        if conn is None:
            return []
        o = t.operations.c
        rows = conn.execute(
            sa.select(t.operations).order_by(o.created_at.desc(), o.id).limit(limit)
        ).all()
    return [
        ConfigOperation(r.id, r.kind, r.state, r.created_at, r.finished_at, r.message) for r in rows
    ]


def config_backups(ctx: ServiceContext, policy_name: str) -> list[Snapshot]:
    """
    The configuration backups in policy *policy_name*'s storage, newest first.

    Reads the storage (outside any catalog transaction, with the short retry
    budget); an empty storage has none. Raises the storage's errors.
    """
    from safehold.service.policies import load_policy

    with ctx.uow() as uow:
        spec = load_policy(ctx, uow, policy_name).storage
    store = ctx.check_storage(spec)
    try:
        snaps = ctx.engine.snapshots(store)
    finally:
        store.close()
    return sorted((s for s in snaps if CONFIG_TAG in s.tags), key=lambda s: s.time, reverse=True)
