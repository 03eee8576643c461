"""
Use cases for partition registrations: register (or update), find, list, unregister.

A registration says where a partition's data comes from (its *source*), where
a restore writes it (*restore_to*), which agent serves it, its SF partition
information, and its hooks. Sources are checked here; a database source never
carries a password (the agent's environment or a password file does).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from safehold.core.errors import ConflictError
from safehold.core.policy import EntityRef, PolicyError, check_application_name, check_service_name
from safehold.core.snapshot import Epoch
from safehold.service.context import ServiceContext
from safehold.service.entities import get_partition
from safehold.service.model import Hooks, PartitionKey, PartitionRecord

__all__ = [
    "SOURCE_KINDS",
    "PartitionCreate",
    "check_hooks",
    "check_partition_key",
    "check_restore_to",
    "check_source",
    "find_partition",
    "list_partitions",
    "register_partition",
    "unregister_partition",
]

SOURCE_KINDS = ("dir:", "command:", "state:", "postgres:", "mariadb:", "redis:")


@dataclass(frozen=True)
class PartitionCreate:
    """A request to register a partition."""

    application: str
    service: str
    partition_id: str
    source: str
    restore_to: str | None = None
    agent: str | None = None
    key: PartitionKey = field(default_factory=PartitionKey)
    strict_restore: bool = False
    hooks: Hooks | None = None


def check_source(source: str) -> str:
    """
    Check a partition source: ``dir:PATH``, ``command:CMD`` or ``state:AGENT``.

    ``state:AGENT`` means the partition's own agent *AGENT* (a ``StateStore``
    running ``StoreAgent``) does the data work and reports epochs and LSNs.
    """
    if not source.startswith(SOURCE_KINDS) or not source.split(":", 1)[1].strip():
        raise PolicyError(
            f"source {source!r} must be 'dir:PATH', 'command:CMD', 'state:AGENT', "
            "'postgres:URL', 'mariadb:URL' or 'redis:URL'"
        )
    if source.startswith("dir:") and not source[4:].startswith("/"):
        raise PolicyError(f"source {source!r}: the directory must be an absolute path")
    db_url = source.split(":", 1)[1].split("#", 1)[0]
    if source.startswith(SOURCE_KINDS[3:]) and urlsplit(db_url).password:
        raise PolicyError("a database source must not carry a password (docs/databases.md)")
    return source


def check_hooks(hooks: Hooks | None) -> Hooks | None:
    """Check a partition's hooks: at least one command, a positive timeout; none when empty."""
    if hooks is None or not (hooks.before or hooks.after):
        return None
    if hooks.timeout_seconds <= 0:
        raise PolicyError("Hooks.TimeoutSeconds must be more than 0")
    for cmd in (hooks.before, hooks.after):
        if cmd is not None and not cmd.strip():
            raise PolicyError("a hook command must not be blank")
    return hooks


def check_restore_to(target: str | None) -> str | None:
    """Check a restore target (``command:CMD`` fed on stdin, or ``file:PATH``)."""
    if target is None:
        return None
    kinds = ("command:", "file:", "dir:", "pgdata:", "mysqldata:")
    if not target.startswith(kinds) or not target.split(":", 1)[1].strip():
        raise PolicyError(
            f"restore target {target!r} must be 'command:CMD', 'file:PATH' or 'dir:PATH'"
        )
    return target


def _agent_of(req: PartitionCreate) -> str | None:
    # Only the store itself can run a state: partition's jobs, so its agent is fixed.
    if not req.source.startswith("state:"):
        return req.agent
    agent = req.source.split(":", 1)[1].strip()
    if req.agent is not None and req.agent != agent:
        raise PolicyError(f"a state:{agent} partition is served by agent {agent}, not {req.agent}")
    return agent


def register_partition(ctx: ServiceContext, req: PartitionCreate) -> PartitionRecord:
    """Register a partition (or update the registration of an existing one)."""
    try:
        pid = str(uuid.UUID(req.partition_id))
    except ValueError as exc:
        raise PolicyError(f"partition id {req.partition_id!r} is not a GUID") from exc
    app = check_application_name(req.application)
    svc = check_service_name(req.service, app)
    with ctx.uow() as uow:
        old = uow.partitions.get(pid)
        if old is not None and (old.application, old.service) != (app, svc):
            raise PolicyError(f"partition {pid} is registered under {old.service} already")
        rec = PartitionRecord(
            partition_id=pid,
            application=app,
            service=svc,
            source=check_source(req.source),
            restore_to=check_restore_to(req.restore_to),
            agent=_agent_of(req),
            epoch=old.epoch if old else Epoch(0, 0),
            lsn=old.lsn if old else 0,
            last_scheduled_at=old.last_scheduled_at if old else None,
            created_at=old.created_at if old else ctx.clock(),
            key=check_partition_key(req.key),
            strict_restore=req.strict_restore,
            hooks=check_hooks(req.hooks),
        )
        uow.partitions.save(rec)
        uow.commit()
    return rec


def check_partition_key(key: PartitionKey) -> PartitionKey:
    """Check SF's partition information: a range needs LowKey ≤ HighKey, a Named one a name."""
    if key.kind == "Int64Range":
        lo, hi = key.low_key, key.high_key
        if lo is None or hi is None or lo > hi or min(lo, hi) < -(2**63) or max(lo, hi) >= 2**63:
            raise PolicyError("an Int64Range partition needs Int64 LowKey ≤ HighKey")
        return PartitionKey("Int64Range", lo, hi)
    if key.kind == "Named":
        if not key.name:
            raise PolicyError("a Named partition needs its PartitionName")
        return PartitionKey("Named", name=key.name)
    return PartitionKey()


def list_partitions(ctx: ServiceContext) -> list[PartitionRecord]:
    """Return every registered partition."""
    with ctx.uow() as uow:
        return uow.partitions.list()


def find_partition(ctx: ServiceContext, partition_id: str) -> PartitionRecord:
    """Return one registered partition; 404 if unknown."""
    with ctx.uow() as uow:
        return get_partition(uow, partition_id)


def unregister_partition(ctx: ServiceContext, partition_id: str) -> None:
    """
    Forget a partition's registration and its own mapping and suspension.

    Its backups stay in storage and in the catalog (restore them elsewhere, or
    delete them first with DisableBackup and CleanBackup).

    Raises:
        EntityNotFound: no such partition.
        ConflictError: a job of the partition is accepted or running.
    """
    with ctx.uow() as uow:
        p = get_partition(uow, partition_id)
        uow.lock_partition(p.partition_id)
        if uow.jobs.active(p.partition_id):
            raise ConflictError(f"partition {p.partition_id} has a job running; wait for it to end")
        entity = EntityRef("Partition", p.partition_id)
        uow.mappings.remove(entity)
        uow.mappings.resume(entity)
        uow.partitions.delete(p.partition_id)
        uow.commit()
