"""
The console's pages (GET only: nothing here changes anything).

Each page reads through the service layer: ``service.views`` for the paged
lists and the overview, the use cases for one policy or one partition.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from safehold.core.errors import SafeholdError
from safehold.core.policy import EntityRef, PolicyError
from safehold.core.snapshot import parse_time
from safehold.service import drills, health, jobs, partitions, policies, protection, views
from safehold.service.model import ACTIVE_STATES, BackupRecord
from safehold.web.auth import COOKIE
from safehold.web.common import OperatorDep, Viewer, render, sessions
from safehold.web.forms import form_from_policy, stored_secrets

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE_SIZE = 50


@router.get("/login")
def login_page(request: Request) -> HTMLResponse:
    """The sign-in form (a token)."""
    session = sessions(request).get(request.cookies.get(COOKIE))
    return render(request, "login.html", session)


ACTIVITY_TTL = 30.0  # seconds: an hourly chart may be this stale; it saves a scan of the jobs


def _activity(request: Request) -> views.Activity:
    state = request.app.state
    ttl = float(getattr(state, "console_activity_ttl", ACTIVITY_TTL))
    cached: tuple[float, views.Activity] | None = getattr(state, "console_activity", None)
    if cached is not None and time.monotonic() - cached[0] < ttl:
        return cached[1]
    past = getattr(state, "console_activity_hours", None)
    if past is None:
        past = state.console_activity_hours = {}
    act = views.activity(request.app.state.ctx, past=past)
    request.app.state.console_activity = (time.monotonic(), act)
    return act


@router.get("/activity")
def activity_fragment(request: Request, session: Viewer) -> HTMLResponse:
    """The overview's chart of the jobs finished in the last 24 hours (loaded by htmx)."""
    act = _activity(request)
    top = max([1, *(a + b for a, b in zip(act.succeeded, act.failed, strict=True))])
    bars = [
        {"hour": h, "ok": a, "failed": b, "ok_h": 100 * a / top, "failed_h": 100 * b / top}
        for h, a, b in zip(act.hours, act.succeeded, act.failed, strict=True)
    ]
    return render(
        request,
        "_activity.html",
        session,
        bars=bars,
        top=top,
        total_ok=sum(act.succeeded),
        total_failed=sum(act.failed),
    )


@router.get("/policies")
def policies_page(request: Request, session: Viewer) -> HTMLResponse:
    """Every policy (secrets redacted) and where it is enabled."""
    ctx = request.app.state.ctx
    items = policies.list_policies(ctx)
    return render(request, "policies.html", session, policies=items, page="policies")


@router.get("/policies/new")
def new_policy_page(request: Request, session: Viewer) -> HTMLResponse:
    """The form for a new policy (admins only may submit it)."""
    form = {
        "ScheduleKind": "FrequencyBased",
        "StorageKind": "FileShare",
        "MaxIncrementalBackups": "0",
    }
    return render(
        request,
        "policy_form.html",
        session,
        form=form,
        errors={},
        editing=False,
        secrets=set(),
        page="policies",
    )


@router.get("/policies/{name}")
def policy_page(request: Request, session: Viewer, name: str) -> HTMLResponse:
    """One policy: the edit form (read-only for readers and operators)."""
    ctx = request.app.state.ctx
    doc = policies.get_policy(ctx, name)
    entities = policies.enabled_entities(ctx, name)
    return render(
        request,
        "policy_form.html",
        session,
        form=form_from_policy(doc),
        errors={},
        editing=True,
        secrets=stored_secrets(doc),
        entities=entities,
        page="policies",
    )


@router.get("/tree")
def tree_page(
    request: Request,
    session: Viewer,
    q: Annotated[str, Query(max_length=200)] = "",
    page_no: Annotated[int, Query(alias="page", ge=1)] = 1,
) -> HTMLResponse:
    """Applications → services → partitions, paged and filtered on the server."""
    ctx = request.app.state.ctx
    rows, total, entities = views.partition_page(
        ctx, query=q, offset=(page_no - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    groups: dict[str, dict[str, list[views.PartitionRow]]] = {}
    for r in rows:
        groups.setdefault(r.application, {}).setdefault(r.service, []).append(r)
    policy_names = [p["Name"] for p in policies.list_policies(ctx)]
    return render(
        request,
        "tree.html",
        session,
        groups=groups,
        entities={e.key: c for e, c in entities.items()},
        total=total,
        q=q,
        page_no=page_no,
        pages=max(1, -(-total // PAGE_SIZE)),
        policy_names=policy_names,
        now=ctx.clock(),
        page="tree",
    )


def _chains(backups: list[BackupRecord]) -> list[dict[str, Any]]:
    """Group backups into their chains (a full and its incrementals), newest first."""
    chains: dict[str, list[BackupRecord]] = {}
    for b in backups:
        chains.setdefault(b.chain_id, []).append(b)
    out: list[dict[str, Any]] = [
        {"id": cid, "backups": list(reversed(items))} for cid, items in chains.items()
    ]
    out.sort(key=lambda c: c["backups"][0].created_at, reverse=True)
    return out


@router.get("/partitions/{partition_id}")
def partition_page(request: Request, session: Viewer, partition_id: str) -> HTMLResponse:
    """A partition: backups by chain, live progress, backup and restore, job history."""
    ctx = request.app.state.ctx
    p = partitions.find_partition(ctx, partition_id)
    backups = jobs.list_backups(
        ctx, EntityRef("Partition", p.partition_id), start=None, end=None, latest=False
    )
    history = [views.job_json(j) for j in views.job_history(ctx, p.partition_id)]
    active = [j for j in history if j["state"] in ACTIVE_STATES]
    try:
        info = protection.config_info(ctx, EntityRef("Partition", p.partition_id))[0]
    except SafeholdError:
        info = None
    state = health.health_of(ctx, p.partition_id)
    drill_runs = drills.history(ctx, p.partition_id, 5)
    return render(
        request,
        "partition.html",
        session,
        p=p,
        chains=_chains(backups),
        backups=backups,
        history=history,
        active=active,
        info=info,
        health=state,
        drill_runs=drill_runs,
        now=ctx.clock(),
        page="tree",
    )


@router.get("/partitions/{partition_id}/progress")
def progress_fragment(
    request: Request, session: Viewer, partition_id: str, polling: bool = False
) -> Response:
    """The live part of a partition page; sends htmx back to the page when a job ends."""
    ctx = request.app.state.ctx
    history = [views.job_json(j) for j in views.job_history(ctx, partition_id, limit=5)]
    active = [j for j in history if j["state"] in ACTIVE_STATES]
    if polling and not active:
        # The job ended: reload the page (without the note that started it) to show the outcome.
        page = request.url_for("partition_page", partition_id=partition_id).path
        return Response(status_code=200, headers={"HX-Redirect": page})
    return render(request, "_progress.html", session, active=active, partition_id=partition_id)


def _restore_choice(
    backups: list[BackupRecord], mode: str, backup_id: str, at: str
) -> BackupRecord:
    if not backups:
        raise PolicyError("this partition has no backup to restore")
    if mode == "latest":
        return backups[-1]
    if mode == "backup":
        for b in backups:
            if b.backup_id == backup_id:
                return b
        raise PolicyError("choose one of the partition's backups")
    if mode == "time":
        try:
            when: datetime = parse_time(at if at.endswith("Z") or "+" in at else at + "Z")
        except ValueError as exc:
            raise PolicyError(f"{at!r} is not a date and time such as 2026-01-05T12:00") from exc
        earlier = [b for b in backups if b.created_at <= when]
        if not earlier:
            raise PolicyError(f"no backup was taken at or before {at}")
        return earlier[-1]
    raise PolicyError("choose the latest backup, one backup, or a point in time")


@router.get("/partitions/{partition_id}/restore", response_model=None)
def restore_confirm_page(
    request: Request,
    session: OperatorDep,
    partition_id: str,
    mode: str = "latest",
    backup: str = "",
    at: str = "",
) -> HTMLResponse | RedirectResponse:
    """Name the backup that will be restored and what it overwrites; ask to confirm."""
    ctx = request.app.state.ctx
    p = partitions.find_partition(ctx, partition_id)
    backups = jobs.list_backups(
        ctx, EntityRef("Partition", p.partition_id), start=None, end=None, latest=False
    )
    try:
        chosen = _restore_choice(backups, mode, backup, at)
    except PolicyError as exc:
        return RedirectResponse(
            request.url_for("partition_page", partition_id=p.partition_id).include_query_params(
                error=exc.message
            ),
            status_code=303,
        )
    target = p.restore_to or p.source
    return render(
        request, "restore_confirm.html", session, p=p, b=chosen, target=target, page="tree"
    )


@router.get("/entities/{kind}/disable")
def disable_confirm_page(
    request: Request, session: OperatorDep, kind: str, key: str
) -> HTMLResponse:
    """Ask to confirm disabling backup, and whether to delete the backups too."""
    return render(request, "disable_confirm.html", session, kind=kind, key=key, page="tree")


@router.get("/agents")
def agents_page(request: Request, session: Viewer) -> HTMLResponse:
    """The agents: last heartbeat, alive or lost, their running jobs."""
    return render(
        request,
        "agents.html",
        session,
        agents=jobs.list_agents(request.app.state.ctx),
        page="agents",
    )
