"""safehold's own routes for partitions: registration and health (SF has no such calls)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from safehold.api.deps import AdminDep, CtxDep, ReaderDep
from safehold.api.paging import page
from safehold.api.schemas import HealthPublic, PagedPartitionList, PartitionCreate, PartitionPublic
from safehold.service import health, protection

router = APIRouter(prefix="/safehold", tags=["Partitions"])


@router.post("/partitions", status_code=201)
def register_partition(ctx: CtxDep, _p: AdminDep, body: PartitionCreate) -> PartitionPublic:
    """Register a partition (or update its source, restore target or agent)."""
    rec = protection.register_partition(
        ctx,
        protection.PartitionCreate(
            application=body.ApplicationName,
            service=body.ServiceName,
            partition_id=body.PartitionId,
            source=body.Source,
            restore_to=body.RestoreTo,
            agent=body.Agent,
        ),
    )
    return PartitionPublic(**protection.partition_json(rec))


@router.get("/partitions")
def list_partitions(
    ctx: CtxDep,
    _p: ReaderDep,
    token: Annotated[str | None, Query(alias="ContinuationToken")] = None,
    max_results: Annotated[int | None, Query(alias="MaxResults")] = None,
) -> PagedPartitionList:
    """List the registered partitions."""
    items = [
        PartitionPublic(**protection.partition_json(p)) for p in protection.list_partitions(ctx)
    ]
    return PagedPartitionList(**page(items, token, max_results))


@router.get("/partitions/{partition_id}")
def get_partition(ctx: CtxDep, _p: ReaderDep, partition_id: str) -> PartitionPublic:
    """Return one registration."""
    return PartitionPublic(
        **protection.partition_json(protection.find_partition(ctx, partition_id))
    )


@router.delete("/partitions/{partition_id}", status_code=204)
def unregister_partition(ctx: CtxDep, _p: AdminDep, partition_id: str) -> Response:
    """Forget a registration (its backups stay); 409 while one of its jobs runs."""
    protection.unregister_partition(ctx, partition_id)
    return Response(status_code=204)


@router.get("/health")
def list_health(ctx: CtxDep, _p: ReaderDep) -> list[HealthPublic]:
    """Every partition's backup health: Ok, Warning or Error, with the reason."""
    return [HealthPublic(**h.to_json()) for h in health.partition_health(ctx)]


@router.get("/partitions/{partition_id}/health")
def get_health(ctx: CtxDep, _p: ReaderDep, partition_id: str) -> HealthPublic:
    """One partition's backup health."""
    return HealthPublic(**health.health_of(ctx, partition_id).to_json())
