"""
The console's sign-in: an API token exchanged for a session cookie, and CSRF tokens.

A session is a random 256-bit value sent as the cookie ``safehold_session``
(HttpOnly, SameSite=Strict, Secure when the request came over TLS); only its
SHA-256 digest is kept, in memory, so a restart signs everyone out. Each
session has its own CSRF token, which every form carries as the field ``csrf``
(and htmx as the header ``X-CSRF-Token``); every POST is refused with 403
unless it matches (the synchronizer-token pattern). The console never accepts
``Authorization`` headers, and the REST API never accepts the cookie.

Roles are the API's: ``reader < operator < admin``; the ``agent`` role cannot
sign in, since agents have no business in the console.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "COOKIE",
    "ROLES",
    "ConsoleDenied",
    "LoginRequired",
    "Session",
    "SessionStore",
    "TokenChecker",
    "allows",
]

COOKIE = "safehold_session"
ROLES = ("reader", "operator", "admin")
SESSION_SECONDS = 8 * 3600


class _HasRole(Protocol):
    @property
    def role(self) -> str: ...


class TokenChecker(Protocol):
    """What the console needs of the API's ``TokenStore``: a token's role, or ``None``."""

    def check(self, token: str) -> _HasRole | None: ...


class ConsoleDenied(Exception):
    """A request the console refuses with 403 (wrong role or a bad CSRF token)."""


class LoginRequired(Exception):
    """A page asked for without a valid session: the browser goes to the login page."""


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its role, its CSRF token and when it expires (monotonic)."""

    role: str
    csrf: str
    expires: float


def allows(role: str, needed: str) -> bool:
    """Whether *role* may do what needs *needed* (``reader < operator < admin``)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


class SessionStore:
    """Sessions by the digest of their cookie; thread-safe, bounded by expiry."""

    def __init__(
        self, ttl: float = SESSION_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._sessions: dict[bytes, Session] = {}
        self._lock = threading.Lock()

    def sign_in(self, tokens: TokenChecker, token: str) -> tuple[str, Session] | None:
        """Check *token*; return a new cookie value and its session, or ``None``."""
        principal = tokens.check(token.strip()) if token.strip() else None
        if principal is None or principal.role not in ROLES:
            return None
        cookie = secrets.token_urlsafe(32)
        session = Session(principal.role, secrets.token_urlsafe(32), self._clock() + self._ttl)
        now = self._clock()
        with self._lock:
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
            self._sessions[_digest(cookie)] = session
        return cookie, session

    def get(self, cookie: str | None) -> Session | None:
        """Return the live session of *cookie*, or ``None``."""
        if not cookie:
            return None
        with self._lock:
            session = self._sessions.get(_digest(cookie))
        if session is None or session.expires <= self._clock():
            return None
        return session

    def sign_out(self, cookie: str | None) -> None:
        """Forget the session of *cookie* (if any)."""
        if cookie:
            with self._lock:
                self._sessions.pop(_digest(cookie), None)


def check_csrf(session: Session, sent: str | None) -> None:
    """Raise ``ConsoleDenied`` unless *sent* is the session's CSRF token."""
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise ConsoleDenied("the form's CSRF token is missing or wrong: reload the page")
