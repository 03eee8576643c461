"""
Enabling, disabling, suspending and resuming backup, and what applies where.

Each function runs in one unit of work. Inheritance follows Service Fabric:
the lowest mapping wins, a suspension applies to the whole subtree, Disable
only works where backup was enabled directly, and Resume at the level of Suspend.
Policies are ``service.policies``, registrations ``service.partitions``.
"""

from __future__ import annotations

from dataclasses import dataclass

from safehold.core.policy import EffectiveConfig, EntityRef, PolicyError, StorageSpec
from safehold.service.context import ServiceContext
from safehold.service.entities import chain_of, effective_for, get_partition
from safehold.service.errors import BackupNotEnabled, PolicyNotFound
from safehold.service.model import PartitionRecord
from safehold.service.policies import load_policy

__all__ = [
    "ConfigInfo",
    "config_info",
    "disable_backup",
    "enable_backup",
    "resume_backup",
    "suspend_backup",
]


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


@dataclass(frozen=True)
class ConfigInfo:
    """
    What applies to one entity (SF's ``BackupConfigurationInfo``): its policy and
    where that is inherited from, and whether and where backup is suspended.
    """

    entity: EntityRef
    policy_name: str
    policy_from: str
    suspended: bool
    suspended_from: str | None
    service: str | None = None  # a partition's service


def _info(entity: EntityRef, eff: EffectiveConfig, p: PartitionRecord | None) -> ConfigInfo:
    assert eff.policy_name is not None
    assert eff.policy_from is not None
    return ConfigInfo(
        entity,
        eff.policy_name,
        eff.policy_from,
        eff.suspended,
        eff.suspended_from,
        p.service if p is not None and entity.kind != "Application" else None,
    )


def config_info(ctx: ServiceContext, entity: EntityRef) -> list[ConfigInfo]:
    """
    Return what applies to *entity* (``api.sf_render`` makes SF's JSON of it).

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
            return [_info(entity, eff, p)]
        out = [_info(entity, eff, None)] if eff.policy_name else []
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
                        out.append(_info(e, sub, p))
        if not out:
            raise BackupNotEnabled(f"backup is not enabled for {entity.kind.lower()} {entity.key}")
        return out
