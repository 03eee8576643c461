"""
Service Fabric's ``Basic`` retention as a pure function.

The algorithm is BRS's ``RetentionManager``, per partition:

1. If there are no more backups than ``MinimumNumberOfBackups``, keep them all.
2. Among backups older than ``now - RetentionDuration``, walk newest first and skip
   until the first full backup: it anchors the chains of everything newer, so it
   and everything newer are kept.
3. Delete the older ones, oldest first, stopping when only the minimum is left.

Deleting oldest first keeps chains whole from the start, and a kept incremental
never loses the backups it depends on (its parent chain back to its full backup).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["BackupItem", "RetentionDecision", "apply_basic_retention"]


@dataclass(frozen=True)
class BackupItem:
    """What retention needs to know about one backup."""

    id: str
    time: datetime
    full: bool
    parent: str | None = None


@dataclass(frozen=True)
class RetentionDecision:
    """The ids to keep and to remove (both oldest first), with a reason per id."""

    keep: list[str]
    remove: list[str]
    reasons: dict[str, str]


def apply_basic_retention(
    backups: list[BackupItem], *, duration: timedelta, minimum: int, now: datetime
) -> RetentionDecision:
    """
    Decide which of one partition's *backups* to remove.

    Args:
        backups: the partition's backups, in any order.
        duration: ``RetentionDuration``.
        minimum: ``MinimumNumberOfBackups``.
        now: the current time (injected, so tests need no clock).

    Returns:
        The decision; every kept incremental's parents are kept too.
    """
    items = sorted(backups, key=lambda b: (b.time, b.id))
    reasons: dict[str, str] = {}
    if len(items) <= minimum:
        for b in items:
            reasons[b.id] = f"within MinimumNumberOfBackups ({minimum})"
        return RetentionDecision([b.id for b in items], [], reasons)
    cutoff = now - duration
    old = [b for b in items if b.time < cutoff]
    anchor_index = None
    for i in range(len(old) - 1, -1, -1):
        if old[i].full:
            anchor_index = i
            break
    candidates = [] if anchor_index is None else old[:anchor_index]
    remove: list[str] = []
    remaining = len(items)
    for b in candidates:
        if remaining <= minimum:
            break
        remove.append(b.id)
        remaining -= 1
    # A kept incremental must keep its whole chain: put back any removed parent.
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
    reasons.update(_reasons(items, removed, cutoff))
    return RetentionDecision(keep, remove, reasons)


def _reasons(items: list[BackupItem], removed: set[str], cutoff: datetime) -> dict[str, str]:
    reasons = {}
    for b in items:
        if b.id in removed:
            reasons[b.id] = "older than RetentionDuration and older than the anchoring full backup"
        elif b.time >= cutoff:
            reasons[b.id] = "younger than RetentionDuration"
        else:
            reasons[b.id] = "anchoring full backup, its chain, or MinimumNumberOfBackups"
    return reasons
