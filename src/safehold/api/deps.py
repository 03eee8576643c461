"""
Dependencies of the routes, as ``Annotated`` aliases.

Authentication: ``Authorization: Bearer <token>``, or else a client certificate
verified by TLS and known to ``api.certauth`` (as SF clusters admit sfctl); each
carries one role, and roles are ordered ``reader < operator < admin``. The
``agent`` role stands apart: it may only call the agent routes (whose work items
carry storage credentials), which admins may call too. Failures raise the
service's ``AuthError``/``Forbidden``, which the one exception handler maps.

The api-version dependency authenticates first, so an unauthenticated request is
401 whatever its api-version (SF's gateway authenticates before anything else),
and it refuses a partition id that is not a GUID with 400 ``E_INVALIDARG``, as
SF's gateway does before the request reaches the Backup Restore Service.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request

from safehold.api import certauth
from safehold.core.policy import PolicyError
from safehold.core.snapshot import parse_time
from safehold.service.context import ServiceContext
from safehold.service.errors import AuthError, Forbidden

__all__ = [
    "AdminDep",
    "AgentDep",
    "ApiVersionDep",
    "CtxDep",
    "FaultsApiVersionDep",
    "JsonBody",
    "OperatorDep",
    "ReaderDep",
    "TokenStore",
    "parse_filter_time",
]

ROLES = ("reader", "operator", "admin")
AGENT = "agent"
MIN_API_VERSION = 6.4  # the Backup Restore Service's (BaseOperation.MinApiVersion)
MIN_FAULTS_API_VERSION = 6.0  # the Fault Analysis Service's, which the SDK and sfctl send
# SF's BaseOperation.ValidateApiVersion: Double.TryParse(api-version) >= minimum, so "6.10"
# is 6.1 (refused) and "7" or "6.40" pass; anything else is refused.
_API_VERSION_RE = re.compile(r"^\s*\d+(\.\d+)?\s*$")
_PRINCIPAL_STATE = "safehold_principal"


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


# The dependencies below only read the request and hash a token: they are
# ``async`` so that FastAPI runs them on the event loop, not each with a hop
# to the thread pool (a claim or a heartbeat would otherwise pay three).


async def get_ctx(request: Request) -> ServiceContext:
    """Return the service context the app was built with."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx


CtxDep = Annotated[ServiceContext, Depends(get_ctx)]


def authenticate(request: Request) -> Principal:
    """
    Return who is calling: a bearer token's principal, else a client certificate's.

    Raises:
        AuthError: no credential, or one that is not valid.
    """
    cached = request.scope.get(_PRINCIPAL_STATE)
    if isinstance(cached, Principal):
        return cached
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("an API token is required: send 'Authorization: Bearer <token>'")
        store: TokenStore = request.app.state.tokens
        principal = store.check(token.strip())
        if principal is None:
            raise AuthError("the API token is not valid")
    else:
        principal = _certificate_principal(request)
    request.scope[_PRINCIPAL_STATE] = principal
    return principal


def _certificate_principal(request: Request) -> Principal:
    roles: certauth.ClientCertRoles | None = getattr(request.app.state, "client_certs", None)
    der = certauth.peer_certificate(request.scope.get("state") or {})
    if der is None or not roles:
        raise AuthError(
            "an API token or a client certificate is required: send 'Authorization: Bearer "
            "<token>', or connect over TLS with a certificate"
        )
    identity = roles.check(der)
    if identity is None:
        raise AuthError("the client certificate is not allowed on this controller")
    return Principal(identity.role, identity.fingerprint)


def require(role: str) -> Callable[[Request], Awaitable[Principal]]:
    """Return a dependency that admits tokens or certificates of *role* or higher."""

    async def check(request: Request) -> Principal:
        principal = authenticate(request)
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


def check_api_version(version: str | None, minimum: float) -> str:
    """
    Check an ``api-version`` as SF does: a number (6.4, 7, 6.40) at least *minimum*.

    Raises:
        PolicyError: missing, not a number (6.4-preview), or below *minimum* (6.10 is 6.1).
    """
    if version is None:
        raise PolicyError(f"the api-version query parameter is required (use {minimum})")
    if not _API_VERSION_RE.match(version) or float(version) < minimum:
        raise PolicyError(f"api-version {version!r} is not supported: use {minimum} or later")
    return version


def check_path_ids(request: Request) -> None:
    """Refuse a ``partition_id`` path parameter that is not a GUID (400, as SF's gateway)."""
    pid = request.path_params.get("partition_id")
    if pid is None:
        return
    try:
        uuid.UUID(pid)
    except ValueError as exc:
        raise PolicyError(f"partition id {pid!r} is not a GUID") from exc


async def api_version(
    request: Request, version: Annotated[str | None, Query(alias="api-version")] = None
) -> str:
    """Authenticate, then check the partition id and the ``api-version`` (6.4 or later)."""
    authenticate(request)
    check_path_ids(request)
    return check_api_version(version, MIN_API_VERSION)


async def faults_api_version(
    request: Request, version: Annotated[str | None, Query(alias="api-version")] = None
) -> str:
    """As ``api_version``, for the Fault Analysis Service's routes (6.0 or later)."""
    authenticate(request)
    check_path_ids(request)
    return check_api_version(version, MIN_FAULTS_API_VERSION)


ApiVersionDep = Annotated[str, Depends(api_version)]
FaultsApiVersionDep = Annotated[str, Depends(faults_api_version)]


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
