"""
What every console route shares: templates, the signed-in session, form bodies, CSRF.

Route functions declare ``Viewer`` (any signed-in role) or one of the role
aliases; a missing session sends the browser to the login page, a role too
low is a 403 page. Unsafe requests declare ``FormDep``, which also checks the
CSRF token before the route runs, so no action can skip it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from safehold.core.snapshot import format_time
from safehold.web.auth import (
    COOKIE,
    ConsoleDenied,
    LoginRequired,
    Session,
    SessionStore,
    allows,
    check_csrf,
)
from safehold.web.forms import parse_form

__all__ = ["AdminDep", "FormDep", "OperatorDep", "Viewer", "render", "sessions"]

HERE = Path(__file__).parent
MAX_FORM_BYTES = 64 * 1024


def _when(value: datetime | None) -> str:
    return format_time(value).replace("T", " ").removesuffix("Z")[:19] if value else "—"


def _age(value: datetime | None, now: datetime) -> str:
    """How long before *now* *value* was, roughly (a recovery point's age)."""
    if value is None:
        return "—"
    seconds = int((now - value).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{max(seconds, 0)} s"


def _span(value: timedelta | float | None) -> str:
    """A duration (or seconds), short: ``42 s``, ``5 min``, ``3 h 20 min``, ``2 d 4 h``."""
    if value is None:
        return "—"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["when"] = _when
templates.env.filters["age"] = _age
templates.env.filters["span"] = _span
templates.env.globals["allows"] = allows


def sessions(request: Request) -> SessionStore:
    """The app's session store (made by ``safehold.web.install``)."""
    store: SessionStore = request.app.state.console_sessions
    return store


def _need(role: str) -> Callable[[Request], Session]:
    def check(request: Request) -> Session:
        session = sessions(request).get(request.cookies.get(COOKIE))
        if session is None:
            raise LoginRequired
        if not allows(session.role, role):
            raise ConsoleDenied(f"this needs the {role} role; you are signed in as {session.role}")
        return session

    return check


Viewer = Annotated[Session, Depends(_need("reader"))]
OperatorDep = Annotated[Session, Depends(_need("operator"))]
AdminDep = Annotated[Session, Depends(_need("admin"))]


async def _form(request: Request) -> dict[str, str]:
    """Parse the form body and check its CSRF token against the session's."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise ConsoleDenied("the form is too large")
    form = parse_form(raw)
    session = sessions(request).get(request.cookies.get(COOKIE))
    if session is None:
        raise LoginRequired
    check_csrf(session, form.get("csrf") or request.headers.get("x-csrf-token"))
    return form


FormDep = Annotated[dict[str, str], Depends(_form)]


def render(
    request: Request,
    template: str,
    session: Session | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render *template* with the session (role, CSRF token) and *context*."""
    context.setdefault("flash", request.query_params.get("flash"))
    context.setdefault("error", request.query_params.get("error"))
    return templates.TemplateResponse(
        request, template, {"session": session, **context}, status_code=status_code
    )
