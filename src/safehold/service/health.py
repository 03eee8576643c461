"""
Health per partition, in the spirit of SF's ``System.BackupRestoreManager`` reports, and metrics.

A partition with backup enabled is ``Ok`` when its last backup succeeded and is
within its schedule, ``Warning`` when the last attempt failed, it is suspended,
or the last good backup is late by up to one more period, and ``Error`` when it
is later than that or has never succeeded after two periods.

A partition with a drill policy (``service.drills``) also gets its drills'
verdict; its state is the worse of the two.

Cost: a fleet's health is computed from one read of the partitions (each row
keeps its last good backup and its newest backup job's outcome), the mappings,
the policies and the drill state (three more reads): a constant number of
queries whatever the fleet's size. The
result is kept for ``FleetView.ttl`` seconds and shared by concurrent callers,
so twenty clients polling cost one computation.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from safehold.core.drill import DrillVerdict
from safehold.core.errors import SafeholdError
from safehold.core.policy import (
    EffectiveConfigs,
    EntityRef,
    FrequencySchedule,
    Schedule,
    next_due,
)
from safehold.core.snapshot import format_time
from safehold.service import drills
from safehold.service.context import ServiceContext
from safehold.service.drill_records import DrillState
from safehold.service.model import PartitionView
from safehold.service.partitions import find_partition
from safehold.service.policies import load_policy

__all__ = ["FleetHealth", "FleetView", "PartitionHealth", "health_of", "partition_health"]

log = logging.getLogger("safehold.health")


@dataclass(frozen=True)
class PartitionHealth:
    """One partition's health state and why."""

    partition_id: str
    state: str
    reason: str
    last_good: datetime | None
    # With a drill policy (service.drills): the backup's own state, and the drills' verdict.
    backup_state: str | None = None
    drill_state: str | None = None
    drill_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the API shape."""
        doc: dict[str, Any] = {
            "PartitionId": self.partition_id,
            "SourceId": "System.BackupRestoreManager",
            "Property": "Backup",
            "HealthState": self.state,
            "Description": self.reason,
            "LastSuccessfulBackupUtc": format_time(self.last_good) if self.last_good else None,
        }
        if self.drill_state is not None:
            doc["Drill"] = {"HealthState": self.drill_state, "Description": self.drill_reason}
        return doc


@dataclass(frozen=True)
class FleetHealth:
    """Every partition's health at one moment, and the numbers behind ``/metrics``."""

    at: datetime
    partitions: list[PartitionHealth]
    outcomes: dict[str, tuple[int, float]]
    backup_bytes: int
    drills: dict[str, DrillState] = field(default_factory=dict)  # partition id → newest drill
    _ranked: list[dict[str, list[PartitionHealth]]] = field(default_factory=list, repr=False)

    def counts(self) -> dict[str, int]:
        """How many partitions are in each health state."""
        return {state: len(self.ranked(state)) for state in ("Ok", "Warning", "Error")}

    def ranked(self, state: str | None = None) -> list[PartitionHealth]:
        """
        The partitions in *state* (all when None), Error first, then Warning, then
        Ok, each in partition order. Computed once per view, whichever request
        asks first: a request then costs what it returns, not the fleet's size.
        """
        if not self._ranked:
            by: dict[str, list[PartitionHealth]] = {"Error": [], "Warning": [], "Ok": []}
            for h in self.partitions:
                by.setdefault(h.state, []).append(h)
            # Built whole, then published: a concurrent caller sees all or nothing
            # (two may both build it; they build the same).
            self._ranked.append({**by, "": [h for hs in by.values() for h in hs]})
        return self._ranked[0].get(state or "", [])


def _period(schedule: Schedule, ref: datetime) -> timedelta:
    if isinstance(schedule, FrequencySchedule):
        return schedule.interval
    first = next_due(schedule, ref)
    return next_due(schedule, first) - first


def _compute(ctx: ServiceContext, partition_id: str | None = None) -> FleetHealth:
    now = ctx.clock()
    out = []
    with ctx.reader() as uow:
        mappings = uow.mappings.all()
        enabled = uow.mappings.enabled_times()
        suspended = uow.mappings.suspensions()
        parts: list[PartitionView]
        if partition_id is None:
            parts = list(uow.partitions.brief())
        else:
            one = uow.partitions.get(partition_id)
            parts = [] if one is None else [one]
        schedules: dict[str, Schedule | None] = {}
        for name in set(mappings.values()):
            try:
                schedules[name] = load_policy(ctx, uow, name).schedule
            except SafeholdError:
                schedules[name] = None
        whole = partition_id is None
        outcomes = uow.jobs.outcome_stats("backup") if whole else {}
        backup_bytes = uow.backups.total_bytes() if whole else 0
        verdicts, drill_states = drills.judge_partitions(uow, parts, now)
    configs = EffectiveConfigs(mappings, suspended)
    for p in parts:
        eff = configs.of(p)
        last_good = p.last_backup_at
        if eff.policy_name is None:
            out.append(
                PartitionHealth(p.partition_id, "Ok", "periodic backup is not enabled", last_good)
            )
            continue
        if eff.suspended:
            reason = f"periodic backup is suspended (at the {eff.suspended_from} level)"
            if p.last_backup_state in ("Failure", "Timeout"):
                reason += f"; the last backup failed: {p.last_failure}"
            out.append(PartitionHealth(p.partition_id, "Warning", reason, last_good))
            continue
        schedule = schedules.get(eff.policy_name)
        if schedule is None:
            reason = f"backup policy {eff.policy_name!r} cannot be read"
            out.append(PartitionHealth(p.partition_id, "Error", reason, last_good))
            continue
        entity = next(e for e in p.chain() if e.kind == eff.policy_from)
        since = last_good or enabled.get(EntityRef(entity.kind, entity.key)) or p.created_at
        out.append(_judge(p.partition_id, schedule, since, last_good, p, now))
    out = [_with_drills(h, verdicts.get(h.partition_id)) for h in out]
    return FleetHealth(now, out, outcomes, backup_bytes, drill_states)


_RANK = {"Ok": 0, "Warning": 1, "Error": 2}


def _with_drills(h: PartitionHealth, verdict: DrillVerdict | None) -> PartitionHealth:
    """The worse of the backup's health and the drills' verdict, with both reasons."""
    if verdict is None:
        return h
    worse = verdict.state if _RANK[verdict.state] > _RANK[h.state] else h.state
    reason = h.reason if verdict.state == "Ok" else f"{h.reason}; {verdict.reason}"
    return replace(
        h,
        state=worse,
        reason=reason,
        backup_state=h.state,
        drill_state=verdict.state,
        drill_reason=verdict.reason,
    )


def _judge(
    pid: str, schedule: Schedule, since: datetime, last_good: datetime | None, p: Any, now: datetime
) -> PartitionHealth:
    period = _period(schedule, since)
    due = next_due(schedule, since)
    late = now - due
    if p.last_backup_state in ("Failure", "Timeout"):
        reason = f"Failed to take periodic backup for this partition with error:\n{p.last_failure}"
        return PartitionHealth(pid, "Error" if late > period else "Warning", reason, last_good)
    if late > period:
        reason = f"no successful backup since {format_time(since)}: more than two periods late"
        return PartitionHealth(pid, "Error", reason, last_good)
    if late > period / 2:
        return PartitionHealth(
            pid, "Warning", f"the backup due at {format_time(due)} is late", last_good
        )
    if last_good is not None:
        reason = f"Partition successfully backed up at {format_time(last_good)} GMT"
        return PartitionHealth(pid, "Ok", reason, last_good)
    return PartitionHealth(pid, "Ok", "waiting for the first scheduled backup", last_good)


@dataclass
class FleetView:
    """
    The fleet's health, shared by concurrent callers and refreshed in the background.

    A view younger than its time to live is served as it is. An older one is
    still served at once while one background thread computes the next, so
    callers never wait for the fleet's computation except the very first. A
    cache of catalog reads, not coordination: each replica has its own.

    The time to live is *ttl* seconds, or *cpu_share*⁻¹ times the CPU the last
    computation took if that is longer: a large fleet's view is refreshed less
    often, so that keeping it fresh never costs a replica more than that share
    of a core (at 10,000 partitions a computation takes about 0.07 s of CPU, so
    the view is refreshed every 3.5 s).
    """

    ttl: float = 1.0
    cpu_share: float = 0.02
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cached: tuple[float, FleetHealth] | None = None
    _refreshing: bool = False
    _cost: float = 0.0  # CPU seconds of the last computation
    _generation: int = 0  # bumped by invalidate: a computation begun before is not kept

    @property
    def max_age(self) -> float:
        """Seconds a view is served before a refresh starts."""
        return max(self.ttl, self._cost / self.cpu_share)

    def get(self, ctx: ServiceContext) -> FleetHealth:
        """Return the newest view (computing the first one in this call)."""
        with self._lock:
            cached = self._cached
            stale = cached is None or time.monotonic() - cached[0] >= self.max_age
            start = stale and cached is not None and not self._refreshing
            if start:
                self._refreshing = True
        if cached is None:
            return self._refresh(ctx)
        if start:
            threading.Thread(
                target=self._refresh_quietly, args=(ctx,), name="fleet-health", daemon=True
            ).start()
        return cached[1]

    def _refresh_quietly(self, ctx: ServiceContext) -> None:
        # In the background: a failure (the catalog restarting, say) is logged,
        # and the next caller tries again.
        try:
            self._refresh(ctx)
        except Exception:
            log.exception("refreshing the fleet's health failed")

    def _refresh(self, ctx: ServiceContext) -> FleetHealth:
        try:
            with self._lock:
                generation = self._generation
            cpu = time.thread_time()
            fresh = _compute(ctx)
            with self._lock:
                if generation == self._generation:
                    self._cached = (time.monotonic(), fresh)
                self._cost = time.thread_time() - cpu
            return fresh
        finally:
            with self._lock:
                self._refreshing = False

    def invalidate(self) -> None:
        """Forget the cached view (after a change a caller wants to see at once)."""
        with self._lock:
            self._cached = None
            self._generation += 1


def partition_health(ctx: ServiceContext) -> list[PartitionHealth]:
    """Return every registered partition's backup health, computed now."""
    return _compute(ctx).partitions


def health_of(ctx: ServiceContext, partition_id: str) -> PartitionHealth:
    """Return one partition's health; 404 if it is not registered."""
    pid = find_partition(ctx, partition_id).partition_id
    return _compute(ctx, pid).partitions[0]
