"""
SF's Faults API for fire drills: induce data loss in a partition and follow it.

``StartDataLoss`` answers 202 Accepted at once; the partition's own agent (a
``StateStore``) does the damage and the recovery, and ``GetDataLossProgress``
reports SF's ``PartitionDataLossProgress`` until it is Completed or Faulted.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from safehold.api.deps import ApiVersionDep, CtxDep, OperatorDep, ReaderDep
from safehold.service import faults

router = APIRouter(
    prefix="/Faults/Services/{service_id}/$/GetPartitions/{partition_id}", tags=["Faults"]
)

OperationQ = Annotated[str | None, Query(alias="OperationId")]


@router.post("/$/StartDataLoss", status_code=202)
def start_data_loss(
    ctx: CtxDep,
    _v: ApiVersionDep,
    _p: OperatorDep,
    service_id: str,
    partition_id: str,
    operation_id: OperationQ = None,
    mode: Annotated[str | None, Query(alias="DataLossMode")] = None,
) -> Response:
    """Accept an induced data loss (PartialDataLoss or FullDataLoss) under OperationId."""
    faults.start_data_loss(ctx, service_id, partition_id, operation_id, mode or "")
    return Response(status_code=202)


@router.get("/$/GetDataLossProgress")
def get_data_loss_progress(
    ctx: CtxDep,
    _v: ApiVersionDep,
    _p: ReaderDep,
    service_id: str,
    partition_id: str,
    operation_id: OperationQ = None,
) -> dict[str, Any]:
    """Return the operation's PartitionDataLossProgress."""
    return faults.data_loss_progress(ctx, service_id, partition_id, operation_id)
