"""The console's read views (``service.views``): paging, filtering, inheritance, job history."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from safehold.core.policy import EntityRef
from safehold.service import jobs, partitions, policies, protection, views
from safehold.service.context import ServiceContext
from safehold.service.model import JobRecord
from safehold.testing import FakeClock


def _fleet(ctx: ServiceContext, store_dir: Path) -> None:
    for a in range(3):
        for s in range(2):
            for p in range(20 + a):
                partitions.register_partition(
                    ctx,
                    partitions.PartitionCreate(
                        application=f"fabric:/App{a}",
                        service=f"fabric:/App{a}/Svc{s}",
                        partition_id=f"{a:08d}-{s:04d}-4000-8000-{p:012d}",
                        source="dir:/srv/data",
                    ),
                )
    policies.create_policy(
        ctx,
        {
            "Name": "hourly",
            "AutoRestoreOnDataLoss": False,
            "MaxIncrementalBackups": 2,
            "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT1H"},
            "Storage": {"StorageKind": "FileShare", "Path": str(store_dir)},
        },
    )
    protection.enable_backup(ctx, EntityRef("Application", "fabric:/App1"), "hourly")
    protection.suspend_backup(ctx, EntityRef("Service", "fabric:/App1/Svc1"))


def test_pages_are_ordered_filtered_and_show_where_settings_come_from(
    ctx: ServiceContext, store_dir: Path
) -> None:
    _fleet(ctx, store_dir)
    rows, total, _ = views.partition_page(ctx, offset=0, limit=50)
    assert total == 2 * (20 + 21 + 22)
    assert len(rows) == 50
    keys = [(r.application, r.service, r.partition_id) for r in rows]
    assert keys == sorted(keys)
    last, _, _ = views.partition_page(ctx, offset=100, limit=50)
    assert len(last) == total - 100
    assert not {r.partition_id for r in rows} & {r.partition_id for r in last}

    app1, total1, entities = views.partition_page(ctx, query="App1/Svc1", limit=500)
    assert total1 == 21
    assert {r.service for r in app1} == {"fabric:/App1/Svc1"}
    assert all(r.policy == "hourly" and r.policy_from == "Application" for r in app1)
    assert all(r.suspended and r.suspended_from == "Service" for r in app1)
    assert entities[EntityRef("Application", "fabric:/App1")] == views.EntityConfig("hourly", False)
    assert entities[EntityRef("Service", "fabric:/App1/Svc1")] == views.EntityConfig(None, True)

    none, zero, _ = views.partition_page(ctx, query="no-such-thing")
    assert (none, zero) == ([], 0)


def test_overview_counts_and_puts_problems_first(ctx: ServiceContext, store_dir: Path) -> None:
    _fleet(ctx, store_dir)
    ov = views.overview(ctx)
    assert ov.total == 126
    assert ov.counts["Warning"] == 21  # the suspended service's partitions
    assert sum(ov.counts.values()) == 126
    assert [h.state for h in ov.problems] == ["Warning"] * 21
    assert ov.active_jobs == 0


def test_job_history_is_newest_first(ctx: ServiceContext, store_dir: Path) -> None:
    _fleet(ctx, store_dir)
    pid = "00000001-0000-4000-8000-000000000003"
    assert views.job_history(ctx, pid) == []
    jobs.request_backup(ctx, pid, storage_doc=None, timeout_minutes=5, incremental=False)
    history = views.job_history(ctx, pid)
    assert [(j.kind, j.state) for j in history] == [("backup", "Accepted")]
    assert views.job_json(history[0])["failure"] is None


def test_activity_counts_finished_jobs_per_hour(
    ctx: ServiceContext, request: pytest.FixtureRequest
) -> None:
    now = ctx.clock()
    finished = [
        (now - timedelta(minutes=1), "Success"),
        (now - timedelta(minutes=2), "Success"),
        (now - timedelta(hours=3), "Failure"),
        (now - timedelta(hours=30), "Success"),  # older than the chart
    ]
    with ctx.uow() as uow:
        for i, (at, state) in enumerate(finished):
            uow.jobs.save(
                JobRecord(
                    id=str(uuid.UUID(int=i + 1)),
                    partition_id=str(uuid.UUID(int=100)),
                    kind="backup",
                    state=state,
                    scheduled=True,
                    created_at=at,
                    deadline=at + timedelta(minutes=10),
                    params={},
                    finished_at=at,
                )
            )
        uow.commit()
    act = views.activity(ctx)
    assert len(act.hours) == len(act.succeeded) == len(act.failed) == 24
    assert act.hours == sorted(act.hours)
    if request.node.callspec.params["ctx"] == "fake":
        assert sum(act.succeeded) == sum(act.failed) == 0  # counted on SQL catalogs only
        return

    def bucket(at: datetime) -> int:
        return act.hours.index(at.replace(minute=0, second=0, microsecond=0))

    assert act.succeeded[bucket(finished[0][0])] == 2
    assert act.failed[bucket(finished[2][0])] == 1
    assert (sum(act.succeeded), sum(act.failed)) == (2, 1)


def test_activity_reads_only_the_hours_it_does_not_hold(
    ctx: ServiceContext, request: pytest.FixtureRequest, clock: FakeClock
) -> None:
    """With the hours that are over kept by the caller, later calls agree with a full count."""
    if request.node.callspec.params["ctx"] == "fake":
        pytest.skip("counted on SQL catalogs only")

    def finish(n: int, at: datetime, state: str) -> None:
        with ctx.uow() as uow:
            for i in range(n):
                uow.jobs.save(
                    JobRecord(
                        id=str(uuid.uuid4()),
                        partition_id=str(uuid.UUID(int=100 + i)),
                        kind="backup",
                        state=state,
                        scheduled=True,
                        created_at=at,
                        deadline=at + timedelta(minutes=10),
                        params={},
                        finished_at=at,
                    )
                )
            uow.commit()

    past: dict[datetime, tuple[int, int]] = {}
    finish(3, clock() - timedelta(hours=2), "Success")
    finish(1, clock(), "Failure")
    first = views.activity(ctx, past=past)
    assert first == views.activity(ctx)  # the same as a full count
    assert len(past) == 23  # every hour but the current one
    clock.advance(hours=1)
    finish(2, clock(), "Success")  # in the new current hour
    again = views.activity(ctx, past=past)
    assert again == views.activity(ctx)
    assert (sum(again.succeeded), sum(again.failed)) == (5, 1)
