"""
Backup, restore and clean jobs: requested by users and the scheduler, run by agents.

The controller only decides and records: a request becomes an ``Accepted`` job;
an agent claims it (``BackupInProgress`` / ``RestoreInProgress``), reports
progress and heartbeats, and completes it. ``sweep`` ends jobs whose deadline
passed (``Timeout``) or whose agent went silent (``Failure``), and
``recover_after_restart`` ends the jobs a dead controller left running.
One backup or restore runs per partition at a time.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from safehold.core.policy import BackupPolicy, EntityRef, PolicyError, StorageSpec, parse_storage
from safehold.core.snapshot import Epoch, format_time, parse_time
from safehold.service.context import ServiceContext
from safehold.service.errors import (
    BackupInProgress,
    BackupNotEnabled,
    BackupNotFound,
    JobNotRunning,
    PartitionMismatch,
    RestoreInProgress,
)
from safehold.service.model import (
    ZERO_ID,
    ZERO_TIME,
    BackupRecord,
    JobRecord,
    PartitionRecord,
    backup_id_for,
    backup_location,
)
from safehold.service.protection import effective_for, get_partition, load_policy
from safehold.service.storages import (
    ensure_repository,
    foreign_repository_is_bad_input,
    storage_key,
)
from safehold.service.uow import UnitOfWork

__all__ = [
    "backup_progress",
    "claim",
    "complete",
    "recover_after_restart",
    "request_backup",
    "request_restore",
    "restore_progress",
    "sweep",
]

RUNNING = {
    "backup": "BackupInProgress",
    "restore": "RestoreInProgress",
    "clean": "InProgress",
    "dataloss": "InProgress",
}
MAX_TIMEOUT_MINUTES = 7 * 24 * 60


def _check_timeout(minutes: int, name: str) -> timedelta:
    if not 1 <= minutes <= MAX_TIMEOUT_MINUTES:
        raise PolicyError(
            f"{name} must be between 1 and {MAX_TIMEOUT_MINUTES} minutes, not {minutes}"
        )
    return timedelta(minutes=minutes)


def _effective_policy(
    ctx: ServiceContext, uow: UnitOfWork, p: PartitionRecord
) -> BackupPolicy | None:
    eff = effective_for(uow, EntityRef("Partition", p.partition_id))
    return None if eff.policy_name is None else load_policy(ctx, uow, eff.policy_name)


def refuse_if_busy(uow: UnitOfWork, partition_id: str) -> None:
    """Raise if the partition has a job accepted or running (one at a time)."""
    for job in uow.jobs.active(partition_id):
        if job.kind in ("restore", "dataloss"):
            what = "a restore" if job.kind == "restore" else "an induced data loss"
            raise RestoreInProgress(f"{what} of partition {partition_id} is already {job.state}")
        raise BackupInProgress(f"a backup of partition {partition_id} is already {job.state}")


def _next_in_chain(
    uow: UnitOfWork, p: PartitionRecord, storage: StorageSpec, max_incremental: int
) -> tuple[str, BackupRecord | None]:
    """Return ("Full", None) or ("Incremental", parent) for the next periodic backup."""
    key = storage_key(storage)
    mine = [
        b for b in uow.backups.list(partition_id=p.partition_id) if storage_key(b.storage) == key
    ]
    if not mine or mine[-1].epoch != p.epoch:
        return "Full", None
    last = mine[-1]
    in_chain = sum(1 for b in mine if b.chain_id == last.chain_id)
    if in_chain > max_incremental:
        return "Full", None
    return "Incremental", last


def request_backup(
    ctx: ServiceContext,
    partition_id: str,
    *,
    storage_doc: object | None = None,
    timeout_minutes: int = 10,
    scheduled: bool = False,
    incremental: bool = False,
) -> JobRecord:
    """
    Accept a backup of one partition.

    The storage is *storage_doc* or the effective policy's. On-demand backups are
    full unless *incremental* (safehold's own ``BackupType=Incremental``); those
    and scheduled ones continue the chain until MaxIncrementalBackups.

    Raises:
        EntityNotFound, BackupNotEnabled, BackupInProgress, RestoreInProgress, PolicyError.
    """
    timeout = _check_timeout(timeout_minutes, "BackupTimeout")
    explicit = parse_storage(storage_doc, "BackupStorage") if storage_doc is not None else None
    with ctx.job_lock, ctx.uow() as uow:
        p = get_partition(uow, partition_id)
        uow.lock_partition(p.partition_id)
        policy = _effective_policy(ctx, uow, p)
        storage = explicit or (policy.storage if policy else None)
        if storage is None:
            raise BackupNotEnabled(
                f"partition {p.partition_id} has no backup policy: enable one or give BackupStorage"
            )
        refuse_if_busy(uow, p.partition_id)
        ensure_repository(ctx, storage)
        kind, parent = "Full", None
        if (scheduled or incremental) and policy is not None:
            kind, parent = _next_in_chain(uow, p, storage, policy.max_incremental_backups)
        retention = None
        if (
            policy is not None
            and policy.retention
            and storage_key(storage) == storage_key(policy.storage)
        ):
            retention = {
                "hours": int(policy.retention.duration.total_seconds() // 3600),
                "minimum": policy.retention.minimum,
            }
        now = ctx.clock()
        job = JobRecord(
            id=str(uuid.uuid4()),
            partition_id=p.partition_id,
            kind="backup",
            state="Accepted",
            scheduled=scheduled,
            created_at=now,
            deadline=now + timeout,
            params={
                "storage": ctx.secrets.seal_storage(storage.to_json()),
                "backup_type": kind,
                "parent_snapshot": parent.snapshot_id if parent else None,
                "parent_id": parent.backup_id if parent else None,
                "chain_id": parent.chain_id if parent else None,
                "chain_snapshot": uuid.UUID(parent.chain_id).hex if parent else None,
                "epoch": [p.epoch.data_loss_number, p.epoch.configuration_number],
                "lsn": p.lsn + 1,
                "retention": retention,
            },
        )
        uow.jobs.save(job)
        uow.commit()
    return job


def _find_in_storage(ctx: ServiceContext, storage: StorageSpec, backup_id: str) -> BackupRecord:
    """Read one backup's metadata straight from a storage (no catalog)."""
    for b in backups_in_storage(ctx, storage):
        if b.backup_id == backup_id:
            return b
    raise BackupNotFound(f"backup {backup_id} is not in the given storage")


def request_restore(
    ctx: ServiceContext,
    partition_id: str,
    body: dict[str, Any],
    *,
    timeout_minutes: int = 10,
    latest: bool = False,
    at_or_before: datetime | None = None,
    allow_other_partition: bool = False,
) -> JobRecord:
    """
    Accept a restore into one partition.

    The backup is named by ``BackupId`` + ``BackupLocation`` (checked against each
    other), or chosen as the latest one, or the newest at or before a time, of
    the partition ``SourcePartitionId`` (default: the target itself). Restoring
    another partition's backup needs *allow_other_partition*.

    Raises:
        EntityNotFound, BackupNotFound, PartitionMismatch, BackupInProgress,
        RestoreInProgress, PolicyError.
    """
    timeout = _check_timeout(timeout_minutes, "RestoreTimeout")
    explicit = (
        parse_storage(body["BackupStorage"], "BackupStorage") if body.get("BackupStorage") else None
    )
    with ctx.job_lock, ctx.uow() as uow:
        p = get_partition(uow, partition_id)
        uow.lock_partition(p.partition_id)
        backup = _choose_backup(
            ctx, uow, p, body, explicit, latest=latest, at_or_before=at_or_before
        )
        if backup.partition_id != p.partition_id and not allow_other_partition:
            raise PartitionMismatch(
                f"backup {backup.backup_id} belongs to partition {backup.partition_id}, not "
                f"{p.partition_id}; pass AllowRestoreToOtherPartition=true to restore it here"
            )
        refuse_if_busy(uow, p.partition_id)
        storage_doc = ctx.secrets.seal_storage(explicit.to_json()) if explicit else backup.storage
        now = ctx.clock()
        job = JobRecord(
            id=str(uuid.uuid4()),
            partition_id=p.partition_id,
            kind="restore",
            state="Accepted",
            scheduled=False,
            created_at=now,
            deadline=now + timeout,
            params={
                "storage": storage_doc,
                "snapshot_id": backup.snapshot_id,
                "backup_id": backup.backup_id,
                "epoch": [backup.epoch.data_loss_number, backup.epoch.configuration_number],
                "lsn": backup.lsn,
            },
        )
        uow.jobs.save(job)
        uow.commit()
    return job


def _choose_backup(
    ctx: ServiceContext,
    uow: UnitOfWork,
    p: PartitionRecord,
    body: dict[str, Any],
    explicit: StorageSpec | None,
    *,
    latest: bool,
    at_or_before: datetime | None,
) -> BackupRecord:
    backup_id = body.get("BackupId")
    if backup_id:
        try:
            backup_id = str(uuid.UUID(str(backup_id)))
        except ValueError as exc:
            raise PolicyError(f"BackupId {backup_id!r} is not a GUID") from exc
        location = body.get("BackupLocation")
        if not isinstance(location, str) or not location:
            raise PolicyError("BackupLocation is required with BackupId")
        found = uow.backups.get(backup_id)
        if found is None:
            storage = explicit
            if storage is None:
                policy = _effective_policy(ctx, uow, p)
                if policy is None:
                    raise BackupNotFound(
                        f"backup {backup_id} is not in the catalog; give BackupStorage to find it"
                    )
                storage = policy.storage
            found = _find_in_storage(ctx, storage, backup_id)
        if found.location.replace("\\", "/") != location.replace("\\", "/"):
            raise PartitionMismatch("BackupId and Backup Locations are mismatch.")
        return found
    if not latest and at_or_before is None:
        raise PolicyError("give BackupId and BackupLocation, or Latest=true, or RestorePointTime")
    source = str(body.get("SourcePartitionId") or p.partition_id)
    src = get_partition(uow, source) if source != p.partition_id else p
    if explicit is not None:
        candidates = [
            b for b in backups_in_storage(ctx, explicit) if b.partition_id == src.partition_id
        ]
    else:
        candidates = uow.backups.list(partition_id=src.partition_id, end=at_or_before)
    if at_or_before is not None:
        candidates = [b for b in candidates if b.created_at <= at_or_before]
    if not candidates:
        raise BackupNotFound(f"partition {src.partition_id} has no backup to restore from")
    return candidates[-1]


def _zero_backup_fields() -> dict[str, Any]:
    return {
        "BackupId": ZERO_ID,
        "BackupLocation": "",
        "EpochOfLastBackupRecord": {"DataLossVersion": "0", "ConfigurationVersion": "0"},
        "LsnOfLastBackupRecord": "0",
        "FailureError": None,
    }


def _error(job: JobRecord) -> dict[str, str] | None:
    if job.failure_code is None:
        return None
    return {"Code": job.failure_code, "Message": job.failure_message or ""}


def backup_progress(ctx: ServiceContext, partition_id: str) -> dict[str, Any]:
    """Return ``BackupProgressInfo`` for the partition's latest backup job."""
    with ctx.uow() as uow:
        p = get_partition(uow, partition_id)
        job = uow.jobs.latest(p.partition_id, ["backup"])
    if job is None:
        raise BackupNotFound(f"partition {p.partition_id} has no backup yet")
    doc: dict[str, Any] = {"BackupState": job.state, **_zero_backup_fields()}
    doc["TimeStampUtc"] = format_time(job.finished_at or job.started_at or job.created_at)
    if job.state == "Success" and job.result:
        doc.update(
            BackupId=job.result["BackupId"],
            BackupLocation=job.result["BackupLocation"],
            EpochOfLastBackupRecord=_epoch_json(Epoch(*job.params["epoch"])),
            LsnOfLastBackupRecord=str(job.params["lsn"]),
        )
    doc["FailureError"] = _error(job)
    doc["Progress"] = job.progress
    doc["AgentId"] = job.agent_id
    return doc


def restore_progress(ctx: ServiceContext, partition_id: str) -> dict[str, Any]:
    """Return ``RestoreProgressInfo`` for the partition's latest restore job."""
    with ctx.uow() as uow:
        p = get_partition(uow, partition_id)
        job = uow.jobs.latest(p.partition_id, ["restore"])
    if job is None:
        raise BackupNotFound(f"partition {p.partition_id} has no restore yet")
    success = job.state == "Success"
    return {
        "RestoreState": job.state,
        "TimeStampUtc": format_time(job.finished_at or job.started_at or job.created_at),
        "RestoredEpoch": _epoch_json(Epoch(*job.params["epoch"]) if success else Epoch(0, 0)),
        "RestoredLsn": str(job.params["lsn"] if success else 0),
        "FailureError": _error(job),
        "Progress": job.progress,
        "AgentId": job.agent_id,
    }


def _epoch_json(e: Epoch) -> dict[str, str]:
    return {
        "DataLossVersion": str(e.data_loss_number),
        "ConfigurationVersion": str(e.configuration_number),
    }


# --- Agents ------------------------------------------------------------------------


def claim(ctx: ServiceContext, agent_id: str) -> dict[str, Any] | None:
    """
    Give *agent_id* the oldest accepted job it may run, or ``None``.

    The returned work item holds what the agent needs, the storage's secrets
    included (agents talk to the controller over authenticated HTTP(S)).
    """
    with ctx.job_lock, ctx.uow() as uow:
        now = ctx.clock()
        uow.agents.seen(agent_id, now)
        active = uow.jobs.active()
        running = sum(1 for j in active if j.state != "Accepted")
        if running >= ctx.max_running_jobs:
            uow.commit()
            return None
        busy = {j.partition_id for j in active if j.state != "Accepted"}
        for job in active:
            if job.state != "Accepted" or job.partition_id in busy:
                continue
            p = uow.partitions.get(job.partition_id)
            if p is None or (p.agent is not None and p.agent != agent_id):
                continue
            job.state = RUNNING[job.kind]
            job.agent_id = agent_id
            job.started_at = job.heartbeat_at = now
            uow.jobs.save(job)
            uow.commit()
            return _work_item(ctx, job, p)
        uow.commit()
    return None


def _work_item(ctx: ServiceContext, job: JobRecord, p: PartitionRecord) -> dict[str, Any]:
    return {
        "JobId": job.id,
        "Kind": job.kind,
        "Deadline": format_time(job.deadline),
        "Partition": {
            "PartitionId": p.partition_id,
            "ApplicationName": p.application,
            "ServiceName": p.service,
            "Source": p.source,
            "RestoreTo": p.restore_to,
        },
        "Storage": (
            None
            if job.params["storage"] is None
            else ctx.secrets.open_storage(job.params["storage"])
        ),
        "Params": {k: v for k, v in job.params.items() if k != "storage"},
    }


def _running_job(uow: UnitOfWork, agent_id: str, job_id: str) -> JobRecord:
    job = uow.jobs.get(job_id)
    if job is None or job.agent_id != agent_id or not job.active or job.state == "Accepted":
        raise JobNotRunning(f"job {job_id} is not running on agent {agent_id}")
    return job


def heartbeat(
    ctx: ServiceContext, agent_id: str, job_id: str | None, progress: dict[str, Any]
) -> None:
    """Record that *agent_id* is alive, with progress of its job."""
    with ctx.uow() as uow:
        now = ctx.clock()
        uow.agents.seen(agent_id, now)
        if job_id is not None:
            job = _running_job(uow, agent_id, job_id)
            job.heartbeat_at = now
            job.progress = {k: v for k, v in progress.items() if isinstance(v, int | str | None)}
            uow.jobs.save(job)
        uow.commit()


def complete(ctx: ServiceContext, agent_id: str, job_id: str, outcome: dict[str, Any]) -> JobRecord:
    """
    Record the end of a job as its agent reports it.

    *outcome* is ``{"State": "Success", ...}`` with ``Snapshot`` (backups) and
    ``Removed`` (snapshot ids retention deleted), or ``{"State": "Failure",
    "Error": {"Code", "Message"}}``.
    """
    if outcome.get("State") == "Success":
        snap = outcome.get("Snapshot")
        valid = isinstance(snap, dict) and all(isinstance(snap.get(k), str) for k in ("Id", "Time"))
        if snap is not None and not valid:
            raise PolicyError("Snapshot needs Id and Time")
    with ctx.uow() as uow:
        job = _running_job(uow, agent_id, job_id)
        if (
            job.kind == "backup"
            and outcome.get("State") == "Success"
            and not outcome.get("Snapshot")
        ):
            raise PolicyError("a successful backup must report its Snapshot")
        now = ctx.clock()
        job.finished_at = now
        p = uow.partitions.get(job.partition_id)
        if outcome.get("State") == "Success" and p is not None:
            job.state = "Success"
            reported = _reported(p, outcome)
            if reported is not None and job.kind == "backup":
                # A state: partition's agent is the store: its epoch and LSN are the truth.
                job.params = {**job.params, **reported}
            if job.kind == "backup":
                job.result = _record_backup(uow, job, p, outcome)
            elif job.kind == "restore" and reported is None:
                # A restore is a data loss: the partition enters a new epoch.
                p.epoch = Epoch(p.epoch.data_loss_number + 1, p.epoch.configuration_number)
            elif job.kind == "dataloss":
                res = outcome.get("Result")
                job.result = dict(res) if isinstance(res, dict) else {}
            elif job.kind == "clean":
                uow.backups.delete(
                    b.backup_id for b in uow.backups.list(partition_id=p.partition_id)
                )
            if reported is not None:
                p.epoch, p.lsn = Epoch(*reported["epoch"]), reported["lsn"]
            uow.partitions.save(p)
        else:
            err = outcome.get("Error") or {}
            job.state = "Failure"
            job.failure_code = str(err.get("Code") or "FABRIC_E_BACKUPCOPIER_UNEXPECTED_ERROR")
            job.failure_message = str(err.get("Message") or "the agent reported a failure")
        uow.jobs.save(job)
        uow.commit()
        return job


def _reported(p: PartitionRecord, outcome: dict[str, Any]) -> dict[str, Any] | None:
    """
    The epoch, LSN and chain a ``state:`` partition's agent reported, as job params.

    Other partitions get theirs from the controller, so this is None for them.

    Raises:
        PolicyError: a state: partition's outcome lacks a valid Epoch or Lsn.
    """
    if not p.source.startswith("state:"):
        return None
    epoch, lsn = outcome.get("Epoch"), outcome.get("Lsn")
    if (
        not isinstance(epoch, list)
        or len(epoch) != 2
        or not all(isinstance(n, int) and n >= 0 for n in epoch)
        or not isinstance(lsn, int)
        or lsn < 0
    ):
        raise PolicyError("a state: partition's agent must report Epoch [dl, cfg] and Lsn")
    out: dict[str, Any] = {"epoch": list(epoch), "lsn": lsn}
    if outcome.get("BackupType") in ("Full", "Incremental"):
        out["backup_type"] = outcome["BackupType"]
        parent = outcome.get("ParentSnapshot")
        incremental = out["backup_type"] == "Incremental"
        out["parent_id"] = (
            backup_id_for(parent) if incremental and isinstance(parent, str) else None
        )
        out["chain_id"] = None  # the parent's, found when the backup is recorded
    return out


def _chain_of_parent(uow: UnitOfWork, parent_id: str | None) -> str | None:
    parent = uow.backups.get(parent_id) if parent_id else None
    return parent.chain_id if parent else None


def _record_backup(
    uow: UnitOfWork, job: JobRecord, p: PartitionRecord, outcome: dict[str, Any]
) -> dict[str, Any]:
    snap = outcome["Snapshot"]
    params = job.params
    backup_id = backup_id_for(snap["Id"])
    created = parse_time(snap["Time"])
    location = backup_location(p.application, p.service, p.partition_id, created)
    rec = BackupRecord(
        backup_id=backup_id,
        snapshot_id=snap["Id"],
        partition_id=p.partition_id,
        application=p.application,
        service=p.service,
        backup_type=params["backup_type"],
        chain_id=params["chain_id"] or _chain_of_parent(uow, params["parent_id"]) or backup_id,
        parent_id=params["parent_id"],
        location=location,
        epoch=Epoch(*params["epoch"]),
        lsn=params["lsn"],
        created_at=created,
        size_bytes=int(snap.get("Size", 0)),
        storage=params["storage"],
    )
    uow.backups.add(rec)
    removed = set(outcome.get("Removed") or ())
    if removed:
        uow.backups.delete(
            b.backup_id
            for b in uow.backups.list(partition_id=p.partition_id)
            if b.snapshot_id in removed
        )
    p.lsn = max(p.lsn, params["lsn"])
    uow.partitions.save(p)
    return {"BackupId": backup_id, "BackupLocation": location, "Size": rec.size_bytes}


def request_clean(ctx: ServiceContext, partition_ids: list[str], storage: StorageSpec) -> list[str]:
    """Accept jobs that delete every backup of *partition_ids* from *storage* (CleanBackup)."""
    out = []
    with ctx.job_lock, ctx.uow() as uow:
        now = ctx.clock()
        for pid in partition_ids:
            job = JobRecord(
                id=str(uuid.uuid4()),
                partition_id=pid,
                kind="clean",
                state="Accepted",
                scheduled=False,
                created_at=now,
                deadline=now + timedelta(minutes=60),
                params={
                    "storage": ctx.secrets.seal_storage(storage.to_json()),
                    "epoch": [0, 0],
                    "lsn": 0,
                },
            )
            uow.jobs.save(job)
            out.append(job.id)
        uow.commit()
    return out


def disable_backup_and_clean(ctx: ServiceContext, entity: EntityRef, *, clean: bool) -> list[str]:
    """DisableBackup: remove the mapping and, with CleanBackup, accept jobs deleting the backups."""
    from safehold.service.protection import disable_backup

    pids, storage = disable_backup(ctx, entity, clean=clean)
    return request_clean(ctx, pids, storage) if storage is not None else []


def sweep(ctx: ServiceContext) -> list[JobRecord]:
    """End the jobs past their deadline (Timeout) and those whose agent went silent (Failure)."""
    ended = []
    with ctx.job_lock, ctx.uow() as uow:
        now = ctx.clock()
        agents = uow.agents.all()
        for job in uow.jobs.active():
            if now > job.deadline:
                job.state, job.failure_code = "Timeout", "FABRIC_E_TIMEOUT"
                job.failure_message = (
                    f"the {job.kind} did not finish by its deadline {format_time(job.deadline)}"
                    + (f" (agent {job.agent_id})" if job.agent_id else " (no agent took it)")
                )
            elif job.agent_id is not None:
                seen = max(agents.get(job.agent_id, ZERO_TIME), job.heartbeat_at or ZERO_TIME)
                if now - seen <= ctx.agent_timeout:
                    continue
                job.state, job.failure_code = "Failure", "SAFEHOLD_E_AGENT_LOST"
                job.failure_message = (
                    f"agent {job.agent_id} disappeared: no heartbeat since {format_time(seen)}"
                )
            else:
                continue
            job.finished_at = now
            uow.jobs.save(job)
            ended.append(job)
        uow.commit()
    return ended


def recover_after_restart(ctx: ServiceContext) -> list[JobRecord]:
    """End every job that was accepted or running when the controller stopped."""
    ended = []
    with ctx.job_lock, ctx.uow() as uow:
        now = ctx.clock()
        for job in uow.jobs.active():
            was = job.state
            job.state = "Failure"
            job.failure_code = "SAFEHOLD_E_CONTROLLER_RESTARTED"
            job.failure_message = (
                f"the controller restarted while this {job.kind} was {was}; "
                "its outcome is unknown and it was not recorded: run it again"
            )
            job.finished_at = now
            uow.jobs.save(job)
            ended.append(job)
        uow.commit()
    return ended


# --- Listing backups ---------------------------------------------------------------


def backup_info(b: BackupRecord) -> dict[str, Any]:
    """Return the API's ``BackupInfo`` for a backup."""
    return {
        "BackupId": b.backup_id,
        "BackupChainId": b.chain_id,
        "ApplicationName": b.application,
        "ServiceName": b.service,
        "PartitionInformation": {"ServicePartitionKind": "Singleton", "Id": b.partition_id},
        "BackupLocation": b.location,
        "BackupType": b.backup_type,
        "EpochOfLastBackupRecord": _epoch_json(b.epoch),
        "LsnOfLastBackupRecord": str(b.lsn),
        "CreationTimeUtc": format_time(b.created_at),
        "ServiceManifestVersion": "",
        "FailureError": None,
    }


def _entity_filter(entity: EntityRef) -> dict[str, str]:
    return {
        "Application": {"application": entity.key},
        "Service": {"service": entity.key},
        "Partition": {"partition_id": entity.key},
    }[entity.kind]


def latest_per_partition(items: list[BackupRecord]) -> list[BackupRecord]:
    """Keep only each partition's newest backup."""
    newest: dict[str, BackupRecord] = {}
    for b in items:
        newest[b.partition_id] = b
    return sorted(newest.values(), key=lambda b: (b.created_at, b.backup_id))


def list_backups(
    ctx: ServiceContext,
    entity: EntityRef,
    *,
    start: datetime | None,
    end: datetime | None,
    latest: bool,
) -> list[BackupRecord]:
    """Return an entity's backups from the catalog, oldest first."""
    if start and end and start > end:
        raise PolicyError("StartDateTimeFilter must not be later than EndDateTimeFilter")
    with ctx.uow() as uow:
        from safehold.service.protection import chain_of

        chain = chain_of(uow, entity)
        items = uow.backups.list(start=start, end=end, **_entity_filter(chain[-1]))
    return latest_per_partition(items) if latest else items


def backups_in_storage(ctx: ServiceContext, storage: StorageSpec) -> list[BackupRecord]:
    """Read every backup's metadata straight from a storage, with no catalog."""
    store = ctx.open_storage(storage)
    try:
        with foreign_repository_is_bad_input(ctx, storage):
            snaps = ctx.engine.snapshots(store)
    finally:
        store.close()
    sealed = ctx.secrets.seal_storage(storage.to_json())
    out = []
    for s in snaps:
        part = s.partition
        if part is None or not part.partition_id or not part.application or not part.service:
            continue
        bid = backup_id_for(s.id)
        chain = s.chain_id
        out.append(
            BackupRecord(
                backup_id=bid,
                snapshot_id=s.id,
                partition_id=part.partition_id,
                application=part.application,
                service=part.service,
                backup_type="Incremental" if s.backup_type == "incremental" else "Full",
                chain_id=backup_id_for(chain) if chain else bid,
                parent_id=backup_id_for(s.parent)
                if s.parent and s.backup_type == "incremental"
                else None,
                location=backup_location(part.application, part.service, part.partition_id, s.time),
                epoch=s.epoch or Epoch(0, 0),
                lsn=s.lsn or 0,
                created_at=s.time,
                size_bytes=s.sizes.logical,
                storage=sealed,
            )
        )
    return out


def entity_from_json(doc: object) -> EntityRef:
    """Parse a ``BackupEntity``."""
    if not isinstance(doc, dict):
        raise PolicyError("BackupEntity must be an object with an EntityKind")
    kind = doc.get("EntityKind")
    if kind == "Application" and isinstance(doc.get("ApplicationName"), str):
        return EntityRef("Application", doc["ApplicationName"])
    if kind == "Service" and isinstance(doc.get("ServiceName"), str):
        return EntityRef("Service", doc["ServiceName"])
    if kind == "Partition" and isinstance(doc.get("PartitionId"), str):
        return EntityRef("Partition", doc["PartitionId"])
    raise PolicyError(
        "BackupEntity needs EntityKind Application (ApplicationName), Service (ServiceName) "
        "or Partition (PartitionId)"
    )


def storage_backups(
    ctx: ServiceContext,
    storage_doc: object,
    entity: EntityRef,
    *,
    start: datetime | None,
    end: datetime | None,
    latest: bool,
) -> list[BackupRecord]:
    """``POST /BackupRestore/$/GetBackups``: filter a storage's backups by entity and time."""
    storage = parse_storage(storage_doc, "Storage")
    items = backups_in_storage(ctx, storage)
    attr = {"Application": "application", "Service": "service", "Partition": "partition_id"}[
        entity.kind
    ]
    items = [b for b in items if getattr(b, attr) == entity.key]
    if start is not None:
        items = [b for b in items if b.created_at >= start]
    if end is not None:
        items = [b for b in items if b.created_at <= end]
    items.sort(key=lambda b: (b.created_at, b.backup_id))
    return latest_per_partition(items) if latest else items


def report_data_loss(ctx: ServiceContext, partition_id: str) -> JobRecord:
    """
    A partition lost its data: restore its latest backup if its policy says so.

    This stands in for SF's ``OnDataLossAsync``: with ``AutoRestoreOnDataLoss``
    the newest backup is restored at once.

    Raises:
        BackupNotEnabled: no policy applies, or it has AutoRestoreOnDataLoss off.
        BackupNotFound: there is no backup to restore.
    """
    with ctx.uow() as uow:
        p = get_partition(uow, partition_id)
        policy = _effective_policy(ctx, uow, p)
    if policy is None or not policy.auto_restore_on_data_loss:
        raise BackupNotEnabled(
            f"partition {p.partition_id} has no policy with AutoRestoreOnDataLoss: "
            "restore it explicitly"
        )
    return request_restore(ctx, p.partition_id, {}, latest=True)


def list_agents(ctx: ServiceContext) -> list[dict[str, Any]]:
    """Return each known agent, when it was last heard from, and the jobs it runs."""
    with ctx.uow() as uow:
        seen = uow.agents.all()
        running = [j for j in uow.jobs.active() if j.agent_id is not None]
    now = ctx.clock()
    return [
        {
            "AgentId": agent,
            "LastSeenUtc": format_time(last),
            "Alive": now - last <= ctx.agent_timeout,
            "RunningJobs": [
                {"JobId": j.id, "Kind": j.kind, "PartitionId": j.partition_id}
                for j in running
                if j.agent_id == agent
            ],
        }
        for agent, last in sorted(seen.items())
    ]
