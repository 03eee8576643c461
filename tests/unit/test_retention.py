"""Retention policies, as tables of cases: snapshots in, kept ids out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from safehold.core.errors import UsageError
from safehold.core.retention import (
    KeepPolicy,
    apply_policy,
    parse_duration,
)
from safehold.core.snapshot import Snapshot

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def snap(
    sid: str,
    age: timedelta,
    *,
    tags: tuple[str, ...] = (),
    parent: str | None = None,
    kind: str = "full",
) -> Snapshot:
    return Snapshot(
        id=sid,
        time=NOW - age,
        host="h",
        user="u",
        paths=("/d",),
        tree="00",
        tags=tags,
        parent=parent,
        backup_type=kind,
    )  # type: ignore[arg-type]


# One snapshot a day at noon for 60 days: d0 (today) ... d59.
DAILY = [snap(f"d{i}", timedelta(days=i)) for i in range(60)]


def ids(n: list[int]) -> list[str]:
    return [f"d{i}" for i in sorted(n, reverse=True)]


@pytest.mark.parametrize(
    ("policy", "kept"),
    [
        (KeepPolicy(last=3), ids([0, 1, 2])),
        (KeepPolicy(last=-1), ids(list(range(60)))),
        (KeepPolicy(daily=5), ids([0, 1, 2, 3, 4])),
        # ISO weeks: 2026-11-22 is a Sunday, so d0 is the newest of its week, d7 of the previous...
        (KeepPolicy(weekly=3), ids([0, 7, 14])),
        (KeepPolicy(monthly=2), ids([0, 22])),
        (KeepPolicy(yearly=5), ids([0])),
        (KeepPolicy(within=timedelta(days=2, hours=1)), ids([0, 1, 2])),
        (KeepPolicy(last=2, weekly=2), ids([0, 1, 7])),
        (KeepPolicy(daily=2, monthly=-1), ids([0, 1, 22, 53])),  # d53 is 2026-09-30
    ],
)
def test_keep_rules(policy: KeepPolicy, kept: list[str]) -> None:
    """Each rule keeps exactly the newest snapshot of each of its most recent buckets."""
    decision = apply_policy(DAILY, policy, NOW)
    assert sorted(kept) == sorted(s.id for s in decision.keep)
    assert 60 == len(decision.keep) + len(decision.remove)


def test_keep_tag_and_reasons() -> None:
    """Tagged snapshots are kept whatever their age, and each kept snapshot says why."""
    snaps = [*DAILY[:3], snap("old", timedelta(days=400), tags=("release",))]
    d = apply_policy(snaps, KeepPolicy(last=1, tags=("release",)), NOW)
    assert ["old", "d0"] == [s.id for s in d.keep]
    assert {"d0": ["last snapshot"], "old": ["tag"]} == d.reasons


def test_empty_policy_is_refused() -> None:
    """A policy without any rule would forget everything: it is an error."""
    with pytest.raises(UsageError):
        apply_policy(DAILY, KeepPolicy(), NOW)


def test_chains_keep_their_parents() -> None:
    """A kept incremental keeps its whole chain back to the full backup."""
    chain = [
        snap("full", timedelta(days=10)),
        snap("inc1", timedelta(days=9), parent="full", kind="incremental"),
        snap("inc2", timedelta(days=1), parent="inc1", kind="incremental"),
        snap("other", timedelta(days=20)),
    ]
    d = apply_policy(chain, KeepPolicy(within=timedelta(days=2)), NOW)
    assert ["full", "inc1", "inc2"] == [s.id for s in d.keep]
    assert ["other"] == [s.id for s in d.remove]
    assert "parent of kept" in d.reasons["full"][0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("2w", timedelta(days=14)),
        ("1y6m", timedelta(days=545)),
        ("12h", timedelta(hours=12)),
        ("P7D", timedelta(days=7)),
        ("PT6H30M", timedelta(hours=6, minutes=30)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    """Durations in restic style and in ISO 8601 parse to the same thing."""
    assert expected == parse_duration(text)


@pytest.mark.parametrize("text", ["", "7", "soon", "P", "-1d", "PT"])
def test_bad_durations(text: str) -> None:
    """Bad durations are usage errors with a hint."""
    with pytest.raises(UsageError, match="invalid duration"):
        parse_duration(text)
