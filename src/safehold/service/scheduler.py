"""
Periodic backups: each tick accepts the backups that are due, and only those.

Each protected partition keeps ``next_due_at``, its next slot (``core.slots``
spreads slots over the interval by partition id, anchored where backup was
enabled). A tick therefore reads what is due through an index, not the fleet:

1. partitions whose protection changed (``reschedule``) get their next slot,
   or none when nothing is enabled or they are suspended;
2. due partitions, a batch at a time: one read transaction loads them with the
   mappings, the policies (parsed once per tick) and their backups; the
   storages they need are checked outside any transaction (``ensure_repositories``);
   one write transaction advances each partition's slot *conditionally* on the
   slot it read (so two schedulers cannot both take it) and inserts the jobs.

The controller bounds a tick's work (``BUDGET`` seconds of batches, at least
one of each kind): when more is due, the tick says so (``TickReport.more``) and
the controller ticks again at once, so a burst (10,000 partitions enabled at once) is worked
off in short rounds that never hold up the sweeps or a failover.

However many slots were missed while no controller ran, one backup is taken and
the next slot is counted from now; a partition overdue by a whole period or more
(a long outage, a resumed suspension) takes that one backup at its own next slot,
so the catch-up of a fleet is spread over one period too. A partition busy with
another job (one still queued, say) takes its next slot, or is tried again
within a minute if that slot is far; one whose storage is unreachable
after ``STORAGE_RETRY``, with the reason kept for its health.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from safehold.core.errors import SafeholdError
from safehold.core.policy import (
    BackupPolicy,
    EffectiveConfigs,
    EntityRef,
    FrequencySchedule,
)
from safehold.core.slots import jitter, period, schedule_key, slot_after, slot_at_or_after
from safehold.service.context import ServiceContext
from safehold.service.jobs import new_backup_job
from safehold.service.jobs.requests import chain_window
from safehold.service.model import JobRecord, PartitionRecord
from safehold.service.policies import load_policy
from safehold.service.storages import ensure_repositories, storage_key
from safehold.service.uow import UnitOfWork

__all__ = ["TickReport", "tick"]

log = logging.getLogger("safehold.scheduler")

BATCH = 250
#: Seconds of batches one tick may spend before it leaves the rest to the next.
BUDGET = 0.25
#: (partition id, the slot read, the next slot or None, schedule key or None).
Slot = tuple[str, datetime, datetime | None, str | None]
BUSY_RETRY = timedelta(seconds=30)
#: A busy partition waits for its next slot if it is at most this far away.
BUSY_SLOT_MAX = timedelta(minutes=5)
STORAGE_RETRY = timedelta(minutes=1)
SCHEDULED_TIMEOUT = timedelta(minutes=10)


@dataclass
class TickReport:
    """What one tick did, for logs and the fleet benchmark."""

    rescheduled: int = 0
    due: int = 0
    deferred: int = 0
    created: int = 0
    busy: int = 0
    unreachable: int = 0
    more: bool = False  # work was left for the next tick


class _Policies:
    """The policies of one tick, each read and unsealed once."""

    def __init__(self, ctx: ServiceContext, uow: UnitOfWork) -> None:
        self._ctx, self._uow = ctx, uow
        self._parsed: dict[str, BackupPolicy | None] = {}
        self.storage_keys: dict[str, str] = {}

    def get(self, name: str) -> BackupPolicy | None:
        if name not in self._parsed:
            try:
                self._parsed[name] = load_policy(self._ctx, self._uow, name)
            except SafeholdError as exc:
                log.warning("policy %s cannot be used: %s", name, exc.message)
                self._parsed[name] = None
        found = self._parsed[name]
        if found is not None and name not in self.storage_keys:
            self.storage_keys[name] = storage_key(found.storage)
        return found


@dataclass
class _Plan:
    """A protected partition, its policy, and what its slots are computed from."""

    p: PartitionRecord
    name: str
    policy: BackupPolicy
    anchor: datetime
    storage: str  # the policy storage's key, computed once per policy

    @property
    def key(self) -> str:
        return schedule_key(self.name, self.policy.schedule, self.anchor)

    def at_or_after(self, ctx: ServiceContext, t: datetime) -> datetime:
        return slot_at_or_after(
            self.policy.schedule,
            t,
            anchor=self.anchor,
            partition_id=self.p.partition_id,
            spread=ctx.schedule_spread,
        )

    def after(self, ctx: ServiceContext, t: datetime) -> datetime:
        return slot_after(
            self.policy.schedule,
            t,
            anchor=self.anchor,
            partition_id=self.p.partition_id,
            spread=ctx.schedule_spread,
        )


def _protection(
    uow: UnitOfWork, policies: _Policies, parts: list[PartitionRecord]
) -> list[tuple[PartitionRecord, _Plan | None]]:
    """Each partition with what protects it now, or None if nothing does (or it is suspended)."""
    mappings = uow.mappings.all()
    suspended = uow.mappings.suspensions()
    enabled = uow.mappings.enabled_times()
    configs = EffectiveConfigs(mappings, suspended)
    out: list[tuple[PartitionRecord, _Plan | None]] = []
    for p in parts:
        eff = configs.of(p)
        policy = None
        if eff.policy_name is not None and not eff.suspended:
            policy = policies.get(eff.policy_name)
        if policy is None or eff.policy_name is None:
            out.append((p, None))
            continue
        level = next(e for e in p.chain() if e.kind == eff.policy_from)
        anchor = enabled.get(EntityRef(level.kind, level.key)) or p.created_at
        out.append(
            (p, _Plan(p, eff.policy_name, policy, anchor, policies.storage_keys[eff.policy_name]))
        )
    return out


def _reschedule(ctx: ServiceContext, now: datetime, report: TickReport) -> bool:
    """Give the partitions marked ``reschedule`` their next slot; return whether more remain."""
    with ctx.uow() as uow:
        parts = uow.partitions.to_reschedule(BATCH)
        if not parts:
            return False
        schedules: list[tuple[str, datetime | None, str | None]] = []
        for p, plan in _protection(uow, _Policies(ctx, uow), parts):
            if plan is None:
                schedules.append((p.partition_id, None, None))
                continue
            if plan.key == p.schedule_key and p.next_due_at is not None:
                due = p.next_due_at  # nothing that decides its slots changed
            # After its last scheduled backup: the first slot after it (one in
            # the past is due now, as a missed slot is). Newly protected: at once
            # with no spread (as SF takes a frequency schedule's first backup),
            # else at its next slot.
            elif p.last_scheduled_at is not None:
                due = plan.after(ctx, p.last_scheduled_at)
            elif ctx.schedule_spread == 0 and isinstance(plan.policy.schedule, FrequencySchedule):
                due = now
            else:
                due = plan.at_or_after(ctx, max(plan.anchor, now))
            schedules.append((p.partition_id, due, plan.key))
        uow.partitions.reschedule_many(schedules)
        uow.commit()
    report.rescheduled += len(parts)
    return len(parts) == BATCH


def _schedule_due(
    ctx: ServiceContext, now: datetime, report: TickReport
) -> tuple[list[JobRecord], bool]:
    """Accept one batch of due backups; return the new jobs and whether more may be due."""
    with ctx.uow() as uow:
        due = uow.partitions.due(now, BATCH)
        if not due:
            return [], False
        plans: list[_Plan] = []
        moves: list[Slot] = []  # partitions no longer protected, or deferred
        for p, plan in _protection(uow, _Policies(ctx, uow), due):
            assert p.next_due_at is not None  # it is due
            if plan is None:
                moves.append((p.partition_id, p.next_due_at, None, None))
            elif now - p.next_due_at >= period(plan.policy.schedule, p.next_due_at):
                # Overdue by a whole period: its one catch-up backup goes at its own
                # next slot, so a fleet's catch-up is spread like its schedule.
                report.deferred += 1
                nxt = min(plan.after(ctx, now), now + period(plan.policy.schedule, now))
                moves.append((p.partition_id, p.next_due_at, nxt, plan.key))
            else:
                plans.append(plan)
        uow.partitions.take_slots(moves, None)
        uow.commit()
    report.due += len(due)
    specs = {pl.storage: pl.policy.storage for pl in plans}
    failed = ensure_repositories(ctx, specs)  # outside any transaction
    sealed = {k: ctx.secrets.seal_storage(s.to_json()) for k, s in specs.items() if k not in failed}
    new: list[JobRecord] = []
    with ctx.uow() as uow:
        down = [pl for pl in plans if pl.storage in failed]
        wanted = [pl for pl in plans if pl.storage not in failed]
        report.unreachable += len(down)
        retry = [(pl.p.partition_id, _due(pl), now + STORAGE_RETRY, pl.key) for pl in down]
        moved = uow.partitions.take_slots(retry, None)
        for key, why in failed.items():
            uow.partitions.record_backup_failures(
                [
                    pl.p.partition_id
                    for pl in down
                    if pl.storage == key and pl.p.partition_id in moved
                ],
                f"SAFEHOLD_E_STORAGE_UNREACHABLE: {why}",
            )
        slots = [(pl.p.partition_id, _due(pl), pl.after(ctx, now), pl.key) for pl in wanted]
        got = uow.partitions.take_slots(slots, now)
        taken = [pl for pl in wanted if pl.p.partition_id in got]
        # The slots taken above hold the partitions' rows, so no request can
        # start a job of one of them until this transaction ends.
        busy = uow.jobs.busy_partitions([pl.p.partition_id for pl in taken])
        report.busy += len(busy)
        # The chains of the partitions that get a job: their newest backups only.
        free = [pl for pl in taken if pl.p.partition_id not in busy]
        window = max((chain_window(pl.policy) for pl in free), default=0)
        history = uow.backups.newest_of_partitions([pl.p.partition_id for pl in free], window)
        uow.partitions.reschedule_many(
            [
                (pl.p.partition_id, _busy_retry(ctx, pl, now), pl.key)
                for pl in taken
                if pl.p.partition_id in busy
            ]
        )
        new = [
            new_backup_job(
                ctx,
                pl.p,
                pl.policy.storage,
                pl.policy,
                history.get(pl.p.partition_id, []),
                now=now,
                timeout=SCHEDULED_TIMEOUT,
                scheduled=True,
                incremental=True,
                sealed_storage=sealed[pl.storage],
            )
            for pl in free
        ]
        uow.jobs.insert_many(new)
        uow.commit()
    report.created += len(new)
    return new, len(due) == BATCH


def _busy_retry(ctx: ServiceContext, plan: _Plan, now: datetime) -> datetime:
    """
    When a partition busy with another job (one already queued, say) is tried again.

    Its next slot when that is near: a backlog then keeps the fleet's spread
    (all busy partitions retried at one instant would come due together, tick
    after tick). A far slot (a daily schedule) is not waited for: the partition
    is tried again within ``BUSY_RETRY``, at an offset of its own.
    """
    nxt = plan.after(ctx, now)
    if nxt - now <= BUSY_SLOT_MAX:
        return nxt
    return now + BUSY_RETRY + jitter(plan.p.partition_id, BUSY_RETRY)


def _due(plan: _Plan) -> datetime:
    assert plan.p.next_due_at is not None  # only due partitions are planned
    return plan.p.next_due_at


def tick(
    ctx: ServiceContext, report: TickReport | None = None, *, budget: float | None = None
) -> list[JobRecord]:
    """
    Accept the periodic backups that are due now; return the new jobs.

    With a *budget* (seconds), stop starting batches once it is spent (after at
    least one of each kind) and set ``report.more`` if work remains; without
    one, do everything that is due.

    Run by one controller at a time (the leader); a second one running it by
    mistake takes no slot twice, since every slot is taken conditionally.
    """
    report = report if report is not None else TickReport()
    now = ctx.clock()
    started = time.monotonic()

    def in_budget() -> bool:
        return budget is None or time.monotonic() - started < budget

    more = _reschedule(ctx, now, report)
    while more and in_budget():
        more = _reschedule(ctx, now, report)
    batch, due_more = _schedule_due(ctx, now, report)
    jobs = list(batch)
    while due_more and in_budget():
        batch, due_more = _schedule_due(ctx, now, report)
        jobs += batch
    report.more = more or due_more
    if jobs or report.unreachable:
        log.info(
            "tick: %d due, %d backups accepted, %d busy, %d unreachable",
            report.due,
            len(jobs),
            report.busy,
            report.unreachable,
        )
    return jobs
