"""The controller's fleet behaviours: fencing, incarnations, spread slots, purges, outages."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from safehold.core.policy import EntityRef
from safehold.core.work import ClaimRequest, Heartbeat, Outcome, SnapshotRef
from safehold.service import jobs, policies, protection, scheduler
from safehold.service.context import ServiceContext
from safehold.service.errors import JobNotRunning
from safehold.testing import FakeClock
from tests.service.helpers import P1, P2, add_partition, policy_doc, run_agent_once

SNAP = SnapshotRef(Id="ab" * 32, Time="2026-11-22T05:00:00Z", Size=10)


@pytest.fixture
def enabled(ctx: ServiceContext, store_dir: Path, tmp_path: Path) -> Path:
    """P1 and P2 registered under fabric:/Shop/Orders, with a policy on the service."""
    add_partition(ctx, P1, tmp_path / "p1")
    add_partition(ctx, P2, tmp_path / "p2")
    policies.create_policy(ctx, policy_doc("p", store_dir))
    protection.enable_backup(ctx, EntityRef("Service", "fabric:/Shop/Orders"), "p")
    return tmp_path


def test_a_stale_attempt_cannot_overwrite_a_newer_outcome(
    ctx: ServiceContext, enabled: Path, clock: FakeClock
) -> None:
    """An agent whose job was swept and re-run reports late: its report is refused."""
    jobs.request_backup(ctx, P1)
    first = jobs.claim(ctx, "a", ClaimRequest(Incarnation="a1"))
    assert first is not None
    assert first.Attempt == 1
    with pytest.raises(JobNotRunning, match="stale"):
        jobs.complete(ctx, "a", first.JobId, Outcome(State="Failure", Attempt=7))
    with pytest.raises(JobNotRunning):
        jobs.heartbeat(ctx, "a", first.JobId, Heartbeat(Attempt=7))
    jobs.heartbeat(ctx, "a", first.JobId, Heartbeat(Attempt=1, Progress={"done_bytes": 5}))
    done = jobs.complete(ctx, "a", first.JobId, Outcome(State="Success", Snapshot=SNAP, Attempt=1))
    assert done.state == "Success"


def test_reports_are_idempotent(ctx: ServiceContext, enabled: Path) -> None:
    """The same outcome sent twice (a lost answer, a retry) records one backup."""
    jobs.request_backup(ctx, P1)
    item = jobs.claim(ctx, "a", ClaimRequest(Incarnation="a1"))
    assert item is not None
    outcome = Outcome(State="Success", Snapshot=SNAP, Attempt=item.Attempt)
    jobs.complete(ctx, "a", item.JobId, outcome)
    again = jobs.complete(ctx, "a", item.JobId, outcome)
    assert again.state == "Success"
    backups = jobs.list_backups(ctx, EntityRef("Partition", P1), start=None, end=None, latest=False)
    assert [b.snapshot_id for b in backups] == [SNAP.Id]


def test_a_sweep_does_not_overwrite_a_recorded_success(
    ctx: ServiceContext, enabled: Path, clock: FakeClock
) -> None:
    """The sweep sees a job past its deadline; the agent's Success lands first: Success stays."""
    jobs.request_backup(ctx, P1, timeout_minutes=1)
    item = jobs.claim(ctx, "a", ClaimRequest(Incarnation="a1"))
    assert item is not None
    clock.advance(minutes=2)
    jobs.complete(ctx, "a", item.JobId, Outcome(State="Success", Snapshot=SNAP, Attempt=1))
    assert jobs.sweep(ctx) == []
    job = jobs.latest_job(ctx, P1, ["backup"])
    assert job is not None
    assert job.state == "Success"


def test_a_backup_finishing_after_its_timeout_is_still_recorded(
    ctx: ServiceContext, enabled: Path, clock: FakeClock
) -> None:
    """Every stored backup is known to the catalog, even one whose job timed out."""
    jobs.request_backup(ctx, P1, timeout_minutes=1)
    item = jobs.claim(ctx, "a", ClaimRequest(Incarnation="a1"))
    assert item is not None
    clock.advance(minutes=2)
    [ended] = jobs.sweep(ctx)
    assert ended.state == "Timeout"
    jobs.complete(ctx, "a", item.JobId, Outcome(State="Success", Snapshot=SNAP, Attempt=1))
    job = jobs.latest_job(ctx, P1, ["backup"])
    assert job is not None
    assert job.state == "Timeout"  # the job keeps how it ended
    backups = jobs.list_backups(ctx, EntityRef("Partition", P1), start=None, end=None, latest=False)
    assert [b.snapshot_id for b in backups] == [SNAP.Id]


def test_a_restarted_agent_fails_its_old_jobs_at_once(ctx: ServiceContext, enabled: Path) -> None:
    """The same agent id with a new incarnation: its earlier run's job fails, not at a timeout."""
    jobs.request_backup(ctx, P1)
    item = jobs.claim(ctx, "a", ClaimRequest(Incarnation="run-1"))
    assert item is not None
    assert jobs.claim(ctx, "a", ClaimRequest(Incarnation="run-2")) is None
    job = jobs.latest_job(ctx, P1, ["backup"])
    assert job is not None
    assert (job.state, job.failure_code) == ("Failure", "SAFEHOLD_E_AGENT_RESTARTED")
    # A late report from the dead run changes nothing.
    late = jobs.complete(ctx, "a", item.JobId, Outcome.failure("X", "late", attempt=1))
    assert late.failure_code == "SAFEHOLD_E_AGENT_RESTARTED"
    jobs.request_backup(ctx, P1)  # the partition is free again at once


def test_claims_offer_only_the_kinds_an_agent_knows(ctx: ServiceContext, enabled: Path) -> None:
    """An older agent that knows no 'clean' jobs is never handed one."""
    jobs.disable_backup_and_clean(ctx, EntityRef("Service", "fabric:/Shop/Orders"), clean=True)
    assert jobs.claim(ctx, "old", ClaimRequest(Kinds=["backup", "restore"])) is None
    item = jobs.claim(ctx, "new", ClaimRequest(Kinds=["backup", "restore", "clean"]))
    assert item is not None
    assert item.Kind == "clean"


def test_concurrent_claims_take_each_job_once(ctx: ServiceContext, enabled: Path) -> None:
    """Eight agents racing for two jobs: each job goes to exactly one of them."""
    jobs.request_backup(ctx, P1)
    jobs.request_backup(ctx, P2)
    got: list[str] = []
    lock = threading.Lock()

    def agent(i: int) -> None:
        item = jobs.claim(ctx, f"agent-{i}", ClaimRequest(Incarnation=str(i)))
        if item is not None:
            with lock:
                got.append(item.JobId)

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == len(set(got)) == 2


def test_an_on_demand_backup_queues_behind_a_scheduled_one(
    ctx: ServiceContext, enabled: Path, clock: FakeClock
) -> None:
    """SF's 409 is for on-demand backups and restores only; progress shows on-demand jobs."""
    ctx.schedule_spread = 0.0
    assert {j.partition_id for j in scheduler.tick(ctx)} == {P1, P2}
    running = jobs.claim(ctx, "a", ClaimRequest(Incarnation="a1"))
    assert running is not None
    jobs.request_backup(ctx, running.Partition.PartitionId)  # no 409
    assert jobs.latest_job(ctx, running.Partition.PartitionId, ["backup"], scheduled=False)
    while run_agent_once(ctx):
        pass
    jobs.complete(
        ctx, "a", running.JobId, Outcome(State="Success", Snapshot=SNAP, Attempt=running.Attempt)
    )
    assert run_agent_once(ctx)  # the queued on-demand backup runs after it
    on_demand = jobs.latest_job(ctx, running.Partition.PartitionId, ["backup"], scheduled=False)
    assert on_demand is not None
    assert on_demand.state == "Success"


def test_slots_spread_over_the_interval_and_each_is_taken_once(
    ctx: ServiceContext, store_dir: Path, tmp_path: Path, clock: FakeClock
) -> None:
    """Forty partitions enabled at once start spread over ten minutes, not in one tick."""
    pids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(40)]
    for pid in pids:
        add_partition(ctx, pid, tmp_path / pid)
    policies.create_policy(ctx, policy_doc("p", store_dir))
    protection.enable_backup(ctx, EntityRef("Application", "fabric:/Shop"), "p")
    seen: list[str] = []
    per_minute = []
    for _ in range(10):
        made = scheduler.tick(ctx)
        per_minute.append(len(made))
        seen += [j.partition_id for j in made]
        while run_agent_once(ctx):
            pass
        clock.advance(minutes=1)
    seen += [j.partition_id for j in scheduler.tick(ctx)]
    assert sorted(seen) == sorted(pids)  # each exactly once in one interval
    assert max(per_minute) < len(pids) // 2  # spread, not a stampede


def test_finished_jobs_are_purged_and_backups_kept(
    ctx: ServiceContext, enabled: Path, clock: FakeClock
) -> None:
    """Jobs older than the retention window go; the backups they made stay."""
    ctx.job_retention = timedelta(days=1)
    jobs.request_backup(ctx, P1)
    assert run_agent_once(ctx)
    clock.advance(days=2)
    jobs.request_backup(ctx, P2)
    assert run_agent_once(ctx)
    assert jobs.purge_finished(ctx) == 1
    assert jobs.latest_job(ctx, P1, ["backup"]) is None
    assert jobs.latest_job(ctx, P2, ["backup"]) is not None
    assert jobs.list_backups(ctx, EntityRef("Partition", P1), start=None, end=None, latest=False)


def test_a_bounded_tick_leaves_the_rest_of_a_burst_to_the_next_ticks(
    ctx: ServiceContext,
    store_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst larger than a tick's budget is worked off over several ticks, each slot once."""
    monkeypatch.setattr(scheduler, "BATCH", 10)
    ctx.schedule_spread = 0.0  # all 25 due at once
    pids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(25)]
    for pid in pids:
        add_partition(ctx, pid, tmp_path / pid)
    policies.create_policy(ctx, policy_doc("p", store_dir))
    protection.enable_backup(ctx, EntityRef("Application", "fabric:/Shop"), "p")
    made: list[str] = []
    rounds = []
    while True:
        report = scheduler.TickReport()
        made += [j.partition_id for j in scheduler.tick(ctx, report, budget=0.0)]
        rounds.append(report.created)
        if not report.more:
            break
        assert len(rounds) < 10
    assert rounds == [10, 10, 5]  # one batch of each kind per tick: the budget was spent
    assert sorted(made) == pids
    assert scheduler.tick(ctx, budget=0.0) == []  # nothing twice


def test_a_configuration_operation_fails_only_when_its_controller_stops(
    ctx: ServiceContext, clock: FakeClock
) -> None:
    """
    Another replica's running operation (heartbeat fresh) is left alone; one whose
    controller died (no heartbeat for a minute) is failed, with the reason.
    """
    from safehold.service import config_backup

    with ctx.uow() as uow:
        now = clock()
        for op_id in ("alive", "dead"):
            uow.operations.save(
                op_id,
                kind="backup",
                state="InProgress",
                created_at=now,
                heartbeat_at=now,
                message=None,
            )
        uow.commit()
    clock.advance(seconds=50)
    assert config_backup.sweep(ctx) == 0  # both are within the minute
    with ctx.uow() as uow:
        uow.operations.save("alive", heartbeat_at=clock())
        uow.commit()
    clock.advance(seconds=20)
    assert config_backup.sweep(ctx) == 1
    assert config_backup.operation_status(ctx, "alive")["Status"] == "InProgress"
    dead = config_backup.operation_status(ctx, "dead")
    assert dead["Status"] == "Failed"
    assert "stopped" in dead["Error"]["Message"]


def test_a_backlog_keeps_the_spread_busy_partitions_take_their_next_slot(
    ctx: ServiceContext, store_dir: Path, tmp_path: Path, clock: FakeClock
) -> None:
    """
    While the agents lag (every due partition still has its job queued), the busy
    partitions are not all retried at one instant: each keeps its own slot.
    """
    pids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(40)]
    for pid in pids:
        add_partition(ctx, pid, tmp_path / pid)
    doc = policy_doc("p", store_dir)
    doc["Schedule"] = {"ScheduleKind": "FrequencyBased", "Interval": "PT1M"}
    policies.create_policy(ctx, doc)
    protection.enable_backup(ctx, EntityRef("Application", "fabric:/Shop"), "p")
    for _ in range(70):  # one interval and a bit, no agent: every job stays queued
        scheduler.tick(ctx)
        clock.advance(seconds=1)
    report = scheduler.TickReport()
    for _ in range(3):  # a slow leader: many partitions come due, busy, in each tick
        clock.advance(seconds=30)
        scheduler.tick(ctx, report)
    assert report.busy >= len(pids) // 2
    with ctx.uow() as uow:
        due = [p.next_due_at for p in uow.partitions.list()]
    assert all(d is not None for d in due)
    # Spread over the minute as the slots are, not bunched on one retry time.
    assert len({d.replace(microsecond=0) for d in due if d is not None}) >= len(pids) // 2
