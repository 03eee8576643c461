"""SF's Basic retention as a pure function."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from safehold.core.retention_basic import BackupItem, apply_basic_retention

NOW = datetime(2026, 1, 10, tzinfo=UTC)


def chain(days_ago: list[int], fulls: set[int]) -> list[BackupItem]:
    """Backups at the given ages (days); indexes in *fulls* are full, the rest chain on."""
    out: list[BackupItem] = []
    for i, d in enumerate(days_ago):
        parent = None if i in fulls else out[-1].id
        out.append(BackupItem(f"b{i}", NOW - timedelta(days=d), i in fulls, parent))
    return out


def test_keeps_the_anchoring_full_and_everything_newer() -> None:
    """Old backups go, except the newest old full that anchors the younger incrementals."""
    items = chain([9, 8, 7, 6, 5, 1], fulls={0, 3})
    decision = apply_basic_retention(items, duration=timedelta(days=2), minimum=0, now=NOW)
    assert decision.remove == ["b2", "b1", "b0"]  # SF's deletion order: newest first
    assert decision.keep == ["b3", "b4", "b5"]


def test_minimum_number_is_always_kept() -> None:
    """Deletion stops once only MinimumNumberOfBackups remain (SF deletes newest first)."""
    items = chain([9, 8, 7, 6], fulls={0, 1, 2, 3})
    decision = apply_basic_retention(items, duration=timedelta(days=1), minimum=3, now=NOW)
    assert decision.remove == ["b2"]
    assert len(decision.keep) == 3


def test_nothing_goes_without_an_old_full() -> None:
    """If no old backup is full, every old one anchors something: keep all."""
    items = chain([9, 8, 7], fulls={0})
    items = [BackupItem(b.id, b.time, False, b.parent) for b in items]
    assert apply_basic_retention(items, duration=timedelta(days=1), minimum=0, now=NOW).remove == []


def test_a_kept_incremental_keeps_its_parents() -> None:
    """An incremental whose chain starts before the cut keeps its whole chain."""
    items = [
        BackupItem("f0", NOW - timedelta(days=9), True),
        BackupItem("f1", NOW - timedelta(days=8), True),
        BackupItem("i2", NOW - timedelta(days=7), False, "f0"),  # odd but possible: parent older
    ]
    decision = apply_basic_retention(items, duration=timedelta(days=1), minimum=0, now=NOW)
    assert decision.remove == []
    assert "f0" in decision.keep


def test_count_at_or_below_minimum_keeps_all() -> None:
    """With no more backups than the minimum, none is removed."""
    items = chain([30, 20], fulls={0, 1})
    assert (
        apply_basic_retention(items, duration=timedelta(hours=1), minimum=2, now=NOW).remove == []
    )
