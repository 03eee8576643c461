"""
Where each partition's periodic backups fall, spread over the interval.

A frequency schedule of interval *I* gives every partition the slots
``anchor + offset + k·I`` (whole *k*), where *anchor* is when backup was enabled
where its policy comes from, and *offset* a number in ``[0, spread·I)`` taken
from a hash of the partition's id. So:

- 10,000 partitions enabled at the same moment start their backups spread evenly
  over one interval, and keep those phases: no minute has them all;
- with ``spread=0`` every partition's first backup falls when backup was enabled,
  as Service Fabric takes it, and then every *I*;
- the slots depend only on stored facts (the id, the policy, when it was
  enabled), so a restarted controller, or another replica, computes the same ones.

A time-based schedule keeps its own times: the operator chose them.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta

from safehold.core.policy import FrequencySchedule, Schedule, next_due

__all__ = ["jitter", "period", "schedule_key", "slot_after", "slot_at_or_after"]


def _offset(partition_id: str, width: float) -> float:
    if width < 1:
        return 0.0
    digest = hashlib.blake2b(partition_id.encode(), digest_size=8).digest()
    # Whole seconds keep slots on the second, as SF's schedules are.
    return float(int.from_bytes(digest, "big") % int(width))


def jitter(partition_id: str, width: timedelta) -> timedelta:
    """A delay in ``[0, width)`` of the partition's own (the same offset as its slots)."""
    return timedelta(seconds=_offset(partition_id, width.total_seconds()))


def _base(schedule: FrequencySchedule, anchor: datetime, pid: str, spread: float) -> datetime:
    width = schedule.interval.total_seconds() * min(max(spread, 0.0), 1.0)
    return anchor + timedelta(seconds=_offset(pid, width))


def slot_at_or_after(
    schedule: Schedule, t: datetime, *, anchor: datetime, partition_id: str, spread: float = 1.0
) -> datetime:
    """Return the partition's first backup slot at or after *t*."""
    if not isinstance(schedule, FrequencySchedule):
        return next_due(schedule, t - timedelta(microseconds=1))
    step = schedule.interval.total_seconds()
    base = _base(schedule, anchor, partition_id, spread)
    k = math.ceil((t - base).total_seconds() / step)
    return base + timedelta(seconds=k * step)


def slot_after(
    schedule: Schedule, t: datetime, *, anchor: datetime, partition_id: str, spread: float = 1.0
) -> datetime:
    """Return the partition's first backup slot strictly after *t*."""
    if not isinstance(schedule, FrequencySchedule):
        return next_due(schedule, t)
    step = schedule.interval.total_seconds()
    base = _base(schedule, anchor, partition_id, spread)
    k = math.floor((t - base).total_seconds() / step) + 1
    return base + timedelta(seconds=k * step)


def period(schedule: Schedule, around: datetime) -> timedelta:
    """The time between two slots of *schedule* near *around*."""
    if isinstance(schedule, FrequencySchedule):
        return schedule.interval
    first = next_due(schedule, around)
    return next_due(schedule, first) - first


def schedule_key(policy_name: str, schedule: Schedule, anchor: datetime) -> str:
    """Name what a partition's slots were computed from: the policy, its schedule, the anchor."""
    text = f"{schedule!r}|{anchor.isoformat()}"
    digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    return f"{digest}:{policy_name}"[:256]
