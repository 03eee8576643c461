"""safehold's own routes for partitions: registration and health (SF has no such calls)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from safehold.api import sf_render
from safehold.api.deps import AdminDep, CtxDep, ReaderDep
from safehold.api.paging import page
from safehold.api.schemas import HealthPublic, PagedPartitionList, PartitionCreate, PartitionPublic
from safehold.core.policy import PolicyError
from safehold.service import health, partitions
from safehold.service.model import Hooks, PartitionKey

router = APIRouter(prefix="/safehold", tags=["Partitions"])


@router.post("/partitions", status_code=201)
def register_partition(
    request: Request, ctx: CtxDep, _p: AdminDep, body: PartitionCreate
) -> PartitionPublic:
    """Register a partition (or update its source, restore target or agent)."""
    rec = partitions.register_partition(
        ctx,
        partitions.PartitionCreate(
            application=body.ApplicationName,
            service=body.ServiceName,
            partition_id=body.PartitionId,
            source=body.Source,
            restore_to=body.RestoreTo,
            agent=body.Agent,
            key=PartitionKey(body.PartitionKind, body.LowKey, body.HighKey, body.PartitionName),
            strict_restore=body.RestoreOnlyOwnBackups,
            hooks=Hooks(body.Hooks.Before, body.Hooks.After, body.Hooks.TimeoutSeconds)
            if body.Hooks
            else None,
        ),
    )
    request.app.state.fleet.invalidate()  # this replica's health lists it at once
    return PartitionPublic(**sf_render.partition_json(rec))


@router.get("/partitions")
def list_partitions(
    ctx: CtxDep,
    _p: ReaderDep,
    token: Annotated[str | None, Query(alias="ContinuationToken")] = None,
    max_results: Annotated[int | None, Query(alias="MaxResults")] = None,
) -> PagedPartitionList:
    """List the registered partitions."""
    items = [
        PartitionPublic(**sf_render.partition_json(p)) for p in partitions.list_partitions(ctx)
    ]
    return PagedPartitionList(**page(items, token, max_results))


@router.get("/partitions/{partition_id}")
def get_partition(ctx: CtxDep, _p: ReaderDep, partition_id: str) -> PartitionPublic:
    """Return one registration."""
    return PartitionPublic(**sf_render.partition_json(partitions.find_partition(ctx, partition_id)))


@router.delete("/partitions/{partition_id}", status_code=204)
def unregister_partition(
    request: Request, ctx: CtxDep, _p: AdminDep, partition_id: str
) -> Response:
    """Forget a registration (its backups stay); 409 while one of its jobs runs."""
    partitions.unregister_partition(ctx, partition_id)
    request.app.state.fleet.invalidate()
    return Response(status_code=204)


@router.get("/health")
def list_health(
    ctx: CtxDep,
    _p: ReaderDep,
    request: Request,
    state: Annotated[str | None, Query(alias="HealthState")] = None,
    max_results: Annotated[int | None, Query(alias="MaxResults")] = None,
) -> list[HealthPublic]:
    """
    Partitions' backup health: Ok, Warning or Error, with the reason; Error, then Warning first.

    ``HealthState`` keeps one state; ``MaxResults`` the first that many. The view
    is shared by concurrent callers and at most a second old.
    """
    view = request.app.state.fleet.get(ctx)
    items = view.ranked(state)
    if max_results is not None:
        if max_results < 0:
            raise PolicyError("MaxResults must be 0 or more")
        items = items[: max_results or None]
    return [HealthPublic.model_construct(**h.to_json()) for h in items]


@router.get("/health/summary")
def health_summary(ctx: CtxDep, _p: ReaderDep, request: Request) -> dict[str, Any]:
    """How many partitions are Ok, Warning and Error, and the first 100 that are not Ok."""
    view = request.app.state.fleet.get(ctx)
    bad = view.ranked("Error")[:100] + view.ranked("Warning")[:100]
    return {"Counts": view.counts(), "Unhealthy": [h.to_json() for h in bad[:100]]}


@router.get("/partitions/{partition_id}/health")
def get_health(ctx: CtxDep, _p: ReaderDep, partition_id: str) -> HealthPublic:
    """One partition's backup health."""
    return HealthPublic(**health.health_of(ctx, partition_id).to_json())
