"""
Recovery points for the operator console: each partition's last good backup against its objective.

The objective is the period of the backup policy that applies to the partition
(its interval, or the time between two runs of a time-based schedule): the
recovery point the schedule promises. On the SQL catalog the effective policy
(the lowest mapping wins, as ``core.policy.effective_config`` says), the age
and the order are computed by the database, so a page costs two queries
whatever the fleet's size; on any other ``UnitOfWork`` (the in-memory one of
the tests) every partition is read and sorted here, with the same answer.
Read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from safehold.core.policy import (
    FrequencySchedule,
    PolicyError,
    Schedule,
    effective_config,
    next_due,
    parse_schedule,
)
from safehold.service import catalog as t
from safehold.service.context import ServiceContext
from safehold.service.uow import UnitOfWork

__all__ = ["RecoveryPoint", "policy_periods", "recovery_points"]


def _conn(uow: UnitOfWork) -> sa.Connection | None:
    # The SQL unit of work's stores carry its connection; the in-memory one has none.
    conn = getattr(uow.partitions, "conn", None)
    return conn if isinstance(conn, sa.Connection) else None


def _period(schedule: Schedule, now: datetime) -> timedelta:
    """How far apart the schedule's backups are: the recovery point it promises."""
    if isinstance(schedule, FrequencySchedule):
        return schedule.interval
    first = next_due(schedule, now)
    return next_due(schedule, first) - first


def policy_periods(uow: UnitOfWork, names: set[str], now: datetime) -> dict[str, timedelta]:
    """Each named policy's period (policies that cannot be read are left out)."""
    out: dict[str, timedelta] = {}
    for name in names:
        doc = uow.policies.get(name)
        if doc is None:
            continue
        try:
            out[name] = _period(parse_schedule(doc.get("Schedule")), now)
        except PolicyError:
            continue
    return out


@dataclass(frozen=True)
class RecoveryPoint:
    """
    A partition's recovery point: how old its newest good backup is, against its objective.

    *objective* is the period of the backup policy that applies (its interval,
    or the time between two runs of a time-based schedule); ``None`` when no
    policy applies. *age* counts from the last good backup, or, before the
    first one, from when backup was enabled (*last_good* is then ``None``).
    *drill_rto* is the last drill's measured RTO in seconds.
    """

    partition_id: str
    application: str
    service: str
    policy: str | None
    suspended: bool
    last_good: datetime | None
    age: timedelta | None
    objective: timedelta | None
    drill_state: str | None = None
    drill_rto: float | None = None

    @property
    def late(self) -> bool:
        """Whether the recovery point is older than the objective."""
        return self.objective is not None and self.age is not None and self.age > self.objective

    @property
    def ratio(self) -> float:
        """Age over objective (0 without an objective)."""
        if self.objective is None or self.age is None or not self.objective.total_seconds():
            return 0.0
        return self.age / self.objective


def recovery_points(
    ctx: ServiceContext, *, offset: int = 0, limit: int = 50, late_only: bool = False
) -> tuple[list[RecoveryPoint], int, int]:
    """
    Return one page of partitions' recovery points, the late ones first (the latest first).

    Then the protected ones by how much of their objective has passed, then the
    unprotected ones (by id). Also returns how many partitions there are (or late
    ones, with *late_only*) and how many are late.

    Cost on the SQL catalog: two queries whatever the fleet's size (a count and
    one page, the effective policy and the age computed and sorted by the
    database), plus the policies' schedules. Elsewhere: every partition is read.
    """
    offset, limit = max(offset, 0), max(1, min(limit, 500))
    now = ctx.clock()
    with ctx.uow() as uow:
        conn = _conn(uow)
        if conn is None:
            every, late = _points_in_memory(ctx, uow, now)
            if late_only:
                every = [r for r in every if r.late]
            return every[offset : offset + limit], len(every), late
        periods = policy_periods(uow, {d["Name"] for d in uow.policies.list()}, now)
        return _points_in_sql(conn, periods, now, offset, limit, late_only)


def _epoch_seconds(column: Any, dialect: str) -> Any:
    """A datetime column as seconds since 1970 (the catalog stores UTC)."""
    if dialect == "postgresql":
        return sa.func.extract("epoch", column)
    return (sa.func.julianday(column) - 2440587.5) * 86400.0


def _points_in_sql(
    conn: sa.Connection,
    periods: dict[str, timedelta],
    now: datetime,
    offset: int,
    limit: int,
    late_only: bool,
) -> tuple[list[RecoveryPoint], int, int]:
    p = t.partitions.c
    d = t.drill_state.c
    m = {k: t.mappings.alias(f"m_{k[0].lower()}") for k in ("Application", "Service", "Partition")}
    s = {k: t.suspensions.alias(f"s_{k[0].lower()}") for k in m}
    keys = {"Application": p.application, "Service": p.service, "Partition": p.partition_id}
    joined: Any = t.partitions
    for kind, key in keys.items():
        joined = joined.outerjoin(m[kind], sa.and_(m[kind].c.kind == kind, m[kind].c.key == key))
        joined = joined.outerjoin(s[kind], sa.and_(s[kind].c.kind == kind, s[kind].c.key == key))
    joined = joined.outerjoin(t.drill_state, d.partition_id == p.partition_id)
    lowest = ("Partition", "Service", "Application")
    policy = sa.func.coalesce(*(m[k].c.policy_name for k in lowest))
    enabled = sa.case(
        *((m[k].c.policy_name.is_not(None), m[k].c.enabled_at) for k in lowest[:2]),
        else_=m["Application"].c.enabled_at,
    )
    since = sa.func.coalesce(p.last_backup_at, enabled, p.created_at)
    dialect = conn.dialect.name
    age = (sa.literal(now.timestamp()) - _epoch_seconds(since, dialect)).label("age")
    period: Any = (
        sa.case(
            {name: td.total_seconds() for name, td in periods.items()},
            value=policy,
            else_=sa.null(),
        )
        if periods
        else sa.null()
    )
    period = sa.cast(period, sa.Float).label("period")
    is_late = sa.and_(period.is_not(None), age > period)
    late_flag = sa.case((is_late, 1), else_=0)
    suspended = sa.or_(*(s[k].c.key.is_not(None) for k in lowest))
    total, late = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(late_flag), 0)).select_from(joined)
    ).one()
    query = (
        sa.select(
            p.partition_id,
            p.application,
            p.service,
            policy.label("policy"),
            suspended.label("suspended"),
            p.last_backup_at,
            age,
            period,
            d.last_state,
            d.rto_seconds,
        )
        .select_from(joined)
        .order_by(
            late_flag.desc(),
            sa.case((period.is_(None), 1), else_=0),
            sa.case((period.is_(None), 0.0), else_=age / period).desc(),
            p.partition_id,
        )
        .offset(offset)
        .limit(limit)
    )
    if late_only:
        query = query.where(is_late)
    rows = conn.execute(query).all()
    points = [
        RecoveryPoint(
            r.partition_id,
            r.application,
            r.service,
            r.policy,
            bool(r.suspended) and r.policy is not None,
            r.last_backup_at,
            timedelta(seconds=float(r.age)) if r.policy is not None else None,
            timedelta(seconds=float(r.period)) if r.period is not None else None,
            r.last_state,
            r.rto_seconds,
        )
        for r in rows
    ]
    return points, int(late) if late_only else int(total), int(late)


def _points_in_memory(
    ctx: ServiceContext, uow: UnitOfWork, now: datetime
) -> tuple[list[RecoveryPoint], int]:
    """Every partition's recovery point, sorted, from the stores' lists (no SQL)."""
    del ctx
    mappings = uow.mappings.all()
    suspended = uow.mappings.suspensions()
    enabled = uow.mappings.enabled_times()
    periods = policy_periods(uow, set(mappings.values()), now)
    drill_states = uow.drills.states()
    points = []
    for r in uow.partitions.list():
        eff = effective_config(r.chain(), mappings, suspended)
        objective = periods.get(eff.policy_name) if eff.policy_name else None
        age = None
        if eff.policy_name is not None:
            level = next((e for e in r.chain() if e.kind == eff.policy_from), None)
            since = r.last_backup_at or (enabled.get(level) if level else None) or r.created_at
            age = now - since
        drill = drill_states.get(r.partition_id)
        points.append(
            RecoveryPoint(
                r.partition_id,
                r.application,
                r.service,
                eff.policy_name,
                eff.suspended,
                r.last_backup_at,
                age,
                objective,
                drill.last_state if drill else None,
                drill.rto_seconds if drill else None,
            )
        )
    late = sum(1 for r in points if r.late)
    points.sort(key=lambda r: (not r.late, r.objective is None, -r.ratio, r.partition_id))
    return points, late
