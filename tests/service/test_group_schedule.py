"""
Scheduled consistency groups (``service.group_schedule``) on SQLite and PostgreSQL
catalogs: a due group gets one group-backup job per slot even with two controllers
ticking at once, a group not due gets none, a bad schedule is refused, a busy
group is tried again at its next slot, and a due group drill is started.

Each "controller" is a ``ServiceContext`` with its own catalog engine over the
same database; the fake engine and the fake clock stand in for storage and time.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from safehold.bootstrap import open_policy_storage
from safehold.core.policy import EntityRef, PolicyError
from safehold.core.snapshot import format_time, parse_time
from safehold.core.work import ClaimRequest, GroupPointRef, Outcome, SnapshotRef
from safehold.service import group_schedule, groups, jobs, scheduler
from safehold.service.catalog import open_catalog, upgrade_catalog
from safehold.service.context import ServiceContext
from safehold.service.model import JobRecord
from safehold.service.policies import create_policy
from safehold.service.protection import enable_backup
from safehold.service.secrets import SecretBox
from safehold.service.sql_groups import GroupRepo
from safehold.service.uow import SqlUnitOfWork
from safehold.storage.errors import StorageError
from safehold.testing import FakeClock, FakeEngine
from tests.service.helpers import P1, P2, add_partition, policy_doc

KEY = base64.urlsafe_b64encode(b"k" * 32)
EVERY_10M = {"ScheduleKind": "FrequencyBased", "Interval": "PT10M"}
EVERY_1H = {"ScheduleKind": "FrequencyBased", "Interval": "PT1H"}


@dataclass
class Two:
    """Two controllers' contexts over one catalog, with the shared clock and engine."""

    a: ServiceContext
    b: ServiceContext
    clock: FakeClock
    db: sa.Engine


def _context(
    url: str, clock: FakeClock, engine: FakeEngine, spread: float
) -> tuple[ServiceContext, sa.Engine]:
    db = open_catalog(url)
    ctx = ServiceContext(
        uow=lambda: SqlUnitOfWork(db),
        secrets=SecretBox(KEY),
        open_storage=open_policy_storage,
        engine=engine,
        clock=clock,
        schedule_spread=spread,
    )
    return ctx, db


def _two(url: str, tmp_path: Path, spread: float) -> Iterator[Two]:
    clock, engine = FakeClock(), FakeEngine()
    a, db_a = _context(url, clock, engine, spread)
    b, db_b = _context(url, clock, engine, spread)
    for pid in (P1, P2):
        add_partition(a, pid, tmp_path / pid)
    create_policy(a, policy_doc("nightly", tmp_path / "store"))
    enable_backup(a, EntityRef("Application", "fabric:/Shop"), "nightly")
    try:
        yield Two(a, b, clock, db_a)
    finally:
        db_a.dispose()
        db_b.dispose()


@pytest.fixture
def two(catalog_url: str, tmp_path: Path) -> Iterator[Two]:
    """Two controllers, schedules not spread (a new schedule is due at once)."""
    yield from _two(catalog_url, tmp_path, 0.0)


@pytest.fixture
def spread(catalog_url: str, tmp_path: Path) -> Iterator[Two]:
    """Two controllers, schedules spread over their whole interval (the default)."""
    yield from _two(catalog_url, tmp_path, 1.0)


def _group_jobs(db: sa.Engine, kind: str = "group-backup") -> int:
    with db.connect() as conn:
        q = sa.text("SELECT count(*) FROM jobs WHERE kind = :k")
        return int(conn.execute(q, {"k": kind}).scalar_one())


def _finish(ctx: ServiceContext, job: JobRecord) -> None:
    """An agent takes the job and reports a failure: the job ends, the group is free."""
    item = jobs.claim(ctx, "agent", ClaimRequest(Kinds=["group-backup", "group-restore"]))
    assert item is not None
    assert item.JobId == job.id
    jobs.complete(ctx, "agent", job.id, Outcome.failure("X", "stopped", attempt=item.Attempt))
    with ctx.reader() as uow:
        done = uow.jobs.get(job.id)
    assert done is not None
    assert done.state == "Failure"


def _tick_both(two: Two) -> list[JobRecord]:
    """Both controllers tick at once; return the jobs both started."""
    barrier = threading.Barrier(2)
    out: dict[str, list[JobRecord]] = {}
    errors: list[BaseException] = []

    def run(name: str, ctx: ServiceContext) -> None:
        try:
            barrier.wait(10)
            out[name] = group_schedule.tick(ctx)
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n, c)) for n, c in (("a", two.a), ("b", two.b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return out["a"] + out["b"]


def _next(ctx: ServiceContext, kind: str = "Backup") -> Any:
    doc = groups.get_group(ctx, "shop")
    return parse_time(doc[f"Next{kind}Utc"]) if doc[f"Next{kind}Utc"] else None


def test_a_due_group_gets_one_job_per_slot_with_two_controllers(two: Two) -> None:
    groups.put_group(two.a, "shop", {"Members": [P1, P2], "BackupSchedule": EVERY_10M})
    start = two.clock()
    assert _next(two.b) == start  # not spread: due at once, as SF's first backup
    for n in range(1, 4):
        made = _tick_both(two)
        assert len(made) == 1, made
        job = made[0]
        assert job.kind == "group-backup"
        assert job.scheduled
        assert job.params["group"] == "shop"
        assert job.partition_id == P1  # the anchor, as for a request
        assert _group_jobs(two.db) == n
        assert _next(two.a) == start + n * timedelta(minutes=10)
        assert group_schedule.tick(two.a) == []  # taken: not due again in this slot
        _finish(two.a, job)
        two.clock.advance(minutes=10)
    shown = groups.get_group(two.a, "shop")
    assert shown["BackupSchedule"] == EVERY_10M
    assert shown["ScheduleNotes"] == {}
    assert [j["Scheduled"] for j in shown["Jobs"]] == [True]


def test_only_one_of_two_takes_a_slot_both_read(two: Two) -> None:
    """The conditional update itself: the second taker of a slot it read finds it moved."""
    groups.put_group(two.a, "shop", {"Members": [P1, P2], "BackupSchedule": EVERY_10M})
    now = two.clock()
    reads = []
    for ctx in (two.a, two.b):
        with ctx.reader() as uow:
            assert isinstance(uow.groups, GroupRepo)
            reads.append(uow.groups.due("backup", now, 10))
    assert reads[0] == reads[1] == [("shop", now)]
    taken = []
    for ctx in (two.a, two.b):
        with ctx.uow() as uow:
            assert isinstance(uow.groups, GroupRepo)
            taken.append(
                uow.groups.take_slot("shop", "backup", now, now + timedelta(minutes=10), None)
            )
            uow.commit()
    assert taken == [True, False]
    # A definition written from a read older than the take does not undo it.
    with two.b.uow() as uow:
        stale = uow.groups.get("shop")
        assert stale is not None
        assert stale.backup is not None
        stale.backup.next_at = now
        uow.groups.put(stale, now)
        uow.commit()
    assert _next(two.a) == now + timedelta(minutes=10)


def test_a_group_not_due_gets_no_job(spread: Two) -> None:
    two = spread
    groups.put_group(two.a, "idle", {"Members": [P2]})  # no schedule at all
    groups.put_group(two.a, "shop", {"Members": [P1], "BackupSchedule": EVERY_1H})
    now = two.clock()
    first = _next(two.a)
    assert now < first < now + timedelta(hours=1)  # spread over the interval by its name
    assert _tick_both(two) == []
    two.clock.advance(seconds=(first - now).total_seconds() - 1)
    assert group_schedule.tick(two.a) == []
    two.clock.advance(seconds=1)
    made = group_schedule.tick(two.b)
    assert [j.params["group"] for j in made] == ["shop"]
    assert _next(two.a) == first + timedelta(hours=1)
    assert group_schedule.tick(two.a) == []
    assert _group_jobs(two.db) == 1
    # A definition that keeps the schedule keeps its slots; another schedule moves them.
    groups.put_group(two.a, "shop", {"Members": [P1], "BackupSchedule": EVERY_1H})
    assert _next(two.a) == first + timedelta(hours=1)
    groups.put_group(two.a, "shop", {"Members": [P1]})
    assert _next(two.a) is None
    two.clock.advance(hours=5)
    assert group_schedule.tick(two.a) == []


BAD: list[tuple[dict[str, Any], str]] = [
    ({"BackupSchedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT10S"}}, "1 minute"),
    ({"BackupSchedule": {"ScheduleKind": "Sometimes"}}, "BackupSchedule: Schedule.ScheduleKind"),
    ({"BackupSchedule": {"ScheduleKind": "FrequencyBased"}}, "Interval is required"),
    ({"BackupSchedule": {"ScheduleKind": "FrequencyBased", "Interval": "P20D"}}, "15 days"),
    ({"DrillSchedule": "PT1H"}, "DrillSchedule: Schedule must be an object"),
    (
        {"DrillSchedule": {"ScheduleKind": "TimeBased", "ScheduleFrequencyType": "Hourly"}},
        "DrillSchedule: Schedule.ScheduleFrequencyType",
    ),
]


def test_a_bad_schedule_is_refused(two: Two) -> None:
    for body, fragment in BAD:
        with pytest.raises(PolicyError, match=fragment) as caught:
            groups.put_group(two.a, "shop", {"Members": [P1, P2], **body})
        assert caught.value.http_status == 400
        assert caught.value.code == "E_INVALIDARG"
    with pytest.raises(groups.GroupNotFound):  # nothing was stored
        groups.get_group(two.a, "shop")
    # Nor does a bad schedule change a group that exists.
    groups.put_group(two.a, "shop", {"Members": [P1, P2], "BackupSchedule": EVERY_1H})
    with pytest.raises(PolicyError):
        groups.put_group(two.a, "shop", {"Members": [P1], **BAD[0][0]})
    shown = groups.get_group(two.a, "shop")
    assert (shown["Members"], shown["BackupSchedule"]) == ([P1, P2], EVERY_1H)


def test_a_busy_group_is_tried_again_at_its_next_slot(two: Two) -> None:
    every_5m = {"ScheduleKind": "FrequencyBased", "Interval": "PT5M"}
    groups.put_group(two.a, "shop", {"Members": [P1, P2], "BackupSchedule": every_5m})
    start, five = two.clock(), timedelta(minutes=5)
    first = group_schedule.tick(two.a)
    assert len(first) == 1
    # The next slot comes while the first group job is still queued: no second job.
    two.clock.advance(minutes=5)
    assert group_schedule.tick(two.a) == []
    assert _group_jobs(two.db) == 1
    assert _next(two.a) == start + 2 * five
    assert "SAFEHOLD_E_GROUP_BUSY" in groups.get_group(two.a, "shop")["ScheduleNotes"]["Backup"]
    _finish(two.a, first[0])
    assert group_schedule.tick(two.a) == []  # free now, but its next slot has not come
    two.clock.advance(minutes=5)
    second = group_schedule.tick(two.b)
    assert len(second) == 1
    assert groups.get_group(two.a, "shop")["ScheduleNotes"] == {}
    _finish(two.a, second[0])
    # A member's own job makes the group busy as well: an on-demand backup...
    own = jobs.request_backup(two.a, P2)
    two.clock.advance(minutes=5)
    assert group_schedule.tick(two.a) == []
    note = groups.get_group(two.a, "shop")["ScheduleNotes"]["Backup"]
    assert f"member {P2} has a job accepted or running" in note
    assert _next(two.a) == start + 4 * five
    _end(two.a, [own])
    # ... and a scheduled one (which a request would queue behind, not refuse).
    member_jobs = scheduler.tick(two.a)
    assert sorted(j.partition_id for j in member_jobs) == [P1, P2]
    two.clock.advance(minutes=5)
    assert group_schedule.tick(two.a) == []
    note = groups.get_group(two.a, "shop")["ScheduleNotes"]["Backup"]
    assert f"member {P1} has a job accepted or running" in note
    assert _next(two.a) == start + 5 * five
    _end(two.a, member_jobs)
    two.clock.advance(minutes=5)
    assert len(group_schedule.tick(two.a)) == 1
    assert _group_jobs(two.db) == 3


def test_a_busy_group_with_a_far_slot_is_tried_again_soon(two: Two) -> None:
    """As a busy partition: a far next slot (an hour) is not waited for, a minute is."""
    groups.put_group(two.a, "shop", {"Members": [P1, P2], "BackupSchedule": EVERY_1H})
    start = two.clock()
    first = group_schedule.tick(two.a)
    assert len(first) == 1
    two.clock.advance(hours=1)
    assert group_schedule.tick(two.a) == []
    retry = _next(two.a)
    assert two.clock() + timedelta(seconds=30) <= retry < two.clock() + timedelta(minutes=1)
    _finish(two.a, first[0])
    two.clock.advance(minutes=1)
    assert len(group_schedule.tick(two.a)) == 1
    assert _next(two.a) == start + timedelta(hours=2)  # back on its own slots


def test_an_unreachable_storage_is_tried_again_soon(
    two: Two, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(store: object) -> None:
        raise StorageError("the share is down")

    monkeypatch.setattr(two.a.engine, "ensure_repository", down)
    groups.put_group(two.a, "shop", {"Members": [P1, P2], "BackupSchedule": EVERY_1H})
    start = two.clock()
    assert group_schedule.tick(two.a) == []
    assert "the share is down" in groups.get_group(two.a, "shop")["ScheduleNotes"]["Backup"]
    assert _next(two.a) == start + timedelta(minutes=1)
    monkeypatch.undo()
    two.clock.advance(minutes=1)
    assert len(group_schedule.tick(two.a)) == 1
    assert _next(two.a) == start + timedelta(hours=1)


def _end(ctx: ServiceContext, wanted: list[JobRecord]) -> None:
    """Agents take the members' backup jobs *wanted* and report failures."""
    left = {j.id for j in wanted}
    while left:
        agent = f"agent-{len(left)}"  # one job of a partition at a time; an agent each
        item = jobs.claim(ctx, agent, ClaimRequest(Kinds=["backup"]))
        assert item is not None
        assert item.JobId in left
        left.discard(item.JobId)
        failed = Outcome.failure("X", "stopped", attempt=item.Attempt)
        jobs.complete(ctx, agent, item.JobId, failed)


def _record_point(ctx: ServiceContext) -> str:
    """A group backup that succeeded: its point is recorded (as the job's completion does)."""
    job = groups.request_backup(ctx, "shop")
    item = jobs.claim(ctx, "agent", ClaimRequest(Kinds=["group-backup"]))
    assert item is not None
    assert item.JobId == job.id
    point = "c3" * 32
    at = format_time(ctx.clock())
    ref = GroupPointRef(
        Group="shop",
        Time=at,
        RestorePoint="safehold-shop-x",
        SnapshotId=point,
        Members={pid: SnapshotRef(Id=pid[0] * 64, Time=at, Size=7) for pid in (P1, P2)},
    )
    done = jobs.complete(ctx, "agent", job.id, Outcome(State="Success", Group=ref))
    assert done.state == "Success"
    return point


def test_a_scheduled_group_drill_is_started(two: Two) -> None:
    groups.put_group(two.a, "shop", {"Members": [P1, P2], "DrillSchedule": EVERY_1H})
    start = two.clock()
    assert groups.get_group(two.a, "shop")["NextBackupUtc"] is None
    # Due at once, but there is no point to drill yet: the slot passes, with the reason.
    assert _tick_both(two) == []
    assert _next(two.a, "Drill") == start + timedelta(hours=1)
    note = groups.get_group(two.a, "shop")["ScheduleNotes"]["Drill"]
    assert "SAFEHOLD_E_GROUP_POINT_NOT_FOUND" in note
    point = _record_point(two.a)
    two.clock.advance(hours=1)
    made = _tick_both(two)
    assert len(made) == 1
    job = made[0]
    assert job.kind == "group-restore"
    assert job.scheduled
    assert job.params["drill"] is True
    assert job.params["point"]["SnapshotId"] == point
    with two.a.reader() as uow:
        runs = uow.drills.runs(P1)
    assert [(r.policy_name, r.trigger, r.job_id) for r in runs] == [
        ("group:shop", "Schedule", job.id)
    ]
    assert _next(two.a, "Drill") == start + timedelta(hours=2)
    assert groups.get_group(two.a, "shop")["ScheduleNotes"] == {}
    assert _group_jobs(two.db, "group-restore") == 1


def test_revision_0006_groups_are_kept_without_schedules(catalog_url: str, tmp_path: Path) -> None:
    """A catalog at 0006 with a group is upgraded: the group stays, with no schedule."""
    url = catalog_url if "://" in catalog_url else f"sqlite:///{catalog_url}"
    old = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    upgrade_catalog(old, "0006")
    with old.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO consistency_groups (name, doc, created_at) "
                """VALUES ('old', '{"validators": []}', :t)"""
            ),
            {"t": FakeClock()()},
        )
    old.dispose()
    clock = FakeClock()
    ctx, db = _context(catalog_url, clock, FakeEngine(), 0.0)
    try:
        doc = groups.get_group(ctx, "old")
        assert (doc["BackupSchedule"], doc["NextBackupUtc"], doc["DrillSchedule"]) == (
            None,
            None,
            None,
        )
        assert group_schedule.tick(ctx) == []
    finally:
        db.dispose()
