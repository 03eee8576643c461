"""
The operator console: server-rendered pages under ``/console/``, and local API docs.

``install(app)`` adds it to the API's FastAPI app (one line in ``api/app.py``):
the pages and actions, the static assets, ``/docs`` and ``/redoc`` with local
assets, and a redirect of browsers asking for ``/`` (``Accept: text/html``) to
``/console/``; any other ``GET /`` (sfctl's cluster call) is left to the API.

The console is a layer beside the API: it calls the service layer directly and
never imports ``safehold.api``. It finds the service context and the token
store on ``app.state`` (``ctx`` and ``tokens``), where ``create_app`` puts them.
"""

from __future__ import annotations

import inspect

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from safehold.core.errors import SafeholdError
from safehold.web.auth import COOKIE, ConsoleDenied, LoginRequired, SessionStore
from safehold.web.common import HERE, render, sessions
from safehold.web.docs import install_docs

__all__ = ["install"]


class _BrowserRoot:
    """Send a browser's ``GET /`` to the console; leave every other request alone."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/" and scope["method"] in ("GET", "HEAD"):
            accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
            if "text/html" in accept:
                await RedirectResponse("/console/", status_code=303)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _wants_console(request: Request) -> bool:
    return request.url.path.startswith("/console")


def install(app: FastAPI) -> None:
    """Add the console, its assets, the local API docs and the browser redirect to *app*."""
    from safehold.web import actions, operations, overview, pages

    app.state.console_sessions = SessionStore()
    app.include_router(overview.router)
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.include_router(operations.router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    install_docs(app)
    app.add_middleware(_BrowserRoot)

    @app.exception_handler(LoginRequired)
    async def on_login_required(request: Request, exc: LoginRequired) -> Response:
        del exc
        return RedirectResponse(request.url_for("login_page"), status_code=303)

    @app.exception_handler(ConsoleDenied)
    async def on_denied(request: Request, exc: ConsoleDenied) -> HTMLResponse:
        session = sessions(request).get(request.cookies.get(COOKIE))
        return render(request, "denied.html", session, status_code=403, reason=str(exc))

    previous = app.exception_handlers.get(SafeholdError)

    async def on_console_error(request: Request, exc: Exception) -> Response:
        # Inside the console a service error (not found, bad input) is a page, not JSON.
        if _wants_console(request) and isinstance(exc, SafeholdError):
            session = sessions(request).get(request.cookies.get(COOKIE))
            return render(
                request, "denied.html", session, status_code=exc.http_status, reason=exc.message
            )
        assert previous is not None
        result = previous(request, exc)
        if inspect.isawaitable(result):
            result = await result
        return result

    if previous is not None:
        app.add_exception_handler(SafeholdError, on_console_error)
