"""
Use cases for backup policies: create, update, delete, read, and where each is enabled.

Policies are stored with their secrets sealed (``service.secrets``); only
``load_policy`` opens them, for the service's own use. What goes out is
redacted (``****``), and a ``****`` sent back keeps the stored secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from safehold.core.policy import REDACTED, BackupPolicy, EntityRef, PolicyError, parse_policy
from safehold.service import storages
from safehold.service.context import ServiceContext
from safehold.service.entities import entity_exists, entity_filter
from safehold.service.errors import BackupIsEnabled, PolicyExists, PolicyNotFound
from safehold.service.secrets import SECRET_KEYS
from safehold.service.uow import UnitOfWork

__all__ = [
    "EnabledEntity",
    "create_policy",
    "delete_policy",
    "enabled_entities",
    "get_policy",
    "list_policies",
    "load_policy",
    "update_policy",
]


@dataclass(frozen=True)
class EnabledEntity:
    """An entity a policy is enabled on; for a partition, its service too."""

    entity: EntityRef
    service: str | None = None


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
            uow.partitions.mark_reschedule(**entity_filter(entity))
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
            if entity_exists(uow, entity):
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


def enabled_entities(ctx: ServiceContext, name: str) -> list[EnabledEntity]:
    """Return the entities that policy *name* is enabled on (SF's BackupEntity list)."""
    with ctx.uow() as uow:
        if uow.policies.get(name) is None:
            raise PolicyNotFound(f"backup policy {name!r} does not exist")
        out = []
        for e in uow.mappings.of_policy(name):
            p = uow.partitions.get(e.key) if e.kind == "Partition" else None
            out.append(EnabledEntity(e, p.service if p else None))
        return out
