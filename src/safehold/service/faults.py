"""
Induced data loss for fire drills: SF's ``StartDataLoss``, ``GetDataLossProgress``,
``GetFaultOperationList`` and ``CancelOperation``.

A request becomes a ``dataloss`` job whose id is the caller's OperationId, so
the progress call finds it with no index of its own. Only a partition whose
source is ``state:AGENT`` can take one: its agent is the store itself, which
damages its files for real, runs its data-loss hook (or the auto-restore) and
reports the epoch and LSN it ends in. The ordinary agents back up directories and
commands, which have no replicas to lose, so they are refused up front with
``DataLossNotApplicable`` (400 ``E_INVALIDARG``, as SF refuses a target it cannot
fault), whose message points to a restore as the drill.

Cancelling follows SF's FAS: ``Force=false`` stops an operation no agent has
taken yet (``Cancelled``); one already running cannot be stopped halfway (the
store loses and recovers its data in one step) and ends as it ends. ``Force=true``
is refused until a ``Force=false`` cancel was asked, as in SF.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

from safehold.core.errors import ConflictError, NotFoundError
from safehold.core.policy import PolicyError, name_from_id
from safehold.service.context import ServiceContext
from safehold.service.entities import effective_for, get_partition
from safehold.service.errors import EntityNotFound
from safehold.service.model import JobRecord
from safehold.service.policies import load_policy
from safehold.service.uow import UnitOfWork

__all__ = [
    "DATA_LOSS_MODES",
    "DataLossNotApplicable",
    "OperationExists",
    "OperationNotFound",
    "cancel_operation",
    "data_loss_progress",
    "list_operations",
    "start_data_loss",
]

DATA_LOSS_MODES = ("PartialDataLoss", "FullDataLoss")
STATE_SOURCE = "state:"
DATA_LOSS_TIMEOUT = timedelta(minutes=10)

# Job states as SF's TestCommandProgressState.
_PROGRESS_STATE = {
    "Accepted": "Running",
    "InProgress": "Running",
    "Success": "Completed",
    "Failure": "Faulted",
    "Timeout": "Faulted",
    "Cancelled": "Cancelled",
    "ForceCancelled": "ForceCancelled",
}
# SF's OperationState flags for GetFaultOperationList's StateFilter, and the
# OperationType flag of PartitionDataLoss for its TypeFilter.
STATE_FLAGS = {
    "Running": 1,
    "RollingBack": 2,
    "Completed": 8,
    "Faulted": 16,
    "Cancelled": 32,
    "ForceCancelled": 64,
}
DATA_LOSS_TYPE_FLAG = 1


class OperationExists(ConflictError):
    """Another test command used this OperationId already."""

    code = "FABRIC_E_TEST_COMMAND_OPERATION_ID_ALREADY_EXISTS"


class OperationNotFound(NotFoundError):
    """No data-loss operation of this partition has this OperationId."""

    code = "FABRIC_E_TEST_COMMAND_OPERATION_ID_NOT_FOUND"


class DataLossNotApplicable(PolicyError):
    """The partition has no replicas whose data could be lost (a dir: or command: source)."""


def _operation_id(value: str | None) -> str:
    if not value:
        raise PolicyError("OperationId is required")
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise PolicyError(f"OperationId {value!r} is not a GUID") from exc


def _check_service(service_id: str, service: str) -> None:
    # The service id in the path must name the partition's service, as in SF,
    # so a drill can never hit a partition of another service by a typo.
    if name_from_id(service_id) != service:
        raise EntityNotFound(
            f"service {name_from_id(service_id)} has no partition of that id",
            "FABRIC_E_SERVICE_NOT_FOUND",
        )


def _job(uow: UnitOfWork, partition_id: str, operation_id: str) -> JobRecord | None:
    job = uow.jobs.get(operation_id)
    if job is None or job.kind != "dataloss" or job.partition_id != partition_id:
        return None
    return job


def start_data_loss(
    ctx: ServiceContext, service_id: str, partition_id: str, operation_id: str | None, mode: str
) -> JobRecord:
    """
    Accept an induced data loss of one partition (``StartDataLoss``).

    The operation is a job of kind ``dataloss`` with id *operation_id*; the
    partition's agent claims it. Its params carry the mode and whether the
    partition's effective policy has AutoRestoreOnDataLoss (with that policy's
    storage, so the agent can restore from it).

    Raises:
        PolicyError: bad OperationId or mode, or a partition whose source is not ``state:``.
        EntityNotFound: unknown partition, or one of another service.
        OperationExists: the OperationId was used before.
        BackupInProgress, RestoreInProgress: another job of the partition is active.
    """
    from safehold.service.jobs.requests import refuse_if_busy

    op = _operation_id(operation_id)
    if mode not in DATA_LOSS_MODES:
        raise PolicyError(f"DataLossMode must be one of {', '.join(DATA_LOSS_MODES)}, not {mode!r}")
    with ctx.uow() as uow:
        p = get_partition(uow, partition_id)
        _check_service(service_id, p.service)
        if not p.source.startswith(STATE_SOURCE):
            raise DataLossNotApplicable(
                f"StartDataLoss cannot apply to partition {p.partition_id}: its source is "
                f"{p.source.split(':', 1)[0]}:, which has no replicas to lose (only a state: "
                "partition, a StateStore, has). To drill a recovery, restore it: "
                f"POST /Partitions/{p.partition_id}/$/Restore"
            )
        uow.lock_partition(p.partition_id)
        if uow.jobs.get(op) is not None:
            raise OperationExists(f"operation {op} exists already")
        refuse_if_busy(uow, p.partition_id)
        eff = effective_for(uow, p.chain()[-1])
        policy = None if eff.policy_name is None else load_policy(ctx, uow, eff.policy_name)
        auto = bool(policy and policy.auto_restore_on_data_loss)
        now = ctx.clock()
        job = JobRecord(
            id=op,
            partition_id=p.partition_id,
            kind="dataloss",
            state="Accepted",
            scheduled=False,
            created_at=now,
            deadline=now + DATA_LOSS_TIMEOUT,
            params={
                "storage": ctx.secrets.seal_storage(policy.storage.to_json()) if policy else None,
                "mode": mode,
                "auto_restore": auto,
                "epoch": [p.epoch.data_loss_number, p.epoch.configuration_number],
                "lsn": p.lsn,
            },
        )
        uow.jobs.save(job)
        uow.commit()
    return job


def data_loss_progress(
    ctx: ServiceContext, service_id: str, partition_id: str, operation_id: str | None
) -> dict[str, Any]:
    """
    Return SF's ``PartitionDataLossProgress`` for one operation.

    Raises:
        PolicyError: bad OperationId.
        EntityNotFound, OperationNotFound.
    """
    op = _operation_id(operation_id)
    with ctx.uow() as uow:
        p = get_partition(uow, partition_id)
        _check_service(service_id, p.service)
        job = _job(uow, p.partition_id, op)
    if job is None:
        raise OperationNotFound(f"partition {p.partition_id} has no data-loss operation {op}")
    state = _PROGRESS_STATE.get(job.state, "Running")
    doc: dict[str, Any] = {
        "State": state,
        "InvokeDataLossResult": {
            "ErrorCode": 0 if state != "Faulted" else 1,
            "SelectedPartition": {"ServiceName": p.service, "PartitionId": p.partition_id},
        },
    }
    if state == "Faulted":
        doc["FailureError"] = {"Code": job.failure_code, "Message": job.failure_message or ""}
    if job.result:
        doc["Result"] = job.result
    return doc


def _operation_status(job: JobRecord) -> dict[str, Any]:
    return {
        "OperationId": job.id,
        "State": _PROGRESS_STATE.get(job.state, "Running"),
        "Type": "PartitionDataLoss",
    }


def list_operations(
    ctx: ServiceContext, type_filter: int, state_filter: int
) -> list[dict[str, Any]]:
    """
    Return SF's ``OperationStatus`` list (``GetFaultOperationList``) for data-loss operations.

    Each ``state:`` partition's latest data-loss operation is listed (one runs at a
    time, so every running one is among them); older ones are not kept apart.
    *type_filter* and *state_filter* are SF's flag sets (65535: all).

    Raises:
        PolicyError: a filter outside 1..65535.
    """
    for name, value in (("TypeFilter", type_filter), ("StateFilter", state_filter)):
        if not 1 <= value <= 0xFFFF:
            raise PolicyError(f"{name} must be a set of flags between 1 and 65535, not {value}")
    if not type_filter & DATA_LOSS_TYPE_FLAG:
        return []
    out = []
    with ctx.uow() as uow:
        for p in uow.partitions.list():
            if not p.source.startswith(STATE_SOURCE):
                continue
            job = uow.jobs.latest(p.partition_id, ["dataloss"])
            if job is not None:
                status = _operation_status(job)
                if STATE_FLAGS.get(status["State"], 0) & state_filter:
                    out.append(status)
    return out


def cancel_operation(ctx: ServiceContext, operation_id: str | None, *, force: bool) -> None:
    """
    Cancel a data-loss operation (``CancelOperation``), as far as SF's rules and ours allow.

    Raises:
        PolicyError: bad OperationId, or Force=true before any Force=false cancel.
        OperationNotFound: no data-loss operation has this id.
    """
    op = _operation_id(operation_id)
    with ctx.uow() as uow:
        job = uow.jobs.get(op)
        if job is None or job.kind != "dataloss":
            raise OperationNotFound(f"there is no fault operation {op}")
        uow.lock_partition(job.partition_id)
        if not job.active:
            return  # finished or cancelled already: nothing left to stop
        asked = bool(job.params.get("cancel_requested"))
        if force and not asked:
            raise PolicyError(
                "CancelOperation with Force=true needs a CancelOperation with Force=false first"
            )
        now = ctx.clock()
        if job.state == "Accepted":
            cancelled = replace(
                job,
                state="ForceCancelled" if force else "Cancelled",
                finished_at=now,
                failure_code="FABRIC_E_TEST_COMMAND_OPERATION_CANCELLED",
                failure_message="cancelled before any data was lost",
                params={**job.params, "cancel_requested": True},
            )
            if uow.jobs.update_if(cancelled, states=["Accepted"], attempt=job.attempt):
                uow.commit()
                return
        # Running: the store's data loss and recovery cannot be stopped halfway.
        marked = replace(job, params={**job.params, "cancel_requested": True})
        if uow.jobs.update_if(marked, states=[job.state], attempt=job.attempt):
            uow.commit()
