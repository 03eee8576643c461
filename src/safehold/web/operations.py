"""
The console's storage-and-keys, configuration-backup and drill pages, and their actions.

- **Keys** (``/console/policies/{name}/keys``): the key generations of the
  repository in a policy's storage (read from the repository) and, for admins,
  "rotate the repository key" behind a confirmation (``service.repo_keys``).
- **Configuration** (``/console/config``): the configuration backup and restore
  operations, the configuration backups found in a policy's storage, and, for
  admins, "back up now" (``service.config_backup``, as ``POST /safehold/config/$/Backup``).
- **Drills** (``/console/drills``): drill policies and where they are attached,
  the newest drill runs with outcome, measured RTO, achieved RPO and validator
  results, and "run drill now" for operators (``service.drills``, the API's roles).

Pages and sections whose work is still running poll themselves with htmx.
The services are used read-only here except through their own use cases.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from safehold.core.errors import SafeholdError
from safehold.core.policy import PolicyError
from safehold.service import config_backup, drills, policies, repo_keys, views
from safehold.service.drill_records import DrillRun
from safehold.web.common import AdminDep, FormDep, OperatorDep, Viewer, render

router = APIRouter(prefix="/console", include_in_schema=False)

RUNS_SHOWN = 50


def _back(
    request: Request, route: str, *, flash: str = "", error: str = "", **params: str
) -> Response:
    """Redirect (303) to *route*; ``name`` is its path parameter, the rest go in the query."""
    url = request.url_for(route, **{k: v for k, v in params.items() if k == "name"})
    query = {k: v for k, v in params.items() if k != "name"}
    query.update({k: v for k, v in (("flash", flash), ("error", error)) if v})
    return RedirectResponse(url.include_query_params(**query) if query else url, status_code=303)


# --- Storage and keys -----------------------------------------------------------------


@router.get("/policies/{name}/keys")
def keys_page(request: Request, session: Viewer, name: str) -> HTMLResponse:
    """A policy's storage and its repository's key generations; rotate for admins."""
    ctx = request.app.state.ctx
    doc = policies.get_policy(ctx, name)  # redacted; 404 if unknown
    keys: repo_keys.KeyRotation | None = None
    problem = None
    try:
        keys = repo_keys.key_generations(ctx, name)
    except SafeholdError as exc:
        problem = exc.message
    return render(
        request, "keys.html", session, policy=doc, keys=keys, problem=problem, page="policies"
    )


@router.post("/policies/{name}/keys/rotate")
def console_rotate_key(request: Request, _session: AdminDep, form: FormDep, name: str) -> Response:
    """Rotate the repository key of the policy's storage, once the admin confirmed it."""
    ctx = request.app.state.ctx
    try:
        if form.get("confirm") != "on":
            raise PolicyError("tick the box to confirm the rotation")
        done = repo_keys.rotate_key(ctx, name)
    except SafeholdError as exc:
        return _back(request, "keys_page", error=exc.message, name=name)
    return _back(
        request,
        "keys_page",
        flash=f"key rotated: new data is written under key generation {done.current}",
        name=name,
    )


# --- Configuration backup ---------------------------------------------------------------


def _config_status(request: Request, policy: str) -> dict[str, Any]:
    ctx = request.app.state.ctx
    ops = views.config_operations(ctx)
    backups, problem = [], None
    if policy:
        try:
            backups = views.config_backups(ctx, policy)
        except SafeholdError as exc:
            problem = exc.message
    return {
        "ops": ops,
        "backups": backups,
        "problem": problem,
        "policy": policy,
        "running": any(o.state == "InProgress" for o in ops),
    }


def _policy_names(request: Request) -> list[str]:
    return [p["Name"] for p in policies.list_policies(request.app.state.ctx)]


@router.get("/config")
def config_page(request: Request, session: Viewer, policy: str = "") -> HTMLResponse:
    """Configuration backups: operations, the backups in a policy's storage, back up now."""
    names = _policy_names(request)
    policy = policy if policy in names else (names[0] if names else "")
    now: datetime = request.app.state.ctx.clock()
    return render(
        request,
        "config.html",
        session,
        names=names,
        default_name=f"config-{now:%Y%m%d-%H%M%S}",
        page="config",
        **_config_status(request, policy),
    )


@router.get("/config/status")
def config_status_fragment(request: Request, session: Viewer, policy: str = "") -> HTMLResponse:
    """The operations and backups alone (polled while an operation runs)."""
    return render(request, "_config_status.html", session, **_config_status(request, policy))


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@router.post("/config/backup")
def console_config_backup(request: Request, _session: AdminDep, form: FormDep) -> Response:
    """Start a configuration backup into the chosen policy's storage."""
    ctx = request.app.state.ctx
    policy, name = form.get("policy", ""), form.get("BackupName", "").strip()
    try:
        if not _NAME_RE.match(name):
            raise PolicyError("the backup name is 1 to 100 letters, digits, '.', '_' or '-'")
        with ctx.uow() as uow:
            storage = policies.load_policy(ctx, uow, policy).storage
        # The storage's secrets go to the use case only; they are never rendered.
        config_backup.start_config_backup(ctx, {"Storage": storage.to_json(), "BackupName": name})
    except SafeholdError as exc:
        return _back(request, "config_page", error=exc.message, policy=policy)
    return _back(
        request, "config_page", flash=f"configuration backup {name} started", policy=policy
    )


# --- Drills --------------------------------------------------------------------------------


def _validators(run: DrillRun) -> list[dict[str, Any]]:
    """Each validator's kind, verdict and detail (not its output, which may be long)."""
    out = []
    for v in run.result.get("Validators", []) or []:
        if isinstance(v, dict):
            verdict = "skipped" if v.get("Skipped") else ("passed" if v.get("Passed") else "failed")
            out.append({"kind": v.get("Kind", "?"), "verdict": verdict, "detail": v.get("Detail")})
    return out


def _runs(request: Request) -> dict[str, Any]:
    runs = drills.history(request.app.state.ctx, None, RUNS_SHOWN)
    return {
        "runs": [{"run": r, "validators": _validators(r)} for r in runs],
        "running": any(not r.finished for r in runs),
    }


@router.get("/drills")
def drills_page(request: Request, session: Viewer) -> HTMLResponse:
    """Drill policies, where they are attached, the newest runs, run a drill now."""
    ctx = request.app.state.ctx
    policies = [drills.get_policy(ctx, p["Name"]) for p in drills.list_policies(ctx)]
    return render(
        request, "drills.html", session, policies=policies, page="drills", **_runs(request)
    )


@router.get("/drills/runs")
def drill_runs_fragment(request: Request, session: Viewer) -> HTMLResponse:
    """The runs table alone (polled while a drill runs)."""
    return render(request, "_drill_runs.html", session, **_runs(request))


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@router.post("/drills/run")
def console_run_drill(request: Request, _session: OperatorDep, form: FormDep) -> Response:
    """Start a drill of one partition now, with the drill policy that applies to it."""
    pid = form.get("partition", "").strip().lower()
    if form.get("back") == "partition" and _is_uuid(pid):
        back = str(request.url_for("partition_page", partition_id=pid).path)
    else:
        back = str(request.url_for("drills_page").path)
    try:
        run = drills.request_drill(request.app.state.ctx, pid)
    except SafeholdError as exc:
        return RedirectResponse(f"{back}?{urlencode({'error': exc.message})}", status_code=303)
    note = f"drill of {run.partition_id} started"
    return RedirectResponse(f"{back}?{urlencode({'flash': note})}", status_code=303)
