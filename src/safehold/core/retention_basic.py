"""
Service Fabric's ``Basic`` retention as pure functions: what to delete, and when to look.

The algorithm is BRS's ``RetentionManager.DeleteFilesForPartition``, per partition:

1. If there are no more backups than ``MinimumNumberOfBackups``, keep them all.
2. Take the backups older than ``now - RetentionDuration`` and walk them **newest
   first**, skipping until the first full backup: it anchors the chains of
   everything newer, so it and everything newer are kept.
3. Go on walking (still newest first) and delete each backup, stopping as soon as
   only the minimum is left.

Deleting newest first is SF's order, and it matters: a sweep that stops early
(the minimum, a crash, a failed delete) leaves the oldest backups, which are a
whole chain from its full backup (``F I`` of ``F I I``), never incrementals whose
full backup is gone. So with ``F I I F`` old and a young ``F``, minimum 3, SF
deletes the old ``F`` and the newer ``I`` and keeps ``F I`` + ``F``: three.

The sweep runs on a timer, not after backups (``RetentionTimer``): once when the
policy gets its retention, then daily if the duration is at least a day, hourly
otherwise, and for every partition whose effective policy it is, **suspended or
not** (``FindParititionsEnabledByPolicy`` does not look at suspensions).
``sweep_interval`` and ``sweep_due`` give that timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = [
    "BackupItem",
    "RetentionDecision",
    "apply_basic_retention",
    "cleanup_order",
    "sweep_due",
    "sweep_interval",
]


@dataclass(frozen=True)
class BackupItem:
    """What retention needs to know about one backup."""

    id: str
    time: datetime
    full: bool
    parent: str | None = None


@dataclass(frozen=True)
class RetentionDecision:
    """
    The ids to keep (oldest first) and to remove, with a reason per id.

    *remove* is in SF's deletion order, newest first: delete in this order so that
    an interrupted sweep leaves whole chains.
    """

    keep: list[str]
    remove: list[str]
    reasons: dict[str, str]


def apply_basic_retention(
    backups: list[BackupItem], *, duration: timedelta, minimum: int, now: datetime
) -> RetentionDecision:
    """
    Decide which of one partition's *backups* to remove, as SF's retention sweep does.

    Args:
        backups: the partition's backups, in any order.
        duration: ``RetentionDuration``.
        minimum: ``MinimumNumberOfBackups``.
        now: the current time (injected, so tests need no clock).

    Returns:
        The decision. Beyond SF, a kept incremental whose parent SF would delete
        (possible only with an incremental whose parent is older than a newer
        full backup) keeps that parent and its chain.
    """
    items = sorted(backups, key=lambda b: (b.time, b.id))
    reasons: dict[str, str] = {}
    if len(items) <= minimum:
        for b in items:
            reasons[b.id] = f"within MinimumNumberOfBackups ({minimum})"
        return RetentionDecision([b.id for b in items], [], reasons)
    cutoff = now - duration
    old_newest_first = [b for b in reversed(items) if b.time < cutoff]
    remove: list[str] = []
    remaining = len(items)
    anchor_found = False
    for b in old_newest_first:
        if not anchor_found:
            anchor_found = b.full
            continue
        if remaining <= minimum:
            break
        remove.append(b.id)
        remaining -= 1
    removed = set(remove)
    by_id = {b.id: b for b in items}
    for b in items:
        if b.id in removed:
            continue
        parent = b.parent
        while parent is not None and parent in by_id:
            removed.discard(parent)
            parent = by_id[parent].parent
    remove = [r for r in remove if r in removed]
    keep = [b.id for b in items if b.id not in removed]
    reasons.update(_reasons(items, removed, cutoff, minimum))
    return RetentionDecision(keep, remove, reasons)


def cleanup_order(backups: list[BackupItem]) -> list[str]:
    """
    Return every id of *backups* in SF's order for ``DisableBackup`` with ``CleanBackup``.

    SF's clean-up is the same walk with no anchor, no minimum and a cut-off of
    now: everything goes, newest first.
    """
    return [b.id for b in sorted(backups, key=lambda b: (b.time, b.id), reverse=True)]


def sweep_interval(duration: timedelta) -> timedelta:
    """
    How often SF sweeps a policy's backups: daily if *duration* is at least a day, else hourly.

    (``RetentionTimer.GetDueTimeForNextRetentionSchedule``.)
    """
    return timedelta(days=1) if duration >= timedelta(days=1) else timedelta(hours=1)


def sweep_due(
    duration: timedelta,
    *,
    last_started: datetime | None,
    last_completed: datetime | None,
    now: datetime,
) -> bool:
    """
    Whether a policy's retention sweep is due at *now*, as SF's ``RetentionTimer`` arms it.

    Args:
        duration: the policy's ``RetentionDuration``.
        last_started: when its last sweep started (``None``: never).
        last_completed: when its last sweep completed (``None``: never).
        now: the current time.

    Returns:
        True when the policy never swept, when its last sweep started but never
        completed (SF runs it again at once), or when a sweep interval has passed
        since the last completion.
    """
    if last_started is None or last_completed is None:
        return True
    if last_completed < last_started:
        return True
    return now - last_completed >= sweep_interval(duration)


def _reasons(
    items: list[BackupItem], removed: set[str], cutoff: datetime, minimum: int
) -> dict[str, str]:
    reasons = {}
    for b in items:
        if b.id in removed:
            reasons[b.id] = "older than RetentionDuration and older than the anchoring full backup"
        elif b.time >= cutoff:
            reasons[b.id] = "younger than RetentionDuration"
        else:
            reasons[b.id] = (
                f"anchoring full backup, its chain, or MinimumNumberOfBackups ({minimum})"
            )
    return reasons
