"""
SF's retention semantics where they surprise: the minimum partway through a chain,
the deletion order, and the timer that sweeps suspended partitions too.

Each case follows BRS's ``RetentionManager.DeleteFilesForPartition`` and
``RetentionTimer`` (microsoft/service-fabric, FabricBRS/Service).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from safehold.core.retention_basic import (
    BackupItem,
    apply_basic_retention,
    cleanup_order,
    sweep_due,
    sweep_interval,
)

NOW = datetime(2026, 1, 10, tzinfo=UTC)


def backups(kinds: str, days_ago: list[int]) -> list[BackupItem]:
    """'FIIF' with ages -> items; each incremental's parent is the backup before it."""
    out: list[BackupItem] = []
    for i, (k, d) in enumerate(zip(kinds, days_ago, strict=True)):
        parent = out[-1].id if k == "I" else None
        out.append(BackupItem(f"b{i}", NOW - timedelta(days=d), k == "F", parent))
    return out


def test_sf_minimum_stops_partway_through_a_chain_and_keeps_exactly_the_minimum() -> None:
    """F I I F (old) + F (young), minimum 3: SF deletes the old F and the last I, keeps 3."""
    items = backups("FIIFF", [9, 8, 7, 6, 0])
    decision = apply_basic_retention(items, duration=timedelta(days=2), minimum=3, now=NOW)
    # Walking the old ones newest first: b3 is the anchoring full (kept), then b2 and b1
    # are deleted until only 3 remain; b0 stays. safehold used to keep all 5.
    assert decision.remove == ["b2", "b1"]
    assert decision.keep == ["b0", "b3", "b4"]
    assert len(decision.keep) == 3


def test_sf_minimum_partway_with_every_backup_old() -> None:
    """F I I F + F all older than the duration, minimum 3: the newest full anchors; 3 kept."""
    items = backups("FIIFF", [9, 8, 7, 6, 5])
    decision = apply_basic_retention(items, duration=timedelta(days=2), minimum=3, now=NOW)
    assert decision.remove == ["b3", "b2"]
    # What is left is a whole chain from its full (F I) plus the anchor: all restorable.
    assert decision.keep == ["b0", "b1", "b4"]


def test_sf_deletes_newest_first_so_a_stopped_sweep_leaves_whole_chains() -> None:
    """The removal order is newest first: stopping after any prefix leaves F, F I, ... chains."""
    items = backups("FIIIF", [9, 8, 7, 6, 5])
    decision = apply_basic_retention(items, duration=timedelta(days=1), minimum=0, now=NOW)
    assert decision.remove == ["b3", "b2", "b1", "b0"]
    for done in range(len(decision.remove) + 1):
        left = {b.id for b in items} - set(decision.remove[:done])
        for b in items:
            if b.id in left and b.parent is not None:
                assert b.parent in left, f"after {done} deletions {b.id} lost its parent"


def test_sf_cleanup_deletes_everything_newest_first() -> None:
    """DisableBackup with CleanBackup: SF's same walk with no anchor and no minimum."""
    items = backups("FIF", [3, 2, 1])
    assert cleanup_order(items) == ["b2", "b1", "b0"]


def test_sf_sweep_interval_is_daily_from_one_day_else_hourly() -> None:
    """RetentionTimer: (int)TotalDays != 0 -> a day; else an hour."""
    assert sweep_interval(timedelta(days=1)) == timedelta(days=1)
    assert sweep_interval(timedelta(days=30)) == timedelta(days=1)
    assert sweep_interval(timedelta(hours=23)) == timedelta(hours=1)
    assert sweep_interval(timedelta(hours=1)) == timedelta(hours=1)


def test_sf_sweep_is_due_at_once_then_each_interval() -> None:
    """Never swept or never completed: due now; otherwise an interval after the last completion."""
    week = timedelta(days=7)
    assert sweep_due(week, last_started=None, last_completed=None, now=NOW)
    started = NOW - timedelta(hours=2)
    assert sweep_due(week, last_started=started, last_completed=None, now=NOW)
    done = NOW - timedelta(hours=23)
    assert not sweep_due(week, last_started=done, last_completed=done, now=NOW)
    assert sweep_due(week, last_started=done, last_completed=done, now=NOW + timedelta(hours=1))
    # A sweep that started after the last completion and did not finish runs again.
    assert sweep_due(week, last_started=NOW - timedelta(minutes=5), last_completed=done, now=NOW)
    hours = timedelta(hours=5)
    assert sweep_due(hours, last_started=done, last_completed=NOW - timedelta(hours=1), now=NOW)
