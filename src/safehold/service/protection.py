"""
Use cases for policies, partitions, and enabling, disabling, suspending and resuming backup.

Each function runs in one unit of work. Inheritance follows Service Fabric:
the lowest mapping wins, a suspension applies to the whole subtree, Disable
only works where backup was enabled directly, and Resume at the level of Suspend.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from safehold.core.errors import ConflictError
from safehold.core.policy import (
    REDACTED,
    BackupPolicy,
    EffectiveConfig,
    EntityRef,
    PolicyError,
    StorageSpec,
    check_application_name,
    check_service_name,
    effective_config,
    parse_policy,
)
from safehold.core.snapshot import Epoch
from safehold.service import storages
from safehold.service.context import ServiceContext
from safehold.service.errors import (
    BackupIsEnabled,
    BackupNotEnabled,
    EntityNotFound,
    PolicyExists,
    PolicyNotFound,
)
from safehold.service.model import Hooks, PartitionKey, PartitionRecord
from safehold.service.secrets import SECRET_KEYS
from safehold.service.uow import UnitOfWork

__all__ = [
    "PartitionCreate",
    "config_info",
    "create_policy",
    "delete_policy",
    "disable_backup",
    "enable_backup",
    "register_partition",
    "resume_backup",
    "suspend_backup",
    "update_policy",
]

SOURCE_KINDS = ("dir:", "command:", "state:")


# --- Policies ----------------------------------------------------------------------


def _entity_filter(entity: EntityRef) -> dict[str, str]:
    """The partitions of *entity*, as keyword filters of the partition store."""
    return {
        "Application": {"application": entity.key},
        "Service": {"service": entity.key},
        "Partition": {"partition_id": entity.key},
    }[entity.kind]


def _sealed(ctx: ServiceContext, policy: BackupPolicy) -> dict[str, Any]:
    doc = policy.to_json(redact=False)
    doc["Storage"] = ctx.secrets.seal_storage(doc["Storage"])
    return doc


def load_policy(ctx: ServiceContext, uow: UnitOfWork, name: str) -> BackupPolicy:
    """Return policy *name* with its secrets opened (for the service's own use only)."""
    doc = uow.policies.get(name)
    if doc is None:
        raise PolicyNotFound(f"backup policy {name!r} does not exist")
    doc["Storage"] = ctx.secrets.open_storage(doc["Storage"])
    return parse_policy(doc)


def create_policy(
    ctx: ServiceContext, doc: object, *, validate_connection: bool = False
) -> BackupPolicy:
    """Validate and store a new policy (with *validate_connection*, try its storage first)."""
    policy = parse_policy(doc)
    _refuse_redacted(policy)
    if validate_connection:
        storages.validate_connection(ctx, policy.storage)
    with ctx.uow() as uow:
        if uow.policies.get(policy.name) is not None:
            raise PolicyExists(f"backup policy {policy.name!r} already exists")
        uow.policies.add(policy.name, _sealed(ctx, policy), ctx.clock())
        uow.commit()
    return policy


def update_policy(
    ctx: ServiceContext, name: str, doc: object, *, validate_connection: bool = False
) -> BackupPolicy:
    """
    Replace policy *name*.

    A secret sent back as ``****`` (as a GET shows it) keeps its stored value.
    """
    with ctx.uow() as uow:
        old = load_policy(ctx, uow, name)
    if isinstance(doc, dict) and isinstance(doc.get("Storage"), dict):
        storage = dict(doc["Storage"])
        old_storage = old.storage.to_json()
        for key in SECRET_KEYS:
            if storage.get(key) == REDACTED and key in old_storage:
                storage[key] = old_storage[key]
        doc = {**doc, "Storage": storage}
    policy = parse_policy(doc)
    if policy.name != name:
        raise PolicyError(f"the policy's Name {policy.name!r} differs from {name!r} in the path")
    _refuse_redacted(policy)
    if validate_connection:
        # Outside any transaction: a slow storage must not hold the catalog.
        storages.validate_connection(ctx, policy.storage)
    with ctx.uow() as uow:
        load_policy(ctx, uow, name)  # still there
        for entity in uow.mappings.of_policy(name):
            # The schedule may have changed: its partitions are scheduled anew.
            uow.partitions.mark_reschedule(**_entity_filter(entity))
        uow.policies.update(name, _sealed(ctx, policy))
        uow.commit()
    return policy


def _refuse_redacted(policy: BackupPolicy) -> None:
    if REDACTED in policy.storage.to_json().values():
        raise PolicyError("a secret in Storage is '****': send the real value")


def delete_policy(ctx: ServiceContext, name: str) -> None:
    """Delete a policy that nothing is mapped to any more."""
    with ctx.uow() as uow:
        if uow.policies.get(name) is None:
            raise PolicyNotFound(f"backup policy {name!r} does not exist")
        for entity in uow.mappings.of_policy(name):
            if _exists(uow, entity):
                raise BackupIsEnabled(
                    f"Backup Mapping Exist for the Backup Policy {name!r} "
                    f"({entity.kind} {entity.key}); disable backup there first"
                )
            uow.mappings.remove(entity)  # prune mappings of entities that are gone
        uow.policies.delete(name)
        uow.commit()


def get_policy(ctx: ServiceContext, name: str) -> dict[str, Any]:
    """Return a policy's JSON with secrets redacted."""
    with ctx.uow() as uow:
        return load_policy(ctx, uow, name).to_json(redact=True)


def list_policies(ctx: ServiceContext) -> list[dict[str, Any]]:
    """Return every policy's JSON with secrets redacted."""
    with ctx.uow() as uow:
        names = [d["Name"] for d in uow.policies.list()]
        return [load_policy(ctx, uow, n).to_json(redact=True) for n in names]


def enabled_entities(ctx: ServiceContext, name: str) -> list[dict[str, Any]]:
    """Return the BackupEntity objects that policy *name* is enabled on."""
    with ctx.uow() as uow:
        if uow.policies.get(name) is None:
            raise PolicyNotFound(f"backup policy {name!r} does not exist")
        out = []
        for e in uow.mappings.of_policy(name):
            out.append(_entity_json(uow, e))
        return out


def _entity_json(uow: UnitOfWork, e: EntityRef) -> dict[str, Any]:
    if e.kind == "Application":
        return {"EntityKind": "Application", "ApplicationName": e.key}
    if e.kind == "Service":
        return {"EntityKind": "Service", "ServiceName": e.key}
    p = uow.partitions.get(e.key)
    return {
        "EntityKind": "Partition",
        "ServiceName": p.service if p else None,
        "PartitionId": e.key,
    }


# --- Partitions --------------------------------------------------------------------


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
        raise PolicyError(f"source {source!r} must be 'dir:PATH', 'command:CMD' or 'state:AGENT'")
    if source.startswith("dir:") and not source[4:].startswith("/"):
        raise PolicyError(f"source {source!r}: the directory must be an absolute path")
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
    if not target.startswith(("command:", "file:", "dir:")) or not target.split(":", 1)[1].strip():
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


def get_partition(uow: UnitOfWork, partition_id: str) -> PartitionRecord:
    """Return a partition or raise ``EntityNotFound``."""
    try:
        pid = str(uuid.UUID(partition_id))
    except ValueError as exc:
        raise EntityNotFound(f"partition id {partition_id!r} is not a GUID") from exc
    p = uow.partitions.get(pid)
    if p is None:
        raise EntityNotFound(f"partition {pid} is not registered")
    return p


def partition_json(p: PartitionRecord) -> dict[str, Any]:
    """Return the API shape of a registration."""
    return {
        "PartitionId": p.partition_id,
        "ApplicationName": p.application,
        "ServiceName": p.service,
        "Source": p.source,
        "RestoreTo": p.restore_to,
        "Agent": p.agent,
        "PartitionInformation": p.key.to_json(p.partition_id),
        "RestoreOnlyOwnBackups": p.strict_restore,
        "Hooks": p.hooks.to_json() if p.hooks else None,
    }


# --- Enable, disable, suspend, resume ----------------------------------------------


def _exists(uow: UnitOfWork, entity: EntityRef) -> bool:
    if entity.kind == "Application":
        return bool(uow.partitions.list(application=entity.key))
    if entity.kind == "Service":
        return bool(uow.partitions.list(service=entity.key))
    return uow.partitions.get(entity.key) is not None


def chain_of(uow: UnitOfWork, entity: EntityRef) -> list[EntityRef]:
    """Return the chain from the application down to *entity*; 404 if it is not registered."""
    if entity.kind == "Partition":
        p = get_partition(uow, entity.key)
        return [
            EntityRef("Application", p.application),
            EntityRef("Service", p.service),
            EntityRef("Partition", p.partition_id),
        ]
    if not _exists(uow, entity):
        code = (
            "FABRIC_E_APPLICATION_NOT_FOUND"
            if entity.kind == "Application"
            else ("FABRIC_E_SERVICE_DOES_NOT_EXIST")
        )
        raise EntityNotFound(
            f"{entity.kind.lower()} {entity.key} has no registered partitions", code
        )
    if entity.kind == "Application":
        return [entity]
    parts = uow.partitions.list(service=entity.key)
    return [EntityRef("Application", parts[0].application), entity]


def effective_for(uow: UnitOfWork, entity: EntityRef) -> EffectiveConfig:
    """Resolve the policy and suspension that apply to *entity*."""
    return effective_config(chain_of(uow, entity), uow.mappings.all(), uow.mappings.suspensions())


def enable_backup(ctx: ServiceContext, entity: EntityRef, policy_name: object) -> None:
    """Enable backup with *policy_name* on *entity* (replacing a direct mapping)."""
    if not isinstance(policy_name, str) or not policy_name:
        raise PolicyError("BackupPolicyName is required")
    with ctx.uow() as uow:
        entity = chain_of(uow, entity)[-1]
        if uow.policies.get(policy_name) is None:
            raise PolicyNotFound(f"backup policy {policy_name!r} does not exist")
        uow.mappings.assign(entity, policy_name, ctx.clock())
        uow.commit()


def disable_backup(
    ctx: ServiceContext, entity: EntityRef, *, clean: bool
) -> tuple[list[str], StorageSpec | None]:
    """
    Remove the policy enabled directly on *entity*.

    Returns:
        When *clean*: the partitions whose backups must be deleted, and the
        storage of the policy that was enabled; else ``([], None)``.
    """
    with ctx.uow() as uow:
        entity = chain_of(uow, entity)[-1]
        policy_name = uow.mappings.all().get(entity)
        if policy_name is None:
            raise BackupNotEnabled(
                f"backup is not enabled directly on {entity.kind.lower()} {entity.key}; "
                "disable it where it was enabled"
            )
        storage = load_policy(ctx, uow, policy_name).storage
        uow.mappings.remove(entity)
        if entity.kind == "Application":
            parts = uow.partitions.list(application=entity.key)
        elif entity.kind == "Service":
            parts = uow.partitions.list(service=entity.key)
        else:
            parts = [get_partition(uow, entity.key)]
        uow.commit()
    if not clean:
        return [], None
    return [p.partition_id for p in parts], storage


def suspend_backup(ctx: ServiceContext, entity: EntityRef) -> None:
    """Suspend periodic backup of *entity*'s subtree; backup must be enabled there."""
    with ctx.uow() as uow:
        entity = chain_of(uow, entity)[-1]
        if effective_for(uow, entity).policy_name is None:
            raise BackupNotEnabled(f"backup is not enabled for {entity.kind.lower()} {entity.key}")
        uow.mappings.suspend(entity)
        uow.commit()


def resume_backup(ctx: ServiceContext, entity: EntityRef) -> None:
    """
    Resume what was suspended at this very level (idempotent).

    Raises:
        BackupNotEnabled: nothing is enabled on or above the entity (SF's 404).
    """
    with ctx.uow() as uow:
        entity = chain_of(uow, entity)[-1]
        if effective_for(uow, entity).policy_name is None:
            raise BackupNotEnabled(f"backup is not enabled for {entity.kind} {entity.key}")
        uow.mappings.resume(entity)
        uow.commit()


def _info(
    kind: str, entity: EntityRef, eff: EffectiveConfig, p: PartitionRecord | None
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "Kind": kind,
        "PolicyName": eff.policy_name,
        "PolicyInheritedFrom": eff.policy_from,
        "SuspensionInfo": {
            "IsSuspended": eff.suspended,
            "SuspensionInheritedFrom": eff.suspended_from,
        },
    }
    if kind == "Application":
        doc["ApplicationName"] = entity.key
    elif kind == "Service":
        doc["ServiceName"] = entity.key
    else:
        assert p is not None
        doc["ServiceName"] = p.service
        doc["PartitionId"] = p.partition_id
    return doc


def config_info(ctx: ServiceContext, entity: EntityRef) -> list[dict[str, Any]]:
    """
    Return ``BackupConfigurationInfo`` for *entity*.

    For an application or service: its own entry, then every service or partition
    below it that has its own mapping or suspension.
    """
    with ctx.uow() as uow:
        entity = chain_of(uow, entity)[-1]
        eff = effective_for(uow, entity)
        if entity.kind == "Partition":
            p = get_partition(uow, entity.key)
            if eff.policy_name is None:
                raise BackupNotEnabled(f"backup is not enabled for partition {p.partition_id}")
            return [_info("Partition", entity, eff, p)]
        out = [_info(entity.kind, entity, eff, None)] if eff.policy_name else []
        explicit = set(uow.mappings.all()) | uow.mappings.suspensions()
        parts = (
            uow.partitions.list(application=entity.key)
            if entity.kind == "Application"
            else uow.partitions.list(service=entity.key)
        )
        seen: set[EntityRef] = set()
        for p in parts:
            below = [EntityRef("Service", p.service), EntityRef("Partition", p.partition_id)]
            for e in below:
                if e in explicit and e not in seen and e != entity:
                    seen.add(e)
                    sub = effective_for(uow, e)
                    if sub.policy_name is not None:
                        out.append(_info(e.kind, e, sub, p))
        if not out:
            raise BackupNotEnabled(f"backup is not enabled for {entity.kind.lower()} {entity.key}")
        return out


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
