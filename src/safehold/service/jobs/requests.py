"""
Requests for jobs: on-demand backups, restores, clean-ups and data-loss restores.

A request becomes an ``Accepted`` job in one short catalog transaction that
locks the partition's row, so that two controllers cannot both start a job of
the same partition. Whatever touches a storage (creating its repository, or
finding a backup in it) runs before that transaction, never inside it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, NoReturn

from safehold.core.policy import (
    BackupPolicy,
    EntityRef,
    PolicyError,
    StorageSpec,
    check_job_timeout,
    parse_storage,
)
from safehold.core.snapshot import format_time
from safehold.service.context import ServiceContext
from safehold.service.entities import effective_for, get_partition
from safehold.service.errors import (
    BackupInProgress,
    BackupNotEnabled,
    BackupNotFound,
    PartitionMismatch,
    RestoreInProgress,
)
from safehold.service.group_model import GROUP_KINDS, active_jobs
from safehold.service.jobs.listing import backups_in_storage
from safehold.service.model import BackupRecord, JobRecord, PartitionRecord
from safehold.service.policies import load_policy
from safehold.service.storages import ensure_repository, storage_key
from safehold.service.uow import UnitOfWork

#: Sources whose agents restore to an exact instant between backups.
EXACT_PITR_SOURCES = ("state:", "postgres:", "mariadb:")

__all__ = [
    "disable_backup_and_clean",
    "new_backup_job",
    "refuse_if_busy",
    "report_data_loss",
    "request_backup",
    "request_clean",
    "request_restore",
]


def effective_policy(
    ctx: ServiceContext, uow: UnitOfWork, p: PartitionRecord
) -> BackupPolicy | None:
    """The policy that applies to partition *p*, with its secrets open, or None."""
    eff = effective_for(uow, EntityRef("Partition", p.partition_id))
    return None if eff.policy_name is None else load_policy(ctx, uow, eff.policy_name)


def refuse_if_busy(uow: UnitOfWork, partition_id: str) -> None:
    """
    Raise if the partition has a restore, data loss or on-demand backup accepted or running.

    As in SF, a *scheduled* backup does not refuse a request: the request's job
    queues behind it (an agent starts one job of a partition at a time).
    """
    for job in uow.jobs.active(partition_id):
        if job.kind == "backup" and job.scheduled:
            continue
        if job.kind in ("restore", "dataloss"):
            what = "a restore" if job.kind == "restore" else "an induced data loss"
            raise RestoreInProgress(f"{what} of partition {partition_id} is already {job.state}")
        if job.kind in GROUP_KINDS:
            _group_busy(partition_id, job)
        raise BackupInProgress(f"a backup of partition {partition_id} is already {job.state}")
    # A group's job sits on one member (its anchor) but reads or replaces them all.
    group = uow.groups.get(uow.groups.group_of([partition_id]).get(partition_id, ""))
    for job in active_jobs(uow, group) if group is not None else []:
        _group_busy(partition_id, job)


def _group_busy(partition_id: str, job: JobRecord) -> NoReturn:
    group = job.params.get("group")
    what = f"partition {partition_id}'s consistency group {group!r} has a"
    if job.kind == "group-restore":
        raise RestoreInProgress(f"{what} restore {job.state}")
    raise BackupInProgress(f"{what} backup {job.state}")


def chain_window(policy: BackupPolicy | None) -> int:
    """
    How many of a partition's newest backups ``next_in_chain`` needs: a chain one
    longer than the policy allows, so it can tell a full chain (the rest of the
    history plays no part).
    """
    return (policy.max_incremental_backups if policy is not None else 0) + 2


def next_in_chain(
    backups: list[BackupRecord], p: PartitionRecord, storage: StorageSpec, max_incremental: int
) -> tuple[str, BackupRecord | None]:
    """
    Return ("Full", None) or ("Incremental", parent) for the next periodic backup.

    *backups* are the partition's newest backups, oldest first, at least
    ``chain_window`` of them when it has that many.
    """
    key = storage_key(storage)
    mine = [b for b in backups if storage_key(b.storage) == key]
    if not mine or mine[-1].epoch != p.epoch:
        return "Full", None
    last = mine[-1]
    in_chain = sum(1 for b in mine if b.chain_id == last.chain_id)
    if in_chain > max_incremental:
        return "Full", None
    return "Incremental", last


def new_backup_job(
    ctx: ServiceContext,
    p: PartitionRecord,
    storage: StorageSpec,
    policy: BackupPolicy | None,
    backups: list[BackupRecord],
    *,
    now: datetime,
    timeout: timedelta,
    scheduled: bool,
    incremental: bool,
    sealed_storage: dict[str, Any] | None = None,
) -> JobRecord:
    """
    Build (not store) an ``Accepted`` backup job of partition *p*.

    *backups* are the partition's catalogued backups, oldest first; they decide
    whether the backup continues a chain. *sealed_storage* saves sealing the
    same storage again for each job of a batch.
    """
    kind, parent = "Full", None
    if (scheduled or incremental) and policy is not None:
        kind, parent = next_in_chain(backups, p, storage, policy.max_incremental_backups)
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
    return JobRecord(
        id=str(uuid.uuid4()),
        partition_id=p.partition_id,
        kind="backup",
        state="Accepted",
        scheduled=scheduled,
        created_at=now,
        deadline=now + timeout,
        params={
            "storage": sealed_storage or ctx.secrets.seal_storage(storage.to_json()),
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


def request_backup(
    ctx: ServiceContext,
    partition_id: str,
    *,
    storage_doc: object | None = None,
    timeout_minutes: int = 10,
    incremental: bool = False,
) -> JobRecord:
    """
    Accept an on-demand backup of one partition.

    The storage is *storage_doc* or the effective policy's. On-demand backups are
    full unless *incremental* (safehold's own ``BackupType=Incremental``), which
    continues the chain until MaxIncrementalBackups.

    Raises:
        EntityNotFound, BackupNotEnabled, BackupInProgress, RestoreInProgress,
        PolicyError, StorageError (the storage cannot be reached).
    """
    timeout = check_job_timeout(timeout_minutes, "BackupTimeout")
    explicit = parse_storage(storage_doc, "BackupStorage") if storage_doc is not None else None
    with ctx.uow() as uow:
        p = get_partition(uow, partition_id)
        policy = effective_policy(ctx, uow, p)
        refuse_if_busy(uow, p.partition_id)
    storage = explicit or (policy.storage if policy else None)
    if storage is None:
        raise BackupNotEnabled(
            f"partition {p.partition_id} has no backup policy: enable one or give BackupStorage"
        )
    ensure_repository(ctx, storage)  # outside the transaction: it may wait on the storage
    with ctx.uow() as uow:
        uow.lock_partition(p.partition_id)
        p = get_partition(uow, partition_id)
        refuse_if_busy(uow, p.partition_id)
        backups = (
            uow.backups.newest_of_partitions([p.partition_id], chain_window(policy))[p.partition_id]
            if incremental
            else []
        )
        job = new_backup_job(
            ctx,
            p,
            storage,
            policy,
            backups,
            now=ctx.clock(),
            timeout=timeout,
            scheduled=False,
            incremental=incremental,
        )
        uow.jobs.save(job)
        uow.commit()
    return job


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
    the partition ``SourcePartitionId`` (default: the target itself; from a
    given ``BackupStorage``, the partition of the same service and partition
    key, as SF maps partitions into another cluster).

    Another partition's backup is accepted as SF accepts it: when the partition
    kinds and keys agree (partition ids are never compared, since they differ
    between clusters). A partition registered with ``strict_restore`` takes only
    its own backups, unless *allow_other_partition*.

    Raises:
        EntityNotFound, BackupNotFound, PartitionMismatch, BackupInProgress,
        RestoreInProgress, PolicyError.
    """
    timeout = check_job_timeout(timeout_minutes, "RestoreTimeout")
    explicit = (
        parse_storage(body["BackupStorage"], "BackupStorage") if body.get("BackupStorage") else None
    )
    with ctx.uow() as uow:
        p = get_partition(uow, partition_id)
        refuse_if_busy(uow, p.partition_id)
        choice = _choose_from_catalog(
            ctx, uow, p, body, explicit, latest=latest, at_or_before=at_or_before
        )
    # A backup found only in a storage is looked up outside the transaction.
    backup = choice if isinstance(choice, BackupRecord) else _find_in_storage(ctx, p, *choice)
    _check_location(backup, body)
    _check_target(backup, p, allow_other_partition=allow_other_partition)
    with ctx.uow() as uow:
        uow.lock_partition(p.partition_id)
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
                # A source that replays to an instant goes to RestorePointTime itself,
                # not to the newest backup before it (SF's RestorePointTime).
                "restore_time": (
                    format_time(at_or_before)
                    if at_or_before is not None and p.source.startswith(EXACT_PITR_SOURCES)
                    else None
                ),
            },
        )
        uow.jobs.save(job)
        uow.commit()
    return job


def _find_in_storage(
    ctx: ServiceContext,
    target: PartitionRecord,
    storage: StorageSpec,
    backup_id: str,
    partition_id: str | None,
    at_or_before: datetime | None,
) -> BackupRecord:
    """
    Read one backup's metadata straight from a storage (no catalog).

    By *backup_id*; else the newest (at or before *at_or_before*) of
    *partition_id*; else of the partition of *target*'s service with its key.
    """

    def wanted(b: BackupRecord) -> bool:
        if backup_id:
            return b.backup_id == backup_id
        if partition_id:
            return b.partition_id == partition_id
        return b.service == target.service and b.key.matches(target.key)

    found = [
        b
        for b in backups_in_storage(ctx, storage)
        if wanted(b) and (at_or_before is None or b.created_at <= at_or_before)
    ]
    if not found:
        what = (
            f"backup {backup_id}"
            if backup_id
            else f"a backup of partition {partition_id or target.partition_id}"
        )
        raise BackupNotFound(f"{what} is not in the given storage")
    return found[-1]


def _check_target(backup: BackupRecord, p: PartitionRecord, *, allow_other_partition: bool) -> None:
    """SF's checks before restoring *backup* into partition *p*."""
    if backup.partition_id == p.partition_id:
        return
    if not backup.key.matches(p.key):
        # SF's RestorePartitionRequestOperation: the kinds (and keys) must agree.
        raise PartitionMismatch(
            f"backup {backup.backup_id} is of a {backup.key.kind} partition "
            f"{backup.key.to_json(backup.partition_id)}; partition {p.partition_id} is "
            f"{p.key.to_json(p.partition_id)}: the partition kinds and keys must agree"
        )
    if p.strict_restore and not allow_other_partition:
        raise PartitionMismatch(
            f"partition {p.partition_id} takes only its own backups (RestoreOnlyOwnBackups); "
            "pass AllowRestoreToOtherPartition=true to restore another partition's here"
        )


def _same_location(a: str, b: str) -> bool:
    """SF's BackupLocation, with either separator; with or without SF's ``.zip``."""

    def norm(x: str) -> str:
        return x.replace("\\", "/").strip("/").removesuffix(".zip")

    return norm(a) == norm(b)


def _check_location(backup: BackupRecord, body: dict[str, Any]) -> None:
    location = body.get("BackupLocation")
    if (
        body.get("BackupId")
        and isinstance(location, str)
        and not _same_location(backup.location, location)
    ):
        raise PartitionMismatch("BackupId and Backup Locations are mismatch.")


def _choose_from_catalog(
    ctx: ServiceContext,
    uow: UnitOfWork,
    p: PartitionRecord,
    body: dict[str, Any],
    explicit: StorageSpec | None,
    *,
    latest: bool,
    at_or_before: datetime | None,
) -> BackupRecord | tuple[StorageSpec, str, str | None, datetime | None]:
    """The backup to restore, or (storage, backup id, partition id, time) to look it up by."""
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
        if found is not None:
            return found
        storage = explicit
        if storage is None:
            policy = effective_policy(ctx, uow, p)
            if policy is None:
                raise BackupNotFound(
                    f"backup {backup_id} is not in the catalog; give BackupStorage to find it"
                )
            storage = policy.storage
        return storage, backup_id, None, None
    if not latest and at_or_before is None:
        raise PolicyError("give BackupId and BackupLocation, or Latest=true, or RestorePointTime")
    source = body.get("SourcePartitionId")
    if explicit is not None:
        # From a storage (another cluster's, say): the named source partition,
        # or the one of this partition's service and key.
        return explicit, "", str(source) if source else None, at_or_before
    src = get_partition(uow, str(source)) if source and source != p.partition_id else p
    candidates = uow.backups.list(partition_id=src.partition_id, end=at_or_before)
    if not candidates:
        raise BackupNotFound(f"partition {src.partition_id} has no backup to restore from")
    return candidates[-1]


def request_clean(ctx: ServiceContext, partition_ids: list[str], storage: StorageSpec) -> list[str]:
    """Accept jobs that delete every backup of *partition_ids* from *storage* (CleanBackup)."""
    sealed = ctx.secrets.seal_storage(storage.to_json())
    now = ctx.clock()
    new = [
        JobRecord(
            id=str(uuid.uuid4()),
            partition_id=pid,
            kind="clean",
            state="Accepted",
            scheduled=False,
            created_at=now,
            deadline=now + timedelta(minutes=60),
            params={"storage": sealed, "epoch": [0, 0], "lsn": 0},
        )
        for pid in partition_ids
    ]
    with ctx.uow() as uow:
        uow.jobs.insert_many(new)
        uow.commit()
    return [j.id for j in new]


def disable_backup_and_clean(ctx: ServiceContext, entity: EntityRef, *, clean: bool) -> list[str]:
    """DisableBackup: remove the mapping and, with CleanBackup, accept jobs deleting the backups."""
    from safehold.service.protection import disable_backup

    pids, storage = disable_backup(ctx, entity, clean=clean)
    return request_clean(ctx, pids, storage) if storage is not None else []


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
        policy = effective_policy(ctx, uow, p)
    if policy is None or not policy.auto_restore_on_data_loss:
        raise BackupNotEnabled(
            f"partition {p.partition_id} has no policy with AutoRestoreOnDataLoss: "
            "restore it explicitly"
        )
    return request_restore(ctx, p.partition_id, {}, latest=True)
