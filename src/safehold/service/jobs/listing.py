"""
Reading jobs and backups: GetBackups from the catalog or straight from a storage,
the latest job of a partition (for progress), and the agents.

Rendering these as Service Fabric JSON is the API's business (``api/sf_render``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from safehold.core.policy import EntityRef, PolicyError, StorageSpec, parse_storage
from safehold.core.snapshot import Epoch, format_time
from safehold.service.context import ServiceContext
from safehold.service.entities import chain_of, get_partition
from safehold.service.model import (
    BackupRecord,
    JobRecord,
    PartitionKey,
    backup_id_for,
    backup_location,
)
from safehold.service.storages import foreign_repository_is_bad_input

__all__ = [
    "backups_in_storage",
    "entity_from_json",
    "latest_job",
    "latest_per_partition",
    "list_agents",
    "list_backups",
    "storage_backups",
]


def latest_job(
    ctx: ServiceContext, partition_id: str, kinds: list[str], *, scheduled: bool | None = None
) -> JobRecord | None:
    """
    Return the partition's newest job of one of *kinds* (None if it never had one).

    With *scheduled* False, only jobs requested on demand (SF's GetBackupProgress
    does not show periodic ones).

    Raises:
        EntityNotFound: no such partition.
    """
    with ctx.reader() as uow:
        p = get_partition(uow, partition_id)
        return uow.jobs.latest(p.partition_id, kinds, scheduled=scheduled)


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
    offset: int = 0,
    limit: int | None = None,
) -> list[BackupRecord]:
    """
    Return an entity's backups from the catalog, oldest first; without *latest*,
    from the *offset*-th and at most *limit* (one page, read as such).
    """
    if start and end and start > end:
        raise PolicyError("StartDateTimeFilter must not be later than EndDateTimeFilter")
    if latest:  # each partition's newest needs every backup
        offset, limit = 0, None
    with ctx.reader() as uow:
        chain = chain_of(uow, entity)
        where = _entity_filter(chain[-1])
        items = uow.backups.list(start=start, end=end, offset=offset, limit=limit, **where)
    return latest_per_partition(items) if latest else items


def backups_in_storage(ctx: ServiceContext, storage: StorageSpec) -> list[BackupRecord]:
    """Read every backup's metadata straight from a storage, with no catalog."""
    store = ctx.check_storage(storage)
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
                key=PartitionKey.parse(
                    {
                        "kind": part.kind,
                        "low_key": part.low_key,
                        "high_key": part.high_key,
                        "name": part.name,
                    }
                ),
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


def list_agents(ctx: ServiceContext) -> list[dict[str, Any]]:
    """Return each known agent, when it was last heard from, and the jobs it runs."""
    with ctx.uow() as uow:
        seen = uow.agents.all()
        running = uow.jobs.running_by_agent()
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
