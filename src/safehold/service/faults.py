"""
Induced data loss for fire drills: SF's ``StartDataLoss`` and ``GetDataLossProgress``.

A request becomes a ``dataloss`` job whose id is the caller's OperationId, so
the progress call finds it with no index of its own. Only a partition whose
source is ``state:AGENT`` can take one: its agent is the store itself, which
damages its files for real, runs its data-loss hook (or the auto-restore) and
reports the epoch and LSN it ends in. The ordinary agents back up directories and
commands, which have no store to damage, so they are refused up front.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from safehold.core.errors import ConflictError, NotFoundError
from safehold.core.policy import PolicyError, name_from_id
from safehold.service.context import ServiceContext
from safehold.service.errors import EntityNotFound
from safehold.service.model import JobRecord
from safehold.service.protection import effective_for, get_partition, load_policy
from safehold.service.uow import UnitOfWork

__all__ = [
    "DATA_LOSS_MODES",
    "OperationExists",
    "OperationNotFound",
    "data_loss_progress",
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
}


class OperationExists(ConflictError):
    """Another test command used this OperationId already."""

    code = "FABRIC_E_TEST_COMMAND_OPERATION_ID_ALREADY_EXISTS"


class OperationNotFound(NotFoundError):
    """No data-loss operation of this partition has this OperationId."""

    code = "FABRIC_E_TEST_COMMAND_OPERATION_ID_NOT_FOUND"


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
    from safehold.service.jobs import refuse_if_busy

    op = _operation_id(operation_id)
    if mode not in DATA_LOSS_MODES:
        raise PolicyError(f"DataLossMode must be one of {', '.join(DATA_LOSS_MODES)}, not {mode!r}")
    with ctx.job_lock, ctx.uow() as uow:
        p = get_partition(uow, partition_id)
        _check_service(service_id, p.service)
        if not p.source.startswith(STATE_SOURCE):
            raise PolicyError(
                f"partition {p.partition_id} has source {p.source.split(':', 1)[0]}:, which "
                "cannot lose data on purpose: only a state: partition (a StateStore) can"
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
