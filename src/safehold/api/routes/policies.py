"""Backup policies: ``/BackupRestore/BackupPolicies`` (SF api-version 6.4)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from safehold.api import sf_render
from safehold.api.deps import (
    AdminDep,
    ApiVersionDep,
    CtxDep,
    JsonBody,
    ReaderDep,
    parse_filter_time,
)
from safehold.api.paging import page
from safehold.core.policy import PolicyError
from safehold.service import jobs, policies

router = APIRouter(prefix="/BackupRestore", tags=["BackupPolicies"])

TokenQ = Annotated[str | None, Query(alias="ContinuationToken")]
MaxQ = Annotated[int | None, Query(alias="MaxResults")]
ValidateQ = Annotated[bool, Query(alias="ValidateConnection")]


@router.post("/BackupPolicies/$/Create", status_code=201)
def create_backup_policy(
    ctx: CtxDep, _v: ApiVersionDep, _p: AdminDep, body: JsonBody, validate: ValidateQ = False
) -> Response:
    """Create a backup policy (201); 409 if the name exists; ValidateConnection tries it."""
    policies.create_policy(ctx, body, validate_connection=validate)
    return Response(status_code=201)


@router.post("/BackupPolicies/{name}/$/Update")
def update_backup_policy(
    ctx: CtxDep,
    _v: ApiVersionDep,
    _p: AdminDep,
    name: str,
    body: JsonBody,
    validate: ValidateQ = False,
) -> Response:
    """Replace a backup policy; secrets sent as ``****`` keep their stored value."""
    policies.update_policy(ctx, name, body, validate_connection=validate)
    return Response(status_code=200)


@router.post("/BackupPolicies/{name}/$/Delete")
def delete_backup_policy(ctx: CtxDep, _v: ApiVersionDep, _p: AdminDep, name: str) -> Response:
    """Delete a policy that no entity uses; 400 FABRIC_E_BACKUP_IS_ENABLED otherwise."""
    policies.delete_policy(ctx, name)
    return Response(status_code=200)


@router.get("/BackupPolicies")
def get_backup_policy_list(
    ctx: CtxDep, _v: ApiVersionDep, _p: ReaderDep, token: TokenQ = None, max_results: MaxQ = None
) -> dict[str, Any]:
    """List the policies (secrets redacted)."""
    return page(policies.list_policies(ctx), token, max_results)


@router.get("/BackupPolicies/{name}")
def get_backup_policy_by_name(
    ctx: CtxDep, _v: ApiVersionDep, _p: ReaderDep, name: str
) -> dict[str, Any]:
    """Return one policy (secrets redacted)."""
    return policies.get_policy(ctx, name)


@router.get("/BackupPolicies/{name}/$/GetBackupEnabledEntities")
def get_backup_enabled_entities(
    ctx: CtxDep,
    _v: ApiVersionDep,
    _p: ReaderDep,
    name: str,
    token: TokenQ = None,
    max_results: MaxQ = None,
) -> dict[str, Any]:
    """List the entities the policy is enabled on."""
    entities = [sf_render.entity_json(e) for e in policies.enabled_entities(ctx, name)]
    return page(entities, token, max_results)


@router.post("/$/GetBackups")
def get_backups_from_backup_location(
    ctx: CtxDep,
    _v: ApiVersionDep,
    _p: ReaderDep,
    body: JsonBody,
    token: TokenQ = None,
    max_results: MaxQ = None,
) -> dict[str, Any]:
    """List backups straight from a storage, with no catalog (for rebuilding a controller)."""
    if not isinstance(body, dict):
        raise PolicyError("the body must be an object with Storage and BackupEntity")
    items = jobs.storage_backups(
        ctx,
        body.get("Storage"),
        jobs.entity_from_json(body.get("BackupEntity")),
        start=parse_filter_time(body.get("StartDateTimeFilter"), "StartDateTimeFilter"),
        end=parse_filter_time(body.get("EndDateTimeFilter"), "EndDateTimeFilter"),
        latest=bool(body.get("Latest", False)),
    )
    return page([sf_render.backup_info(b) for b in items], token, max_results)
