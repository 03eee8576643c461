"""
Drill policies and where they are attached (the use cases; ``service.drills`` runs the drills).

Policies attach to applications, services and partitions with the same
inheritance as backup policies. Errors are those of ``service.drills``.
"""

from __future__ import annotations

from typing import Any

from safehold.core.drill import DrillPolicy, parse_drill_policy
from safehold.core.policy import EntityRef, PolicyError
from safehold.service.context import ServiceContext
from safehold.service.drill_errors import DrillNotEnabled, DrillPolicyExists, DrillPolicyInUse
from safehold.service.drill_errors import load_policy as _load
from safehold.service.entities import chain_of

__all__ = [
    "attach",
    "create_policy",
    "delete_policy",
    "detach",
    "get_policy",
    "list_policies",
    "update_policy",
]


def create_policy(ctx: ServiceContext, doc: object) -> DrillPolicy:
    """Validate and store a new drill policy."""
    policy = parse_drill_policy(doc)
    with ctx.uow() as uow:
        if uow.drills.get_policy(policy.name) is not None:
            raise DrillPolicyExists(f"drill policy {policy.name!r} exists already")
        uow.drills.add_policy(policy.name, policy.to_json(), ctx.clock())
        uow.commit()
    return policy


def update_policy(ctx: ServiceContext, name: str, doc: object) -> DrillPolicy:
    """Replace drill policy *name* (the document's Name must agree)."""
    policy = parse_drill_policy(doc)
    if policy.name != name:
        raise PolicyError(f"the policy's Name {policy.name!r} is not {name!r}")
    with ctx.uow() as uow:
        _load(uow, name)
        uow.drills.update_policy(name, policy.to_json())
        uow.commit()
    return policy


def delete_policy(ctx: ServiceContext, name: str) -> None:
    """Delete a drill policy that is attached nowhere."""
    with ctx.uow() as uow:
        _load(uow, name)
        used = uow.drills.of_policy(name)
        if used:
            where = ", ".join(f"{e.kind} {e.key}" for e in used[:3])
            raise DrillPolicyInUse(f"drill policy {name!r} is attached to {where}: detach it first")
        uow.drills.delete_policy(name)
        uow.commit()


def get_policy(ctx: ServiceContext, name: str) -> dict[str, Any]:
    """One drill policy, with the entities it is attached to."""
    with ctx.uow() as uow:
        doc = _load(uow, name).to_json()
        doc["AttachedTo"] = [{"Kind": e.kind, "Key": e.key} for e in uow.drills.of_policy(name)]
    return doc


def list_policies(ctx: ServiceContext) -> list[dict[str, Any]]:
    """Every drill policy."""
    with ctx.uow() as uow:
        return [parse_drill_policy(d).to_json() for d in uow.drills.list_policies()]


def attach(ctx: ServiceContext, entity: EntityRef, name: str) -> None:
    """Attach drill policy *name* to an application, service or partition."""
    with ctx.uow() as uow:
        _load(uow, name)
        entity = chain_of(uow, entity)[-1]  # 404 unless registered
        uow.drills.assign(entity, name, ctx.clock())
        uow.commit()


def detach(ctx: ServiceContext, entity: EntityRef) -> None:
    """Detach the drill policy attached directly to *entity*."""
    with ctx.uow() as uow:
        if not uow.drills.unassign(entity):
            raise DrillNotEnabled(f"no drill policy is attached to {entity.kind} {entity.key}")
        uow.commit()
