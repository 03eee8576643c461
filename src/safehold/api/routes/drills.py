"""
safehold's own routes for restore drills and alerts (SF has no such calls).

Drill policies are JSON documents (``core.drill``); they attach to an
application, a service or a partition and are inherited downwards as backup
policies are. A drill is started by its schedule or on demand, runs on an agent
and is read back with its measured RTO, achieved RPO and validator results.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from safehold.api.deps import AdminDep, CtxDep, JsonBody, OperatorDep, ReaderDep
from safehold.core.policy import EntityRef, PolicyError
from safehold.service import alerts, drills, report

router = APIRouter(prefix="/safehold", tags=["Drills"])


class EntityBody(BaseModel):
    """Exactly one of an application name, a service name or a partition id."""

    model_config = ConfigDict(extra="forbid")
    ApplicationName: str | None = Field(None, examples=["fabric:/Shop"])
    ServiceName: str | None = Field(None, examples=["fabric:/Shop/Orders"])
    PartitionId: str | None = None

    def entity(self) -> EntityRef:
        """The entity named, or a 400."""
        given = [
            EntityRef(kind, key)  # type: ignore[arg-type]
            for kind, key in (
                ("Application", self.ApplicationName),
                ("Service", self.ServiceName),
                ("Partition", self.PartitionId),
            )
            if key
        ]
        if len(given) != 1:
            raise PolicyError("give exactly one of ApplicationName, ServiceName, PartitionId")
        return given[0]


class DrillRequest(BaseModel):
    """An on-demand drill: the partition's drill policy (or ``Policy``), its latest backup
    (or ``BackupId``)."""

    model_config = ConfigDict(extra="forbid")
    Policy: str | None = None
    BackupId: str | None = None


@router.post("/drills/policies", status_code=201)
def create_drill_policy(ctx: CtxDep, _p: AdminDep, body: JsonBody) -> dict[str, Any]:
    """Create a drill policy (409 if the name is taken)."""
    return drills.create_policy(ctx, body).to_json()


@router.get("/drills/policies")
def list_drill_policies(ctx: CtxDep, _p: ReaderDep) -> list[dict[str, Any]]:
    """Every drill policy."""
    return drills.list_policies(ctx)


@router.get("/drills/policies/{name}")
def get_drill_policy(ctx: CtxDep, _p: ReaderDep, name: str) -> dict[str, Any]:
    """One drill policy and where it is attached."""
    return drills.get_policy(ctx, name)


@router.put("/drills/policies/{name}")
def update_drill_policy(ctx: CtxDep, _p: AdminDep, name: str, body: JsonBody) -> dict[str, Any]:
    """Replace a drill policy."""
    return drills.update_policy(ctx, name, body).to_json()


@router.delete("/drills/policies/{name}", status_code=204)
def delete_drill_policy(ctx: CtxDep, _p: AdminDep, name: str) -> None:
    """Delete a drill policy that is attached nowhere (409 otherwise)."""
    drills.delete_policy(ctx, name)


@router.post("/drills/policies/{name}/$/Attach", status_code=204)
def attach(ctx: CtxDep, _p: AdminDep, name: str, body: EntityBody) -> None:
    """Attach the drill policy to an application, a service or a partition."""
    drills.attach(ctx, body.entity(), name)


@router.post("/drills/$/Detach", status_code=204)
def detach(ctx: CtxDep, _p: AdminDep, body: EntityBody) -> None:
    """Detach the drill policy attached directly to an entity."""
    drills.detach(ctx, body.entity())


@router.post("/partitions/{partition_id}/drills", status_code=202)
def run_drill(
    ctx: CtxDep, _p: OperatorDep, partition_id: str, body: DrillRequest | None = None
) -> dict[str, Any]:
    """Start a drill of the partition now; poll ``GET /safehold/drills/{DrillId}``."""
    req = body or DrillRequest()
    run = drills.request_drill(ctx, partition_id, policy_name=req.Policy, backup_id=req.BackupId)
    return run.to_json()


@router.get("/partitions/{partition_id}/drills")
def partition_history(
    ctx: CtxDep,
    _p: ReaderDep,
    partition_id: str,
    limit: Annotated[int, Query(ge=1, le=drills.MAX_HISTORY)] = 30,
) -> list[dict[str, Any]]:
    """The partition's drills, newest first."""
    return [r.to_json() for r in drills.history(ctx, partition_id, limit)]


@router.get("/drills")
def all_history(
    ctx: CtxDep,
    _p: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=drills.MAX_HISTORY)] = 100,
) -> list[dict[str, Any]]:
    """Every partition's drills, newest first."""
    return [r.to_json() for r in drills.history(ctx, None, limit)]


@router.get("/drills/{drill_id}")
def show_drill(ctx: CtxDep, _p: ReaderDep, drill_id: str) -> dict[str, Any]:
    """One drill: its state, the backup it restored, RTO, RPO, each validator's result."""
    return drills.get_drill(ctx, drill_id).to_json()


@router.get("/alerts", tags=["Alerts"])
def list_alerts(
    ctx: CtxDep, _p: ReaderDep, firing: Annotated[bool, Query()] = False
) -> list[dict[str, Any]]:
    """Alerts, firing first (``firing=true``: only those), with their delivery state."""
    return alerts.list_alerts(ctx, firing_only=firing)


_MEDIA = {"json": "application/json", "markdown": "text/markdown", "html": "text/html"}


@router.get("/report", response_class=Response)
def recoverability_report(
    ctx: CtxDep,
    _p: ReaderDep,
    format: Annotated[str, Query(pattern="^(json|markdown|html)$")] = "json",
) -> Response:
    """
    The recoverability report: per partition, RPO and RTO objectives against the RPO
    its schedule allows, the RPO and RTO last measured, and the trend of the last 30
    drills; partitions short of an objective first. ``format``: json, markdown, html.
    """
    text = report.render(report.build_report(ctx), format)  # type: ignore[arg-type]
    return Response(text, media_type=f"{_MEDIA[format]}; charset=utf-8")
