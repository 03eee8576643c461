"""
SF's Faults API for fire drills: induce data loss in a partition, follow it, list and cancel.

``StartDataLoss`` answers 202 Accepted at once; the partition's own agent (a
``StateStore``) does the damage and the recovery, and ``GetDataLossProgress``
reports SF's ``PartitionDataLossProgress`` until it is Completed or Faulted.
These are the Fault Analysis Service's routes: Microsoft's SDK and sfctl send
api-version 6.0, which they accept (and anything later).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from safehold.api.deps import CtxDep, FaultsApiVersionDep, OperatorDep, ReaderDep
from safehold.service import faults

router = APIRouter(tags=["Faults"])

PARTITION = "/Faults/Services/{service_id}/$/GetPartitions/{partition_id}"
OperationQ = Annotated[str | None, Query(alias="OperationId")]
ALL_FLAGS = 0xFFFF


@router.post(PARTITION + "/$/StartDataLoss", status_code=202)
def start_data_loss(
    ctx: CtxDep,
    _v: FaultsApiVersionDep,
    _p: OperatorDep,
    service_id: str,
    partition_id: str,
    operation_id: OperationQ = None,
    mode: Annotated[str | None, Query(alias="DataLossMode")] = None,
) -> Response:
    """Accept an induced data loss (PartialDataLoss or FullDataLoss) under OperationId."""
    faults.start_data_loss(ctx, service_id, partition_id, operation_id, mode or "")
    return Response(status_code=202)


@router.get(PARTITION + "/$/GetDataLossProgress")
def get_data_loss_progress(
    ctx: CtxDep,
    _v: FaultsApiVersionDep,
    _p: ReaderDep,
    service_id: str,
    partition_id: str,
    operation_id: OperationQ = None,
) -> dict[str, Any]:
    """Return the operation's PartitionDataLossProgress."""
    return faults.data_loss_progress(ctx, service_id, partition_id, operation_id)


@router.get("/Faults/")
def get_fault_operation_list(
    ctx: CtxDep,
    _v: FaultsApiVersionDep,
    _p: ReaderDep,
    type_filter: Annotated[int, Query(alias="TypeFilter")] = ALL_FLAGS,
    state_filter: Annotated[int, Query(alias="StateFilter")] = ALL_FLAGS,
) -> list[dict[str, Any]]:
    """GetFaultOperationList: the data-loss operations, as SF's OperationStatus list."""
    return faults.list_operations(ctx, type_filter, state_filter)


@router.post("/Faults/$/Cancel")
def cancel_operation(
    ctx: CtxDep,
    _v: FaultsApiVersionDep,
    _p: OperatorDep,
    operation_id: OperationQ = None,
    force: Annotated[bool, Query(alias="Force")] = False,
) -> Response:
    """CancelOperation: stop a data-loss operation no agent has started (200, no body)."""
    faults.cancel_operation(ctx, operation_id, force=force)
    return Response(status_code=200)
