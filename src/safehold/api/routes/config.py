"""
Configuration backup and restore, API Management style.

``POST /safehold/config/$/Backup`` (or ``$/Restore``) with ``{"Storage", "BackupName"}``
answers 202 Accepted with a ``Location`` header; ``GET`` on that location
answers 202 while the operation runs and 200 when it is done (``Status``
``Succeeded`` or ``Failed`` with an ``Error``).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from safehold.api.deps import AdminDep, CtxDep, JsonBody
from safehold.service import config_backup

router = APIRouter(prefix="/safehold/config", tags=["Configuration"])


def _accepted(op_id: str) -> JSONResponse:
    location = f"/safehold/config/operations/{op_id}"
    return JSONResponse(
        status_code=202,
        content={"Id": op_id, "Status": "InProgress"},
        headers={"Location": location, "Retry-After": "1"},
    )


@router.post("/$/Backup", status_code=202)
def backup_configuration(ctx: CtxDep, _p: AdminDep, body: JsonBody) -> JSONResponse:
    """Start backing up policies, registrations, mappings and suspensions to a named blob."""
    return _accepted(config_backup.start_config_backup(ctx, body))


@router.post("/$/Restore", status_code=202)
def restore_configuration(ctx: CtxDep, _p: AdminDep, body: JsonBody) -> JSONResponse:
    """Start replacing the configuration with the newest backup of that name."""
    return _accepted(config_backup.start_config_restore(ctx, body))


@router.get("/operations/{op_id}")
def get_configuration_operation(ctx: CtxDep, _p: AdminDep, op_id: str) -> JSONResponse:
    """202 while the operation runs, 200 when it is done."""
    status = config_backup.operation_status(ctx, op_id)
    if status["Status"] == "InProgress":
        return JSONResponse(
            status_code=202,
            content=status,
            headers={"Location": f"/safehold/config/operations/{op_id}", "Retry-After": "1"},
        )
    return JSONResponse(status_code=200, content=status)
