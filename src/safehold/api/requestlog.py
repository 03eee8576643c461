"""
Request ids and one log line per request, as pure ASGI middleware.

Each HTTP request gets an id (the caller's ``X-Request-Id`` when it is short and
plain, else a new one), bound with ``core.logctx.bind`` for everything logged
while it is handled (Starlette's thread pool copies the context), and sent back
in the ``X-Request-Id`` header. One line per request is logged at INFO on
``safehold.http``: method, path (never the query string or headers, which may
carry credentials), status and milliseconds; successful polls (agents' claims and
heartbeats, health probes, scrapes) at DEBUG.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from safehold.core import logctx

__all__ = ["RequestLog", "install"]

log = logging.getLogger("safehold.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths polled all the time (agents' claims and heartbeats, probes, scrapes): their
#: successful requests are logged at DEBUG only.
_CHATTY = ("/safehold/agents/", "/healthz", "/metrics")
_GOOD_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestLog:
    """Wraps an ASGI app: binds ``request_id``, logs the request's outcome."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one connection event; only HTTP requests are tagged and logged."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _GOOD_ID.match(given) else uuid.uuid4().hex[:16]
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        with logctx.bind(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                path = str(scope.get("path", ""))
                chatty = status < 400 and path.startswith(_CHATTY)
                log.log(
                    logging.DEBUG if chatty else logging.INFO,
                    "%s %s %d %.1fms",
                    scope.get("method", ""),
                    path,
                    status,
                    (time.perf_counter() - started) * 1000,
                )


def install(app: Any) -> None:
    """Add the middleware to a Starlette/FastAPI *app* (before it starts)."""
    app.add_middleware(RequestLog)
