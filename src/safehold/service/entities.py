"""
The entities SF's API names, resolved in the catalog: partitions by id, services
and applications by their registered partitions, and what applies to each.

Each lookup reads a constant number of rows: an application or a service exists
when one of its partitions is registered (``PartitionStore.first``), so no
request reads a whole application's partitions to find out.
"""

from __future__ import annotations

import uuid

from safehold.core.policy import EffectiveConfig, EntityRef, effective_config
from safehold.service.errors import EntityNotFound
from safehold.service.model import PartitionRecord
from safehold.service.uow import UnitOfWork

__all__ = ["chain_of", "effective_for", "entity_exists", "entity_filter", "get_partition"]


def entity_filter(entity: EntityRef) -> dict[str, str]:
    """The partitions of *entity*, as keyword filters of the partition store."""
    return {
        "Application": {"application": entity.key},
        "Service": {"service": entity.key},
        "Partition": {"partition_id": entity.key},
    }[entity.kind]


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


def entity_exists(uow: UnitOfWork, entity: EntityRef) -> bool:
    """Whether *entity* has a registered partition (one indexed row, whatever the fleet)."""
    if entity.kind == "Application":
        return uow.partitions.first(application=entity.key) is not None
    if entity.kind == "Service":
        return uow.partitions.first(service=entity.key) is not None
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
    if not entity_exists(uow, entity):
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
    first = uow.partitions.first(service=entity.key)
    assert first is not None  # it exists
    return [EntityRef("Application", first.application), entity]


def effective_for(uow: UnitOfWork, entity: EntityRef) -> EffectiveConfig:
    """Resolve the policy and suspension that apply to *entity*."""
    return effective_config(chain_of(uow, entity), uow.mappings.all(), uow.mappings.suspensions())
