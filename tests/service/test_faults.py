"""Induced data loss (StartDataLoss) and state: partitions whose agent reports epoch and LSN."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from safehold.core.policy import EntityRef, PolicyError
from safehold.core.work import Outcome
from safehold.service import faults, jobs, partitions, policies, protection
from safehold.service.context import ServiceContext
from safehold.service.errors import EntityNotFound, RestoreInProgress
from safehold.service.partitions import PartitionCreate, register_partition
from tests.service.helpers import P1, P2, add_partition, policy_doc

SVC = "Shop~Orders"


@pytest.fixture
def state_partition(ctx: ServiceContext, store_dir: Path) -> str:
    """P1 is a state: partition served by agent "orders-1", under a policy with auto-restore."""
    register_partition(
        ctx, PartitionCreate("fabric:/Shop", "fabric:/Shop/Orders", P1, "state:orders-1")
    )
    policies.create_policy(ctx, policy_doc("p", store_dir, AutoRestoreOnDataLoss=True))
    protection.enable_backup(ctx, EntityRef("Service", "fabric:/Shop/Orders"), "p")
    return P1


def test_state_source_fixes_the_agent(ctx: ServiceContext, state_partition: str) -> None:
    """A state:NAME partition is served by NAME; naming another agent is bad input."""
    [p] = [p for p in partitions.list_partitions(ctx) if p.partition_id == P1]
    assert p.agent == "orders-1"
    with pytest.raises(PolicyError):
        register_partition(
            ctx,
            PartitionCreate("fabric:/Shop", "fabric:/Shop/Orders", P2, "state:a", agent="b"),
        )


def test_data_loss_runs_on_the_partition_agent_and_takes_its_epoch(
    ctx: ServiceContext, state_partition: str
) -> None:
    """Running → Completed; only the partition's agent claims it; its epoch and LSN are kept."""
    op = str(uuid.uuid4())
    faults.start_data_loss(ctx, SVC, P1, op, "FullDataLoss")
    progress = faults.data_loss_progress(ctx, SVC, P1, op)
    assert progress["State"] == "Running"
    assert progress["InvokeDataLossResult"]["SelectedPartition"] == {
        "ServiceName": "fabric:/Shop/Orders",
        "PartitionId": P1,
    }
    assert jobs.claim(ctx, "someone-else") is None
    item = jobs.claim(ctx, "orders-1")
    assert item is not None
    assert (item.JobId, item.Kind) == (op, "dataloss")
    assert item.Params["mode"] == "FullDataLoss"
    assert item.Params["auto_restore"] is True
    assert item.Storage["StorageKind"] == "FileShare"
    with pytest.raises(RestoreInProgress):
        jobs.request_backup(ctx, P1)
    with pytest.raises(PolicyError):  # a state: partition must report where it ended
        jobs.complete(ctx, "orders-1", op, Outcome.model_validate({"State": "Success"}))
    jobs.complete(
        ctx,
        "orders-1",
        op,
        Outcome.model_validate({"State": "Success", "Epoch": [2, 0], "Lsn": 7, "Result": {"x": 1}}),
    )
    progress = faults.data_loss_progress(ctx, SVC, P1, op)
    assert progress["State"] == "Completed"
    assert progress["InvokeDataLossResult"]["ErrorCode"] == 0
    p = partitions.find_partition(ctx, P1)
    assert (p.epoch.data_loss_number, p.lsn) == (2, 7)


def test_a_failed_drill_is_faulted(ctx: ServiceContext, state_partition: str) -> None:
    """The agent's failure shows as Faulted with its error."""
    op = str(uuid.uuid4())
    faults.start_data_loss(ctx, SVC, P1, op, "PartialDataLoss")
    assert jobs.claim(ctx, "orders-1") is not None
    err = {"Code": "FABRIC_E_BACKUP_NOT_FOUND", "Message": "nothing to restore"}
    jobs.complete(ctx, "orders-1", op, Outcome.model_validate({"State": "Failure", "Error": err}))
    progress = faults.data_loss_progress(ctx, SVC, P1, op)
    assert progress["State"] == "Faulted"
    assert progress["FailureError"]["Code"] == "FABRIC_E_BACKUP_NOT_FOUND"


def test_state_backup_records_what_the_store_reports(
    ctx: ServiceContext, state_partition: str
) -> None:
    """The catalog keeps the store's type, epoch, LSN and chain, not the controller's guesses."""
    jobs.request_backup(ctx, P1)
    item = jobs.claim(ctx, "orders-1")
    assert item is not None
    full = "a" * 64
    jobs.complete(
        ctx,
        "orders-1",
        item.JobId,
        Outcome.model_validate(
            {
                "State": "Success",
                "Snapshot": {"Id": full, "Time": "2026-11-22T05:00:00Z"},
                "Epoch": [3, 0],
                "Lsn": 40,
                "BackupType": "Full",
            }
        ),
    )
    jobs.request_backup(ctx, P1, incremental=True)
    item = jobs.claim(ctx, "orders-1")
    assert item is not None
    jobs.complete(
        ctx,
        "orders-1",
        item.JobId,
        Outcome.model_validate(
            {
                "State": "Success",
                "Snapshot": {"Id": "b" * 64, "Time": "2026-11-22T05:01:00Z"},
                "Epoch": [3, 0],
                "Lsn": 45,
                "BackupType": "Incremental",
                "ParentSnapshot": full,
            }
        ),
    )
    first, second = jobs.list_backups(
        ctx, EntityRef("Partition", P1), start=None, end=None, latest=False
    )
    assert (first.backup_type, first.lsn, first.epoch.data_loss_number) == ("Full", 40, 3)
    assert (second.backup_type, second.lsn) == ("Incremental", 45)
    assert second.parent_id == first.backup_id
    assert second.chain_id == first.chain_id == first.backup_id


def test_bad_input_and_unknown_things(
    ctx: ServiceContext, state_partition: str, tmp_path: Path
) -> None:
    """Bad OperationId or mode → PolicyError; unknown partition, service or operation → 404."""
    op = str(uuid.uuid4())
    with pytest.raises(PolicyError):
        faults.start_data_loss(ctx, SVC, P1, "not-a-guid", "FullDataLoss")
    with pytest.raises(PolicyError):
        faults.start_data_loss(ctx, SVC, P1, None, "FullDataLoss")
    with pytest.raises(PolicyError):
        faults.start_data_loss(ctx, SVC, P1, op, "SomeDataLoss")
    with pytest.raises(EntityNotFound):
        faults.start_data_loss(ctx, SVC, P2, op, "FullDataLoss")
    with pytest.raises(EntityNotFound):
        faults.start_data_loss(ctx, "Shop~Other", P1, op, "FullDataLoss")
    with pytest.raises(faults.OperationNotFound):
        faults.data_loss_progress(ctx, SVC, P1, op)
    faults.start_data_loss(ctx, SVC, P1, op, "FullDataLoss")
    with pytest.raises(faults.OperationExists):
        faults.start_data_loss(ctx, SVC, P1, op, "FullDataLoss")
    add_partition(ctx, P2, tmp_path / "p2")
    with pytest.raises(PolicyError, match="state:"):  # a dir: partition has no store to damage
        faults.start_data_loss(ctx, SVC, P2, str(uuid.uuid4()), "FullDataLoss")


def _finish_backup(ctx: ServiceContext, snap: str, epoch: list[int], lsn: int, kind: str) -> str:
    item = jobs.claim(ctx, "orders-1")
    assert item is not None
    assert item.Kind == "backup"
    jobs.complete(
        ctx,
        "orders-1",
        item.JobId,
        Outcome.model_validate(
            {
                "State": "Success",
                "Snapshot": {"Id": snap, "Time": "2026-11-22T05:00:00Z"},
                "Epoch": epoch,
                "Lsn": lsn,
                "BackupType": kind,
            }
        ),
    )
    return str(item.Params["backup_type"])


def test_after_a_drill_the_next_scheduled_backup_is_full(
    ctx: ServiceContext, state_partition: str
) -> None:
    """The store's new epoch (reported by the drill) starts a new chain in the controller."""
    jobs.request_backup(ctx, P1, incremental=True)
    assert _finish_backup(ctx, "a" * 64, [0, 0], 10, "Full") == "Full"
    jobs.request_backup(ctx, P1, incremental=True)
    assert _finish_backup(ctx, "b" * 64, [0, 0], 12, "Incremental") == "Incremental"
    op = str(uuid.uuid4())
    faults.start_data_loss(ctx, SVC, P1, op, "FullDataLoss")
    assert jobs.claim(ctx, "orders-1") is not None
    jobs.complete(
        ctx,
        "orders-1",
        op,
        Outcome.model_validate({"State": "Success", "Epoch": [2, 0], "Lsn": 12}),
    )
    jobs.request_backup(ctx, P1, incremental=True)
    assert _finish_backup(ctx, "c" * 64, [2, 0], 12, "Full") == "Full"
