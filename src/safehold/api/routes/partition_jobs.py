"""On-demand backup and restore of a partition, and their progress (SF api-version 6.4)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from safehold.api import sf_render
from safehold.api.deps import (
    ApiVersionDep,
    CtxDep,
    JsonBody,
    OperatorDep,
    ReaderDep,
    parse_filter_time,
)
from safehold.core.policy import PolicyError
from safehold.service import jobs
from safehold.service.errors import BackupNotFound, PartitionMismatch

router = APIRouter(prefix="/Partitions/{partition_id}", tags=["PartitionBackupRestore"])


@router.post("/$/Backup", status_code=202)
def backup_partition(
    ctx: CtxDep,
    _v: ApiVersionDep,
    _p: OperatorDep,
    partition_id: str,
    body: JsonBody,
    backup_timeout: Annotated[int, Query(alias="BackupTimeout")] = 10,
    backup_type: Annotated[str, Query(alias="BackupType")] = "Full",
) -> Response:
    """
    Accept a backup; the storage is BackupStorage in the body or the policy's.

    It is full, as in SF, unless ``BackupType=Incremental`` (ours), which continues
    the partition's chain as a scheduled backup would.
    """
    if backup_type not in ("Full", "Incremental"):
        raise PolicyError(f"BackupType must be Full or Incremental, not {backup_type!r}")
    storage = None
    if body is not None:
        if not isinstance(body, dict):
            raise PolicyError("the body, when given, must be an object with BackupStorage")
        storage = body.get("BackupStorage")
    jobs.request_backup(
        ctx,
        partition_id,
        storage_doc=storage,
        timeout_minutes=backup_timeout,
        incremental=backup_type == "Incremental",
    )
    return Response(status_code=202)


@router.get("/$/GetBackupProgress")
def get_partition_backup_progress(
    ctx: CtxDep, _v: ApiVersionDep, _p: ReaderDep, partition_id: str
) -> dict[str, Any]:
    """
    Return the latest on-demand backup's BackupProgressInfo (empty before any).

    As in SF, periodic backups do not show here; their outcomes show in the
    partition's health and in GetBackups.
    """
    job = jobs.latest_job(ctx, partition_id, ["backup"], scheduled=False)
    return sf_render.backup_progress(job)


@router.post("/$/Restore", status_code=202)
def restore_partition(
    ctx: CtxDep,
    _v: ApiVersionDep,
    _p: OperatorDep,
    partition_id: str,
    body: JsonBody,
    restore_timeout: Annotated[int, Query(alias="RestoreTimeout")] = 10,
    latest: Annotated[bool, Query(alias="Latest")] = False,
    restore_point: Annotated[str | None, Query(alias="RestorePointTime")] = None,
    allow_other: Annotated[bool, Query(alias="AllowRestoreToOtherPartition")] = False,
) -> Response:
    """
    Accept a restore: BackupId + BackupLocation, or Latest, or RestorePointTime.

    Restoring another partition's backup needs ``AllowRestoreToOtherPartition=true``.
    """
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise PolicyError("the body must be an object with BackupId and BackupLocation")
    try:
        jobs.request_restore(
            ctx,
            partition_id,
            body,
            timeout_minutes=restore_timeout,
            latest=latest,
            at_or_before=parse_filter_time(restore_point, "RestorePointTime"),
            allow_other_partition=allow_other,
        )
    except BackupNotFound as exc:
        if not body.get("BackupId"):
            raise
        # SF reads the metadata at BackupLocation and compares its BackupId
        # (RestorePartitionRequestOperation): an unknown id is 400, not 404.
        raise PartitionMismatch("BackupId and Backup Locations are mismatch.") from exc
    return Response(status_code=202)


@router.get("/$/GetRestoreProgress")
def get_partition_restore_progress(
    ctx: CtxDep, _v: ApiVersionDep, _p: ReaderDep, partition_id: str
) -> dict[str, Any]:
    """Return the latest restore's RestoreProgressInfo."""
    return sf_render.restore_progress(jobs.latest_job(ctx, partition_id, ["restore"]))


@router.post("/$/ReportDataLoss", status_code=202)
def report_data_loss(ctx: CtxDep, _p: OperatorDep, partition_id: str) -> Response:
    """safehold's own: the partition lost its data; auto-restore it if its policy says so."""
    jobs.report_data_loss(ctx, partition_id)
    return Response(status_code=202)
