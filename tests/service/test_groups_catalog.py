"""
Consistency groups in the catalog (SQLite and PostgreSQL): definitions and their
rules, a group job claimed and completed through the typed protocol, and the
completion recorded as each member's backup and the group's point.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold.core.policy import EntityRef
from safehold.core.work import ClaimRequest, GroupPointRef, Outcome, SnapshotRef
from safehold.service import groups, jobs
from safehold.service.context import ServiceContext
from safehold.service.errors import BackupInProgress, BackupNotEnabled
from safehold.service.partitions import PartitionCreate, register_partition
from safehold.service.policies import create_policy
from safehold.service.protection import enable_backup
from tests.service.helpers import P1, P2, P3, add_partition, policy_doc

SNAP = {P1: "a1" * 32, P2: "b2" * 32}
POINT = "c3" * 32


@pytest.fixture
def sql_ctx(ctx: ServiceContext) -> ServiceContext:
    """Every catalog: SQLite, PostgreSQL and the in-memory fake."""
    return ctx


def test_definitions_and_their_rules(sql_ctx: ServiceContext, tmp_path: Path) -> None:
    ctx = sql_ctx
    for pid in (P1, P2, P3):
        add_partition(ctx, pid, tmp_path / pid)
    check = {"Database": P1, "Query": "SELECT 1", "Directory": P2}
    with pytest.raises(groups.GroupInvalid, match="must be a postgres: member"):
        groups.put_group(ctx, "shop", {"Members": [P1, P2], "Validators": [check]})
    doc = groups.put_group(ctx, "shop", {"Members": [P2, P1]})
    assert doc["Members"] == [P2, P1]
    assert groups.put_group(ctx, "shop", {"Members": [P1, P2]})["Members"] == [P1, P2]
    with pytest.raises(groups.GroupMemberTaken, match="'shop'"):
        groups.put_group(ctx, "other", {"Members": [P3, P2]})
    with pytest.raises(groups.GroupInvalid, match="not registered"):
        groups.put_group(ctx, "other", {"Members": ["44444444-4444-4444-4444-444444444444"]})
    with pytest.raises(groups.GroupInvalid, match="listed twice"):
        groups.put_group(ctx, "other", {"Members": [P3, P3]})
    with pytest.raises(groups.GroupInvalid, match="letters"):
        groups.put_group(ctx, "bad name", {"Members": [P3]})
    register_partition(
        ctx, PartitionCreate("fabric:/Shop", "fabric:/Shop/Orders", P3, "command:true")
    )
    with pytest.raises(groups.GroupInvalid, match="not command:"):
        groups.put_group(ctx, "other", {"Members": [P3]})
    assert [g["Name"] for g in groups.list_groups(ctx)] == ["shop"]
    with pytest.raises(groups.GroupNotFound):
        groups.get_group(ctx, "nope")
    with pytest.raises(BackupNotEnabled):  # no policy, no storage given, no point yet
        groups.request_backup(ctx, "shop")
    groups.delete_group(ctx, "shop")
    assert groups.list_groups(ctx) == []
    groups.put_group(ctx, "other", {"Members": [P2]})  # P2 is free again


def test_a_group_job_through_the_protocol_is_recorded_per_member(
    sql_ctx: ServiceContext, tmp_path: Path
) -> None:
    ctx = sql_ctx
    for pid in (P1, P2):
        add_partition(ctx, pid, tmp_path / pid)
    create_policy(ctx, policy_doc("nightly", tmp_path / "store"))
    enable_backup(ctx, EntityRef("Application", "fabric:/Shop"), "nightly")
    groups.put_group(ctx, "shop", {"Members": [P1, P2]})
    job = groups.request_backup(ctx, "shop")
    with pytest.raises(groups.GroupBusy):
        groups.request_backup(ctx, "shop")
    # The job sits on one member, but no member takes a backup or restore of its own meanwhile.
    for pid in (P1, P2):
        with pytest.raises(BackupInProgress, match="consistency group 'shop'"):
            jobs.request_backup(ctx, pid)

    # Only an agent that announces the kind gets it; the item is typed.
    assert jobs.claim(ctx, "old", ClaimRequest(Kinds=["backup", "drill"])) is None
    item = jobs.claim(ctx, "a", ClaimRequest(Kinds=["group-backup"]))
    assert item is not None
    assert item.JobId == job.id
    params = item.group_backup()
    assert params.group == "shop"
    assert [m.PartitionId for m in params.members] == [P1, P2]
    assert item.Storage is not None
    assert item.Storage["PrimaryPassword"] == "pw-very-secret"  # opened for the agent only

    now = ctx.clock()
    ref = GroupPointRef(
        Group="shop",
        Time="2026-12-01T10:00:00Z",
        RestorePoint="safehold-shop-x",
        SnapshotId=POINT,
        Members={
            pid: SnapshotRef(Id=sid, Time="2026-12-01T10:00:00Z", Size=7)
            for pid, sid in SNAP.items()
        },
    )
    outcome = Outcome(State="Success", Group=ref, Attempt=item.Attempt)
    for _ in range(2):  # the completion records the point; a repeat records nothing twice
        done = jobs.complete(ctx, "a", job.id, outcome)
        assert done.state == "Success"
    with ctx.uow() as uow:
        groups.record_outcome(uow, done, outcome, now)
        uow.commit()
    with ctx.reader() as uow:
        for pid, sid in SNAP.items():
            backups = uow.backups.list(partition_id=pid)
            assert [b.snapshot_id for b in backups] == [sid]
            p = uow.partitions.get(pid)
            assert p is not None
            assert p.last_backup_state == "Success"
        points = uow.groups.points("shop")
    assert [(p.snapshot_id, p.members) for p in points] == [(POINT, SNAP)]

    # A restore of that point: one typed group-restore item for the same anchor.
    with pytest.raises(groups.GroupInvalid, match="no point at or before"):
        groups.request_restore(ctx, "shop", {"Time": "2026-12-01T09:00:00Z"})
    with pytest.raises(groups.GroupPointNotFound):
        groups.request_restore(ctx, "shop", {"Point": "nope"})
    rjob = groups.request_restore(ctx, "shop", {"Time": "2026-12-01T11:00:00Z"}, drill=True)
    item = jobs.claim(ctx, "a", ClaimRequest(Kinds=["group-restore"]))
    assert item is not None
    assert item.JobId == rjob.id
    rp = item.group_restore()
    assert rp.drill
    assert rp.point.RestorePoint == "safehold-shop-x"
    assert {pid: s.Id for pid, s in rp.point.Members.items()} == SNAP
