"""
"Retention blocked": backups that retention should have deleted by now, and are still there.

Retention runs after each backup (on the agent) and on the leader's timer
(``service.retention_sweep``, hourly, or daily for a duration of a day or more).
A snapshot it could not delete stays catalogued, and a sweep that fails is
tried again at the next round. So the catalog itself says when retention is
blocked, whatever blocks it, and on any controller:

- **error**: a backup that SF's algorithm (``core.retention_basic``) would have
  removed a whole sweep interval plus ``GRACE`` ago is still catalogued: the
  retention of its storage keeps failing, or something holds the snapshot (an
  object lock, a legal hold) past the policy's window;
- **warning**: backups older than the window are kept only because of the
  policy's ``MinimumNumberOfBackups`` (the partition has stopped getting new
  backups, so the minimum holds old ones past the window).

Judged per partition from the catalog, in a constant number of queries: each
partition's oldest backup time (one grouped query), then the backups of only the
partitions with one older than their window. A controller reuses its verdicts for up to
``REFRESH`` as long as no backup came or went meanwhile (the catalogued bytes,
one aggregate query, and the partitions' newest backup time say so); a
retention policy's change shows within that time.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from safehold.core.errors import SafeholdError
from safehold.core.policy import BackupPolicy, EffectiveConfigs
from safehold.core.retention_basic import BackupItem, apply_basic_retention, sweep_interval
from safehold.core.snapshot import format_time
from safehold.service.context import ServiceContext
from safehold.service.model import BackupRecord, PartitionView
from safehold.service.policies import load_policy
from safehold.service.uow import UnitOfWork

__all__ = ["GRACE", "REFRESH", "Verdicts", "retention_blocked"]

#: How long past its due sweep a backup may linger before retention counts as blocked.
GRACE = timedelta(hours=1)
#: Verdicts are computed again after this long, or as soon as the catalogued bytes change.
REFRESH = timedelta(minutes=1)

Verdicts = dict[str, tuple[str, str]]


@dataclass
class _Kept:
    owner: weakref.ref[ServiceContext]
    at: datetime
    fingerprint: int
    verdicts: Verdicts


_kept: dict[int, _Kept] = {}
_kept_lock = threading.Lock()


def _items(backups: list[BackupRecord]) -> list[BackupItem]:
    return [
        BackupItem(
            b.backup_id,
            b.created_at,
            b.backup_type == "Full",
            b.parent_id if b.backup_type == "Incremental" else None,
        )
        for b in backups
    ]


def _n(count: int) -> str:
    return f"{count} backup" if count == 1 else f"{count} backups"


def _with_cutoff(
    ctx: ServiceContext, uow: UnitOfWork, name: str, now: datetime
) -> tuple[BackupPolicy, datetime] | None:
    """
    Policy *name* and the time before which a backup may be held past its window
    (see ``_judge``); None: it has no retention, or cannot be read (the partition's
    health says so).
    """
    try:
        policy = load_policy(ctx, uow, name)
    except SafeholdError:
        return None
    rule = policy.retention
    if rule is None:
        return None
    return policy, now - sweep_interval(rule.duration) - GRACE - rule.duration


def _judge(
    pid: str, policy: BackupPolicy, backups: list[BackupRecord], now: datetime
) -> tuple[str, str] | None:
    rule = policy.retention
    if rule is None or not backups:
        return None
    at = now - sweep_interval(rule.duration) - GRACE
    items = _items(backups)
    overdue = apply_basic_retention(items, duration=rule.duration, minimum=rule.minimum, now=at)
    if overdue.remove:
        times = {b.backup_id: b.created_at for b in backups}
        oldest = min(times[i] for i in overdue.remove)
        return "error", (
            f"partition {pid}: retention of backup policy {policy.name!r} should have deleted "
            f"{_n(len(overdue.remove))} by {format_time(at + sweep_interval(rule.duration))} "
            f"(the oldest from {format_time(oldest)}), but they are still there: the retention "
            "of its storage keeps failing, or a hold (object lock) keeps them"
        )
    unbounded = apply_basic_retention(items, duration=rule.duration, minimum=0, now=at)
    if unbounded.remove:
        return "warning", (
            f"partition {pid}: {_n(len(unbounded.remove))} kept past the retention "
            f"window of backup policy {policy.name!r} only by MinimumNumberOfBackups "
            f"({rule.minimum}): the partition gets no new backups"
        )
    return None


def retention_blocked(
    ctx: ServiceContext, uow: UnitOfWork, parts: Sequence[PartitionView], now: datetime
) -> Verdicts:
    """Partition id → (severity, message) for each partition whose retention is blocked."""
    newest = max((p.last_backup_at for p in parts if p.last_backup_at), default=None)
    fingerprint = hash((uow.backups.total_bytes(), newest))
    with _kept_lock:
        kept = _kept.get(id(ctx))
    if (
        kept is not None
        and kept.owner() is ctx
        and kept.fingerprint == fingerprint
        and timedelta(0) <= now - kept.at < REFRESH
    ):
        return kept.verdicts
    verdicts = _verdicts(ctx, uow, parts, now)
    with _kept_lock:
        for key in [k for k, v in _kept.items() if v.owner() is None]:
            del _kept[key]
        _kept[id(ctx)] = _Kept(weakref.ref(ctx), now, fingerprint, verdicts)
    return verdicts


def _verdicts(
    ctx: ServiceContext, uow: UnitOfWork, parts: Sequence[PartitionView], now: datetime
) -> Verdicts:
    # Only a partition with a backup older than its window (as of GRACE past the
    # due sweep) can get a verdict: the backups read are only those partitions',
    # not the whole catalog's; the rest costs a few lookups a partition.
    oldest = uow.backups.oldest()
    if not oldest:
        return {}
    configs = EffectiveConfigs(uow.mappings.all(), set())  # retention applies while suspended
    policies: dict[str, tuple[BackupPolicy, datetime] | None] = {}
    members: dict[str, BackupPolicy] = {}
    for p in parts:
        first = oldest.get(p.partition_id)
        name = configs.of(p).policy_name if first is not None else None
        if name is None:
            continue
        if name not in policies:
            policies[name] = _with_cutoff(ctx, uow, name, now)
        rule = policies[name]
        if rule is not None and first is not None and first < rule[1]:
            members[p.partition_id] = rule[0]
    if not members:
        return {}
    backups = uow.backups.of_partitions(list(members))
    out: Verdicts = {}
    for pid, policy in members.items():
        found = _judge(pid, policy, backups.get(pid, []), now)
        if found is not None:
            out[pid] = found
    return out
