"""
safehold's own routes for consistency groups (SF has no such calls; ``service.groups``).

A group names member partitions that are backed up as one group at one point
and restored together to one point, with cross-reference validators. Admins
define groups; operators back them up, restore and drill them; readers read.
Backups, restores and drills answer 202 with the job; poll
``GET /safehold/groups/{name}/jobs/{JobId}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from safehold.api.deps import AdminDep, CtxDep, JsonBody, OperatorDep, ReaderDep
from safehold.core.policy import PolicyError
from safehold.service import groups

router = APIRouter(prefix="/safehold/groups", tags=["Consistency groups"])


@router.get("")
def list_groups(ctx: CtxDep, _p: ReaderDep) -> list[dict[str, Any]]:
    """Every consistency group, with its members and newest jobs."""
    return groups.list_groups(ctx)


@router.put("/{name}")
def put_group(ctx: CtxDep, _p: AdminDep, name: str, body: JsonBody) -> dict[str, Any]:
    """
    Create or replace a group: ``{"Members": [partition ids], "Validators": [...],
    "BackupSchedule": {...}, "DrillSchedule": {...}}``. The schedules are optional
    SF ``Schedule`` objects (``FrequencyBased`` with an ``Interval``, or
    ``TimeBased``): the leader then starts the group's backup or drill at each
    slot, as ``POST …/backup`` and ``POST …/drill`` do.

    400 for an unknown partition, a source a group cannot hold (``dir:`` and
    ``postgres:`` only) or a bad schedule (``E_INVALIDARG``); 409 when a member
    is in another group.
    """
    return groups.put_group(ctx, name, body)


@router.get("/{name}")
def get_group(ctx: CtxDep, _p: ReaderDep, name: str) -> dict[str, Any]:
    """
    One group: its members, validators, schedules with their next slots
    (``NextBackupUtc``, ``NextDrillUtc``, and ``ScheduleNotes``: why a slot last
    passed without a job), and its newest backup and restore jobs.
    """
    return groups.get_group(ctx, name)


@router.delete("/{name}", status_code=204)
def delete_group(ctx: CtxDep, _p: AdminDep, name: str) -> None:
    """Forget a group (409 while it has a job); its backups and points stay in storage."""
    groups.delete_group(ctx, name)


def _options(body: object) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise PolicyError("the body is a JSON object")
    return body


@router.post("/{name}/backup", status_code=202)
def backup_group(ctx: CtxDep, _p: OperatorDep, name: str, body: JsonBody) -> dict[str, Any]:
    """
    Back the group up at one point, now: one job on one agent that serves every
    member. Body (optional): ``{"BackupStorage": {...}, "TimeoutMinutes": 60}``.
    """
    opts = _options(body)
    job = groups.request_backup(
        ctx,
        name,
        storage_doc=opts.get("BackupStorage"),
        timeout_minutes=int(opts.get("TimeoutMinutes", 60)),
    )
    return groups.get_job(ctx, name, job.id)


@router.get("/{name}/points")
def list_points(ctx: CtxDep, _p: ReaderDep, name: str) -> list[dict[str, Any]]:
    """The group's points, oldest first, each with every member's backup."""
    return groups.list_points(ctx, name)


@router.post("/{name}/restore", status_code=202)
def restore_group(ctx: CtxDep, _p: OperatorDep, name: str, body: JsonBody) -> dict[str, Any]:
    """
    Restore every member to one point: ``{"Point": PointId}`` or ``{"Time": iso}``
    (the newest point at or before it). Swapped in only if every member came back
    and the validators found nothing.
    """
    job = groups.request_restore(ctx, name, _options(body))
    return groups.get_job(ctx, name, job.id)


@router.post("/{name}/drill", status_code=202)
def drill_group(ctx: CtxDep, _p: OperatorDep, name: str, body: JsonBody) -> dict[str, Any]:
    """
    Restore the group into a sandbox on the agent and run its validators there
    (``{}``: the newest point; or ``{"Point": id}`` / ``{"Time": iso}``).
    """
    job = groups.request_restore(ctx, name, _options(body), drill=True)
    return groups.get_job(ctx, name, job.id)


@router.get("/{name}/jobs/{job_id}")
def get_job(ctx: CtxDep, _p: ReaderDep, name: str, job_id: str) -> dict[str, Any]:
    """One backup, restore or drill job of the group; a finished backup shows its point."""
    return groups.get_job(ctx, name, job_id)
