"""
The console's actions (POST only): sign in and out, policies, protection, backup, restore.

Every action but sign-in declares ``FormDep`` (which checks the CSRF token) and
the role the API asks for the same operation. After an action the browser is
redirected (303) to a page that shows the outcome; an error of the service
(SF's validation message, a conflict) comes back beside the form or as a note.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from safehold.core.errors import SafeholdError
from safehold.core.policy import EntityRef, PolicyError
from safehold.service import jobs, policies, protection
from safehold.web.auth import COOKIE, SESSION_SECONDS
from safehold.web.common import AdminDep, FormDep, OperatorDep, render, sessions
from safehold.web.forms import field_of, policy_from_form, stored_secrets

router = APIRouter(prefix="/console", include_in_schema=False)

KINDS = ("Application", "Service", "Partition")


def _back(
    request: Request, name: str, *, flash: str = "", error: str = "", **params: str
) -> Response:
    url = request.url_for(name, **params)
    query = {k: v for k, v in (("flash", flash), ("error", error)) if v}
    return RedirectResponse(url.include_query_params(**query) if query else url, status_code=303)


@router.post("/login", response_model=None)
async def login(request: Request) -> HTMLResponse | RedirectResponse:
    """Exchange an API token for a session cookie."""
    from safehold.web.forms import parse_form

    form = parse_form(await request.body())
    signed = sessions(request).sign_in(request.app.state.tokens, form.get("token", ""))
    if signed is None:
        return render(request, "login.html", None, status_code=401, error="that token is not valid")
    cookie, _session = signed
    response = RedirectResponse(request.url_for("overview_page"), status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=SESSION_SECONDS,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout(request: Request, _form: FormDep) -> Response:
    """Forget the session and clear the cookie."""
    sessions(request).sign_out(request.cookies.get(COOKIE))
    response = RedirectResponse(request.url_for("login_page"), status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


def _policy_error(
    request: Request,
    session: AdminDep,
    form: dict[str, str],
    exc: SafeholdError,
    editing: bool,
    secrets: set[str],
) -> HTMLResponse:
    field = field_of(exc.message) if isinstance(exc, PolicyError) else None
    errors = {field or "_form": exc.message}
    return render(
        request,
        "policy_form.html",
        session,
        status_code=exc.http_status,
        form=form,
        errors=errors,
        editing=editing,
        secrets=secrets,
        page="policies",
    )


@router.post("/policies/new", response_model=None)
def create_policy(request: Request, session: AdminDep, form: FormDep) -> Response:
    """Create a policy; SF's validation error comes back beside its field."""
    ctx = request.app.state.ctx
    try:
        policies.create_policy(
            ctx,
            policy_from_form(form, editing=False),
            validate_connection=form.get("ValidateConnection") == "on",
        )
    except SafeholdError as exc:
        return _policy_error(request, session, form, exc, False, set())
    return _back(request, "policies_page", flash=f"policy {form.get('Name', '').strip()} created")


@router.post("/policies/{name}", response_model=None)
def update_policy(request: Request, session: AdminDep, form: FormDep, name: str) -> Response:
    """Replace a policy; secrets left empty keep their stored value."""
    ctx = request.app.state.ctx
    try:
        secrets = stored_secrets(policies.get_policy(ctx, name))
        policies.update_policy(
            ctx,
            name,
            policy_from_form(form, editing=True),
            validate_connection=form.get("ValidateConnection") == "on",
        )
    except SafeholdError as exc:
        return _policy_error(request, session, form, exc, True, secrets)
    return _back(request, "policies_page", flash=f"policy {name} saved")


def _entity(kind: str, key: str) -> EntityRef:
    if kind not in KINDS:
        raise PolicyError(f"unknown kind {kind!r}")
    if kind == "Partition":
        return EntityRef("Partition", key.lower())
    if not key.startswith("fabric:/"):
        raise PolicyError(f"{key!r} is not a name such as fabric:/Shop")
    return EntityRef(kind, key)  # type: ignore[arg-type]


@router.post("/entities/{kind}/{action}")
def protect(
    request: Request,
    _session: OperatorDep,
    form: FormDep,
    kind: str,
    action: str,
    key: Annotated[str, Query(max_length=600)],
) -> Response:
    """Enable, disable (optionally cleaning the backups), suspend or resume an entity."""
    ctx = request.app.state.ctx
    back = form.get("back") or str(request.url_for("tree_page"))
    if not back.startswith("/console/"):
        back = str(request.url_for("tree_page"))
    try:
        entity = _entity(kind, key)
        if action == "enable":
            protection.enable_backup(ctx, entity, form.get("policy", ""))
            note = f"backup enabled on {key} with {form.get('policy')}"
        elif action == "disable":
            clean = form.get("clean") == "on"
            if clean and form.get("confirm_name", "").strip() != key:
                raise PolicyError(f"to delete the backups too, type {key} to confirm")
            jobs.disable_backup_and_clean(ctx, entity, clean=clean)
            note = f"backup disabled on {key}" + (
                ", its backups are being deleted" if clean else ""
            )
        elif action == "suspend":
            protection.suspend_backup(ctx, entity)
            note = f"backup suspended on {key}"
        elif action == "resume":
            protection.resume_backup(ctx, entity)
            note = f"backup resumed on {key}"
        else:
            raise PolicyError(f"unknown action {action!r}")
    except SafeholdError as exc:
        return RedirectResponse(_with(back, "error", exc.message), status_code=303)
    return RedirectResponse(_with(back, "flash", note), status_code=303)


def _with(url: str, name: str, value: str) -> str:
    from urllib.parse import urlencode

    base = url.split("?", 1)[0] if name in url else url
    return f"{base}{'&' if '?' in base else '?'}{urlencode({name: value})}"


@router.post("/partitions/{partition_id}/backup")
def backup(request: Request, _session: OperatorDep, form: FormDep, partition_id: str) -> Response:
    """Start an on-demand backup (full, or incremental to continue the chain)."""
    ctx = request.app.state.ctx
    try:
        jobs.request_backup(
            ctx,
            partition_id,
            storage_doc=None,
            timeout_minutes=10,
            incremental=form.get("type") == "Incremental",
        )
    except SafeholdError as exc:
        return _back(request, "partition_page", error=exc.message, partition_id=partition_id)
    return _back(request, "partition_page", flash="backup started", partition_id=partition_id)


@router.post("/partitions/{partition_id}/restore")
def restore(request: Request, _session: OperatorDep, form: FormDep, partition_id: str) -> Response:
    """Start the restore the operator confirmed, of exactly the backup named there."""
    ctx = request.app.state.ctx
    try:
        if form.get("confirm") != "on":
            raise PolicyError("tick the box to confirm that the partition's data is overwritten")
        jobs.request_restore(
            ctx,
            partition_id,
            {
                "BackupId": form.get("BackupId", ""),
                "BackupLocation": form.get("BackupLocation", ""),
            },
            timeout_minutes=10,
        )
    except SafeholdError as exc:
        return _back(request, "partition_page", error=exc.message, partition_id=partition_id)
    return _back(request, "partition_page", flash="restore started", partition_id=partition_id)
