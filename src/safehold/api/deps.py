"""
Dependencies of the routes, as ``Annotated`` aliases.

Authentication: ``Authorization: Bearer <token>``; each token carries one role,
and roles are ordered ``reader < operator < admin``. The ``agent`` role stands
apart: it may only call the agent routes (whose work items carry storage
credentials), which admins may call too. Failures raise the service's
``AuthError``/``Forbidden``, which the one exception handler maps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request

from safehold.core.policy import PolicyError
from safehold.core.snapshot import parse_time
from safehold.service.context import ServiceContext
from safehold.service.errors import AuthError, Forbidden

__all__ = [
    "AdminDep",
    "AgentDep",
    "ApiVersionDep",
    "CtxDep",
    "JsonBody",
    "OperatorDep",
    "ReaderDep",
    "TokenStore",
    "parse_filter_time",
]

ROLES = ("reader", "operator", "admin")
AGENT = "agent"
MIN_API_VERSION = (6, 4)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's role and a short fingerprint of it (for logs)."""

    role: str
    fingerprint: str


class TokenStore:
    """API tokens and their roles; only the tokens' SHA-256 digests are kept."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        for role in tokens.values():
            if role not in (*ROLES, AGENT):
                raise PolicyError(f"unknown role {role!r}: use one of {', '.join(ROLES)}, {AGENT}")
        self._digests = {hashlib.sha256(t.encode()).digest(): r for t, r in tokens.items()}

    def check(self, token: str) -> Principal | None:
        """Return the principal for *token*, or ``None``."""
        digest = hashlib.sha256(token.encode()).digest()
        for known, role in self._digests.items():
            if hmac.compare_digest(known, digest):
                return Principal(role, digest.hex()[:8])
        return None


def get_ctx(request: Request) -> ServiceContext:
    """Return the service context the app was built with."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx


CtxDep = Annotated[ServiceContext, Depends(get_ctx)]


def require(role: str) -> Callable[[Request], Principal]:
    """Return a dependency that admits tokens of *role* or higher."""

    def check(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("an API token is required: send 'Authorization: Bearer <token>'")
        store: TokenStore = request.app.state.tokens
        principal = store.check(token.strip())
        if principal is None:
            raise AuthError("the API token is not valid")
        if role == AGENT:
            allowed = principal.role in (AGENT, "admin")
        else:
            allowed = principal.role in ROLES and ROLES.index(principal.role) >= ROLES.index(role)
        if not allowed:
            raise Forbidden(f"this needs the {role} role; the token has {principal.role}")
        return principal

    return check


ReaderDep = Annotated[Principal, Depends(require("reader"))]
OperatorDep = Annotated[Principal, Depends(require("operator"))]
AdminDep = Annotated[Principal, Depends(require("admin"))]
AgentDep = Annotated[Principal, Depends(require(AGENT))]


def api_version(version: Annotated[str | None, Query(alias="api-version")] = None) -> str:
    """Check the ``api-version`` query parameter (6.4 or later)."""
    if version is None:
        raise PolicyError("the api-version query parameter is required (use 6.4)")
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError as exc:
        raise PolicyError(f"api-version {version!r} is not a version such as 6.4") from exc
    if (major, minor) < MIN_API_VERSION:
        raise PolicyError(f"api-version {version} is not supported: use 6.4 or later")
    return version


ApiVersionDep = Annotated[str, Depends(api_version)]


async def json_body(request: Request) -> Any:
    """Return the request's JSON body (``None`` when empty); malformed JSON is a 400."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PolicyError(f"the request body is not valid JSON: {exc}") from exc


JsonBody = Annotated[Any, Depends(json_body)]


def parse_filter_time(value: str | None, name: str) -> datetime | None:
    """Parse an ISO 8601 date-time query parameter."""
    if value is None or value == "":
        return None
    try:
        t = parse_time(value)
    except ValueError as exc:
        raise PolicyError(f"{name} {value!r} is not an ISO 8601 date-time") from exc
    return t
