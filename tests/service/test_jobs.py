"""Backup and restore jobs through an in-process agent, with the fake engine and clock."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from safehold.api.sf_render import backup_progress as render_backup_progress
from safehold.api.sf_render import restore_progress as render_restore_progress
from safehold.core.policy import EntityRef, PolicyError
from safehold.core.snapshot import format_time
from safehold.core.work import Heartbeat, Outcome
from safehold.service import jobs, partitions, policies, protection, scheduler
from safehold.service.context import ServiceContext
from safehold.service.errors import (
    BackupInProgress,
    BackupNotEnabled,
    BackupNotFound,
    PartitionMismatch,
    RestoreInProgress,
)
from safehold.service.model import PartitionKey
from safehold.storage.errors import StorageUnavailable
from safehold.testing import FakeClock, FakeEngine
from tests.service.helpers import P1, P2, P3, add_partition, policy_doc, run_agent_once

PART = EntityRef("Partition", P1)


def backup_progress(ctx: ServiceContext, pid: str) -> dict[str, Any]:
    """GetBackupProgress, as the API renders it."""
    return render_backup_progress(jobs.latest_job(ctx, pid, ["backup"]))


def restore_progress(ctx: ServiceContext, pid: str) -> dict[str, Any]:
    """GetRestoreProgress, as the API renders it."""
    return render_restore_progress(jobs.latest_job(ctx, pid, ["restore"]))


def first_slots(ctx: ServiceContext, clock: FakeClock) -> None:
    """Let the scheduler give every partition its first slot, then move past the interval."""
    assert scheduler.tick(ctx) == []  # slots are spread over the interval: none at once
    clock.advance(minutes=10)


@pytest.fixture
def enabled(ctx: ServiceContext, store_dir: Path, tmp_path: Path) -> Path:
    """P1 and P2 registered under fabric:/Shop/Orders, with a policy on the service."""
    add_partition(ctx, P1, tmp_path / "p1")
    add_partition(ctx, P2, tmp_path / "p2")
    policies.create_policy(ctx, policy_doc("p", store_dir))
    protection.enable_backup(ctx, EntityRef("Service", "fabric:/Shop/Orders"), "p")
    return tmp_path


def test_on_demand_backup_goes_accepted_in_progress_success(
    ctx: ServiceContext, enabled: Path
) -> None:
    """Progress shows Accepted, then Success with BackupId, location, epoch and LSN."""
    jobs.request_backup(ctx, P1)
    progress = backup_progress(ctx, P1)
    assert progress["BackupState"] == "Accepted"
    assert progress["BackupId"] == "00000000-0000-0000-0000-000000000000"
    assert run_agent_once(ctx)
    progress = backup_progress(ctx, P1)
    assert progress["BackupState"] == "Success"
    assert progress["BackupLocation"].startswith(f"Shop\\Orders\\{P1}\\")
    assert progress["LsnOfLastBackupRecord"] == "1"
    [b] = jobs.list_backups(ctx, PART, start=None, end=None, latest=False)
    assert (b.backup_id, "Full") == (progress["BackupId"], b.backup_type)


def test_one_job_per_partition_but_others_in_parallel(ctx: ServiceContext, enabled: Path) -> None:
    """A second backup or a restore of the same partition is 409; another partition is fine."""
    jobs.request_backup(ctx, P1)
    with pytest.raises(BackupInProgress):
        jobs.request_backup(ctx, P1)
    jobs.request_backup(ctx, P2)
    assert run_agent_once(ctx)
    assert run_agent_once(ctx)
    [b] = jobs.list_backups(ctx, PART, start=None, end=None, latest=False)
    jobs.request_restore(ctx, P1, {"BackupId": b.backup_id, "BackupLocation": b.location})
    with pytest.raises(RestoreInProgress):
        jobs.request_backup(ctx, P1)


def test_concurrent_requests_give_exactly_one_job(ctx: ServiceContext, enabled: Path) -> None:
    """Ten threads asking at once: one wins, the rest get 409."""
    results: list[str] = []

    def ask() -> None:
        try:
            jobs.request_backup(ctx, P1)
            results.append("ok")
        except BackupInProgress:
            results.append("409")

    threads = [threading.Thread(target=ask) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r for r in results if r == "ok"] == ["ok"]
    assert results.count("409") == 9


def test_restore_checks_id_location_and_partition(ctx: ServiceContext, enabled: Path) -> None:
    """Mismatched location, kinds that differ, and a strict partition are refused."""
    jobs.request_backup(ctx, P1)
    run_agent_once(ctx)
    [b] = jobs.list_backups(ctx, PART, start=None, end=None, latest=False)
    with pytest.raises(PartitionMismatch, match="mismatch"):
        jobs.request_restore(ctx, P1, {"BackupId": b.backup_id, "BackupLocation": "x/y"})
    ask = {"BackupId": b.backup_id, "BackupLocation": b.location}
    p2 = partitions.find_partition(ctx, P2)
    ranged = partitions.PartitionCreate(
        p2.application, p2.service, P2, p2.source, key=PartitionKey("Int64Range", 0, 9)
    )
    partitions.register_partition(ctx, ranged)
    with pytest.raises(PartitionMismatch, match="kinds and keys must agree"):
        jobs.request_restore(ctx, P2, ask)
    strict = replace(ranged, key=PartitionKey(), strict_restore=True)
    partitions.register_partition(ctx, strict)
    with pytest.raises(PartitionMismatch, match="AllowRestoreToOtherPartition"):
        jobs.request_restore(ctx, P2, ask)
    with pytest.raises(BackupNotFound):
        jobs.request_restore(
            ctx, P1, {"BackupId": "99999999-9999-9999-9999-999999999999", "BackupLocation": "a"}
        )
    with pytest.raises(PolicyError):
        jobs.request_restore(ctx, P1, {"BackupId": "nope", "BackupLocation": "a"})
    with pytest.raises(PolicyError):
        jobs.request_restore(ctx, P1, {})
    # Either separator, with or without SF's ".zip", names the same location.
    sf_style = b.location.replace("\\", "/").removesuffix(".zip")
    jobs.request_restore(ctx, P1, {"BackupId": b.backup_id, "BackupLocation": sf_style})


def test_restore_into_another_partition_as_sf_does(ctx: ServiceContext, enabled: Path) -> None:
    """Partitions of the same kind: P2 gets P1's data, and its epoch moves on (a data loss)."""
    jobs.request_backup(ctx, P1)
    run_agent_once(ctx)
    [b] = jobs.list_backups(ctx, PART, start=None, end=None, latest=False)
    jobs.request_restore(ctx, P2, {"BackupId": b.backup_id, "BackupLocation": b.location})
    assert run_agent_once(ctx)
    progress = restore_progress(ctx, P2)
    assert progress["RestoreState"] == "Success", progress
    assert f"data of {P1}" == (enabled / "p2" / "data.txt").read_text()
    assert progress["RestoredLsn"] == "1"


def test_restore_latest_and_point_in_time(
    ctx: ServiceContext, enabled: Path, clock: FakeClock
) -> None:
    """Latest picks the newest; RestorePointTime the newest at or before it."""
    (enabled / "p1" / "data.txt").write_text("v1")
    jobs.request_backup(ctx, P1)
    run_agent_once(ctx)
    t1 = clock.advance(minutes=30)
    (enabled / "p1" / "data.txt").write_text("v2")
    clock.advance(minutes=30)
    jobs.request_backup(ctx, P1)
    run_agent_once(ctx)
    (enabled / "p1" / "data.txt").write_text("changed")
    jobs.request_restore(ctx, P1, {}, at_or_before=t1)
    run_agent_once(ctx)
    assert (enabled / "p1" / "data.txt").read_text() == "v1"
    jobs.request_restore(ctx, P1, {}, latest=True)
    run_agent_once(ctx)
    assert (enabled / "p1" / "data.txt").read_text() == "v2"


def test_engine_failure_is_reported(ctx: ServiceContext, enabled: Path, engine: FakeEngine) -> None:
    """A storage error ends the job as Failure with the error's code and message."""
    engine.fail_next = StorageUnavailable("the share is offline")
    jobs.request_backup(ctx, P1)
    run_agent_once(ctx)
    progress = backup_progress(ctx, P1)
    assert progress["BackupState"] == "Failure"
    assert progress["FailureError"]["Message"] == "the share is offline"


def test_timeout_and_lost_agent(ctx: ServiceContext, enabled: Path, clock: FakeClock) -> None:
    """Past its BackupTimeout a job is Timeout; a silent agent's job fails with the reason."""
    jobs.request_backup(ctx, P1, timeout_minutes=1)
    clock.advance(minutes=2)
    [ended] = jobs.sweep(ctx)
    assert (ended.state, ended.failure_code) == ("Timeout", "FABRIC_E_TIMEOUT")
    assert backup_progress(ctx, P1)["BackupState"] == "Timeout"
    jobs.request_backup(ctx, P1, timeout_minutes=60)
    assert jobs.claim(ctx, "agent-a") is not None
    clock.advance(seconds=30)
    assert jobs.sweep(ctx) == []
    clock.advance(seconds=61)
    [lost] = jobs.sweep(ctx)
    assert lost.state == "Failure"
    assert "agent agent-a disappeared" in (lost.failure_message or "")


def test_a_controller_restart_fails_nothing(ctx: ServiceContext, enabled: Path) -> None:
    """Queued jobs stay queued, and a running job keeps running, across a controller restart."""
    jobs.request_backup(ctx, P1)
    jobs.request_backup(ctx, P2)
    item = jobs.claim(ctx, "remote")
    assert item is not None
    # A new controller over the same catalog (the context is all the service keeps).
    assert backup_progress(ctx, P1)["BackupState"] in ("Accepted", "BackupInProgress")
    assert backup_progress(ctx, P2)["BackupState"] in ("Accepted", "BackupInProgress")
    assert run_agent_once(ctx, "embedded")  # the queued one runs
    jobs.complete(ctx, "remote", item.JobId, Outcome.failure("X", "boom", attempt=item.Attempt))
    states = {backup_progress(ctx, p)["BackupState"] for p in (P1, P2)}
    assert states == {"Success", "Failure"}


def test_concurrency_limit_across_partitions(ctx: ServiceContext, enabled: Path) -> None:
    """No more than max_running_jobs run at once, when a limit is set."""
    ctx.max_running_jobs = 2
    add_partition(ctx, P3, enabled / "p3")
    for pid in (P1, P2, P3):
        jobs.request_backup(ctx, pid)
    assert jobs.claim(ctx, "a") is not None
    assert jobs.claim(ctx, "b") is not None
    assert jobs.claim(ctx, "c") is None  # limit is 2 in the test context


def test_agent_assignment(ctx: ServiceContext, enabled: Path) -> None:
    """A partition assigned to an agent is only given to that agent."""
    partitions.register_partition(
        ctx,
        partitions.PartitionCreate(
            "fabric:/Shop", "fabric:/Shop/Orders", P1, f"dir:{enabled / 'p1'}", agent="east"
        ),
    )
    jobs.request_backup(ctx, P1)
    assert jobs.claim(ctx, "west") is None
    item = jobs.claim(ctx, "east")
    assert item is not None
    assert item.Partition.PartitionId == P1


def test_scheduler_chains_and_missed_slots(
    ctx: ServiceContext, enabled: Path, clock: FakeClock
) -> None:
    """Periodic backups chain incrementals up to the limit; missed slots run once, spread."""
    types = []
    first_slots(ctx, clock)
    for _ in range(6):
        new = scheduler.tick(ctx)
        assert {P1, P2} == {j.partition_id for j in new}
        while run_agent_once(ctx):
            pass
        assert scheduler.tick(ctx) == []  # each slot is taken once
        clock.advance(minutes=10)
    for b in jobs.list_backups(ctx, PART, start=None, end=None, latest=False):
        types.append(b.backup_type)
    # MaxIncrementalBackups=3: full + 3 incrementals, then a new full.
    assert types == ["Full", "Incremental", "Incremental", "Incremental", "Full", "Incremental"]
    clock.advance(hours=5)  # 30 slots missed: one catch-up each, at its own next slot
    assert scheduler.tick(ctx) == []
    clock.advance(minutes=10)
    assert len(scheduler.tick(ctx)) == 2
    while run_agent_once(ctx):
        pass
    assert scheduler.tick(ctx) == []


def test_suspended_partitions_are_not_scheduled(
    ctx: ServiceContext, enabled: Path, clock: FakeClock
) -> None:
    """Suspension at the service stops periodic backups below it; resuming starts them again."""
    protection.suspend_backup(ctx, EntityRef("Service", "fabric:/Shop/Orders"))
    clock.advance(hours=1)
    assert scheduler.tick(ctx) == []
    clock.advance(hours=1)
    assert scheduler.tick(ctx) == []
    protection.resume_backup(ctx, EntityRef("Service", "fabric:/Shop/Orders"))
    first_slots(ctx, clock)
    assert {P1, P2} == {j.partition_id for j in scheduler.tick(ctx)}


def test_on_demand_needs_a_storage(ctx: ServiceContext, tmp_path: Path, store_dir: Path) -> None:
    """Without a policy, on-demand backup needs BackupStorage in the request."""
    add_partition(ctx, P1, tmp_path / "p1")
    with pytest.raises(BackupNotEnabled):
        jobs.request_backup(ctx, P1)
    jobs.request_backup(ctx, P1, storage_doc={"StorageKind": "FileShare", "Path": str(store_dir)})
    assert run_agent_once(ctx)
    assert backup_progress(ctx, P1)["BackupState"] == "Success"
    with pytest.raises(PolicyError):
        jobs.request_backup(ctx, P1, timeout_minutes=0)


def test_get_backups_filters_and_storage_listing(
    ctx: ServiceContext, enabled: Path, clock: FakeClock, store_dir: Path
) -> None:
    """Time filters, Latest, and listing straight from the storage agree."""
    for _ in range(3):
        jobs.request_backup(ctx, P1)
        run_agent_once(ctx)
        clock.advance(hours=1)
    jobs.request_backup(ctx, P2)
    run_agent_once(ctx)
    all_p1 = jobs.list_backups(ctx, PART, start=None, end=None, latest=False)
    assert len(all_p1) == 3
    mid = all_p1[1].created_at
    assert all_p1[1:] == jobs.list_backups(ctx, PART, start=mid, end=None, latest=False)
    assert all_p1[:2] == jobs.list_backups(ctx, PART, start=None, end=mid, latest=False)
    app = EntityRef("Application", "fabric:/Shop")
    latest = jobs.list_backups(ctx, app, start=None, end=None, latest=True)
    assert {P1, P2} == {b.partition_id for b in latest}
    storage = {"StorageKind": "FileShare", "Path": str(store_dir)}
    listed = jobs.storage_backups(ctx, storage, PART, start=None, end=None, latest=False)
    assert [b.backup_id for b in all_p1] == [b.backup_id for b in listed]
    assert [b.location for b in all_p1] == [b.location for b in listed]
    with pytest.raises(PolicyError):
        jobs.list_backups(ctx, PART, start=clock(), end=mid, latest=False)
    assert format_time(mid)


def test_retention_after_scheduled_backups(
    ctx: ServiceContext, enabled: Path, clock: FakeClock, engine: FakeEngine
) -> None:
    """Old backups beyond the retention are forgotten in storage and in the catalog."""
    every_8h = {"ScheduleKind": "FrequencyBased", "Interval": "PT8H"}
    policies.update_policy(ctx, "p", {**policies.get_policy(ctx, "p"), "Schedule": every_8h})
    assert scheduler.tick(ctx) == []
    clock.advance(hours=8)
    for _ in range(9):
        assert len(scheduler.tick(ctx)) == 2
        while run_agent_once(ctx):
            pass
        clock.advance(hours=8)
    # Backups at 0h, 8h, ... 64h: F I I I F I I I F (MaxIncrementalBackups 3).
    # After the last one the cut is 64h - 24h = 40h; the newest full older than it is
    # the one at 32h: it anchors what is newer, and the four before it go.
    left = jobs.list_backups(ctx, PART, start=None, end=None, latest=False)
    assert [b.backup_type for b in left] == [
        "Full",
        "Incremental",
        "Incremental",
        "Incremental",
        "Full",
    ]
    in_storage = [s for items in engine.repos.values() for s, _ in items]
    assert len(in_storage) == 10  # five per partition: storage and catalog agree


def test_clean_backup_on_disable(ctx: ServiceContext, enabled: Path, engine: FakeEngine) -> None:
    """DisableBackup with CleanBackup deletes the backups of the partitions below."""
    jobs.request_backup(ctx, P1)
    run_agent_once(ctx)
    jobs.disable_backup_and_clean(ctx, EntityRef("Service", "fabric:/Shop/Orders"), clean=True)
    while run_agent_once(ctx):
        pass
    assert jobs.list_backups(ctx, PART, start=None, end=None, latest=False) == []
    assert all(not items for items in engine.repos.values())


def test_a_broken_storage_does_not_stop_other_schedules(
    ctx: ServiceContext, tmp_path: Path, store_dir: Path, clock: FakeClock
) -> None:
    """A partition whose policy storage cannot be used is skipped; the others are scheduled."""
    add_partition(ctx, P1, tmp_path / "p1")
    add_partition(ctx, P2, tmp_path / "p2", svc="Billing")
    policies.create_policy(ctx, policy_doc("good", store_dir))
    bad = policy_doc("bad", store_dir)
    bad["Storage"] = {"StorageKind": "FileShare", "Path": "relative/path"}
    policies.create_policy(ctx, bad)
    protection.enable_backup(ctx, EntityRef("Partition", P1), "bad")
    protection.enable_backup(ctx, EntityRef("Partition", P2), "good")
    assert scheduler.tick(ctx) == []
    clock.advance(minutes=10)
    assert [P2] == [j.partition_id for j in scheduler.tick(ctx)]


def test_agents_cannot_report_nonsense(ctx: ServiceContext, enabled: Path) -> None:
    """A success without a snapshot, or a report on someone else's job, is refused."""
    from safehold.service.errors import JobNotRunning

    jobs.request_backup(ctx, P1)
    item = jobs.claim(ctx, "a")
    assert item is not None
    with pytest.raises(PolicyError):
        jobs.complete(ctx, "a", item.JobId, Outcome(State="Success"))
    with pytest.raises(JobNotRunning):
        jobs.complete(ctx, "b", item.JobId, Outcome(State="Failure"))
    with pytest.raises(JobNotRunning):
        jobs.heartbeat(ctx, "a", "no-such-job", Heartbeat())


def test_auto_restore_on_data_loss(ctx: ServiceContext, enabled: Path, store_dir: Path) -> None:
    """With AutoRestoreOnDataLoss a reported data loss restores the latest backup; without, 404."""
    jobs.request_backup(ctx, P1)
    run_agent_once(ctx)
    with pytest.raises(BackupNotEnabled, match="AutoRestoreOnDataLoss"):
        jobs.report_data_loss(ctx, P1)
    policies.update_policy(
        ctx, "p", {**policies.get_policy(ctx, "p"), "AutoRestoreOnDataLoss": True}
    )
    (enabled / "p1" / "data.txt").unlink()
    job = jobs.report_data_loss(ctx, P1)
    assert job.kind == "restore"
    run_agent_once(ctx)
    assert (enabled / "p1" / "data.txt").read_text() == f"data of {P1}"
    with pytest.raises(BackupNotFound):
        jobs.report_data_loss(ctx, P2)


def test_restore_from_storage_alone(ctx: ServiceContext, enabled: Path, store_dir: Path) -> None:
    """With the catalog's backups gone (a rebuilt controller), BackupStorage finds the backup."""
    jobs.request_backup(ctx, P1)
    run_agent_once(ctx)
    [b] = jobs.list_backups(ctx, PART, start=None, end=None, latest=False)
    with ctx.uow() as uow:
        uow.backups.delete([b.backup_id])
        uow.commit()
    storage = {"StorageKind": "FileShare", "Path": str(store_dir)}
    (enabled / "p1" / "data.txt").write_text("lost")
    jobs.request_restore(
        ctx, P1, {"BackupId": b.backup_id, "BackupLocation": b.location, "BackupStorage": storage}
    )
    run_agent_once(ctx)
    assert (enabled / "p1" / "data.txt").read_text() == f"data of {P1}"
    (enabled / "p1" / "data.txt").write_text("lost again")
    jobs.request_restore(ctx, P1, {"BackupStorage": storage}, latest=True)
    run_agent_once(ctx)
    assert (enabled / "p1" / "data.txt").read_text() == f"data of {P1}"
    # Without BackupStorage, the policy's storage is searched.
    jobs.request_restore(ctx, P1, {"BackupId": b.backup_id, "BackupLocation": b.location})
    assert run_agent_once(ctx)
    assert restore_progress(ctx, P1)["RestoreState"] == "Success"


def test_unexpected_engine_errors_fail_the_job_without_details(
    ctx: ServiceContext, enabled: Path, engine: FakeEngine
) -> None:
    """A bug in the engine ends the job as Failure; the agent survives; nothing is quoted."""
    engine.fail_next = RuntimeError("AccountKey=do-not-show")
    jobs.request_backup(ctx, P1)
    assert run_agent_once(ctx)
    progress = backup_progress(ctx, P1)
    assert progress["BackupState"] == "Failure"
    assert progress["FailureError"]["Code"] == "E_UNEXPECTED"
    assert "do-not-show" not in progress["FailureError"]["Message"]
