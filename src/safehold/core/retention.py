"""
Retention as a pure function: which snapshots ``forget`` keeps, which it removes.

``KeepPolicy`` holds restic-style rules (last, hourly, daily, weekly, monthly,
yearly, within a duration, tags), applied per group of snapshots. The whole
chain that a kept incremental snapshot depends on is kept too, because an
incremental is worthless without its parents. (Service Fabric's Basic policy,
which the service applies, is ``core.retention_basic``.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from safehold.core.errors import UsageError
from safehold.core.snapshot import Snapshot

__all__ = [
    "Decision",
    "KeepPolicy",
    "apply_policy",
    "hold_back",
    "parse_duration",
]


@dataclass(frozen=True)
class Decision:
    """The outcome: snapshots to keep (with reasons) and to remove, oldest first."""

    keep: list[Snapshot]
    remove: list[Snapshot]
    reasons: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class KeepPolicy:
    """restic-style keep rules; a count of 0 disables a rule, -1 means unlimited."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: timedelta | None = None
    tags: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        """Whether no rule is set (forget would then remove everything: refused)."""
        counts = (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        return not any(counts) and self.within is None and not self.tags


_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?$")
_ISO = re.compile(
    r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """
    Parse ``1y2m3w4d5h`` (restic style, months as 30 days) or ISO 8601 (``P10D``, ``PT6H``).

    Raises:
        UsageError: the text is neither.
    """
    t = text.strip()
    m = _ISO.match(t.upper()) if t.upper().startswith("P") else None
    if m and any(m.groups()):
        y, mo, w, d, h, mi, s = m.groups()
        return timedelta(
            days=int(y or 0) * 365 + int(mo or 0) * 30 + int(w or 0) * 7 + int(d or 0),
            hours=int(h or 0),
            minutes=int(mi or 0),
            seconds=float(s or 0),
        )
    m = _DURATION.match(t)
    if m and any(m.groups()):
        y, mo, w, d, h = (int(g or 0) for g in m.groups())
        return timedelta(days=y * 365 + mo * 30 + w * 7 + d, hours=h)
    raise UsageError(f"invalid duration {text!r}: use e.g. 7d, 2w, 1y6m, 12h or ISO 8601 like P7D")


_BUCKETS: list[tuple[str, Callable[[datetime], tuple[int, ...]]]] = [
    ("hourly", lambda t: (t.year, t.month, t.day, t.hour)),
    ("daily", lambda t: (t.year, t.month, t.day)),
    ("weekly", lambda t: tuple(t.isocalendar()[:2])),
    ("monthly", lambda t: (t.year, t.month)),
    ("yearly", lambda t: (t.year,)),
]


def _with_chains(
    snaps: Sequence[Snapshot], keep_ids: set[str], reasons: dict[str, list[str]]
) -> None:
    """Add every ancestor of a kept incremental snapshot to *keep_ids*."""
    by_id = {s.id: s for s in snaps}
    for sid in list(keep_ids):
        s = by_id[sid]
        while s.backup_type == "incremental" and s.parent in by_id:
            parent = by_id[s.parent]
            if parent.id not in keep_ids:
                keep_ids.add(parent.id)
                reasons.setdefault(parent.id, []).append(f"parent of kept {s.short_id}")
            s = parent


def _decide(
    snaps: Sequence[Snapshot], keep_ids: set[str], reasons: dict[str, list[str]]
) -> Decision:
    _with_chains(snaps, keep_ids, reasons)
    ordered = sorted(snaps, key=lambda s: (s.time, s.id))
    return Decision(
        keep=[s for s in ordered if s.id in keep_ids],
        remove=[s for s in ordered if s.id not in keep_ids],
        reasons={k: v for k, v in reasons.items() if k in keep_ids},
    )


def apply_policy(snapshots: Sequence[Snapshot], policy: KeepPolicy, now: datetime) -> Decision:
    """
    Apply restic-style keep rules to one group of snapshots.

    Newest first, ``last`` keeps the N newest; each time bucket rule keeps the
    newest snapshot of each of the N most recent buckets that have one;
    ``within`` keeps everything newer than ``now - within``; ``tags`` keeps
    snapshots carrying any of the tags.

    Raises:
        UsageError: the policy has no rule (it would remove everything).
    """
    if policy.is_empty():
        raise UsageError("no keep rule given: refusing to forget every snapshot")
    newest_first = sorted(snapshots, key=lambda s: (s.time, s.id), reverse=True)
    keep: set[str] = set()
    reasons: dict[str, list[str]] = {}

    def mark(s: Snapshot, why: str) -> None:
        keep.add(s.id)
        reasons.setdefault(s.id, []).append(why)

    for i, s in enumerate(newest_first):
        if policy.last < 0 or i < policy.last:
            mark(s, "last snapshot")
        if policy.within is not None and s.time >= now - policy.within:
            mark(s, "within")
        if policy.tags and set(policy.tags) & set(s.tags):
            mark(s, "tag")
    for name, bucket in _BUCKETS:
        limit = getattr(policy, name)
        if not limit:
            continue
        seen: set[tuple[int, ...]] = set()
        for s in newest_first:
            b = bucket(s.time)
            if b in seen:
                continue
            if 0 <= limit <= len(seen):
                break
            seen.add(b)
            mark(s, f"{name} snapshot")
    return _decide(snapshots, keep, reasons)


def hold_back(decision: Decision, held_until: Mapping[str, datetime | None]) -> Decision:
    """
    Keep the snapshots the rules would remove but the storage holds.

    *held_until* maps a held snapshot's id to when its hold ends (``None``:
    never, as in an append-only repository). A held snapshot is kept with the
    reason ``held until …``, and so is the chain it depends on; nothing else
    changes. ``forget`` never tries to delete what it cannot.
    """
    snaps = [*decision.keep, *decision.remove]
    keep = {s.id for s in decision.keep}
    reasons = {k: list(v) for k, v in decision.reasons.items()}
    for s in decision.remove:
        if s.id in held_until:
            until = held_until[s.id]
            keep.add(s.id)
            reasons.setdefault(s.id, []).append(
                f"held until {until:%Y-%m-%d %H:%M} UTC" if until else "held for good"
            )
    return _decide(snaps, keep, reasons)
