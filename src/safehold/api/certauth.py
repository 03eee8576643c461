"""
Client-certificate authentication over TLS, as Service Fabric clusters do it.

SF admits clients by X.509 certificate: ``ClientCertThumbprints`` and
``ClientCertificateCommonNames`` give the read-only *User* role,
``AdminClientCertThumbprints`` and ``AdminClientCertificateCommonNames`` the
*Admin* role. safehold keeps a file of lines ``<role> <thumbprint>`` or
``<role> CN=<common name>`` with its own roles (reader, operator, admin), beside
the bearer tokens; ``sfctl cluster select --pem`` and the SDK's ``session.cert``
then work unchanged.

- The TLS layer (uvicorn with ``ssl_cert_reqs=CERT_OPTIONAL`` and the
  ``--client-ca`` bundle) verifies the chain, so a client without a certificate
  can still use a bearer token. A self-signed client certificate is trusted by
  putting it in that bundle (SF does not check the chain for thumbprints).
- ``ClientCertH11Protocol`` hands the verified peer certificate (DER) to the
  application in the request's ASGI ``state``: uvicorn puts nothing about the
  peer certificate in the scope.
- A thumbprint is SHA-1 over the DER certificate, hex, compared without case,
  spaces or colons, as SF shows it. A common name is compared exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from uvicorn.protocols.http.h11_impl import H11Protocol

from safehold.core.policy import PolicyError

__all__ = [
    "PEER_CERT_STATE",
    "CertIdentity",
    "ClientCertH11Protocol",
    "ClientCertRoles",
    "install",
    "peer_certificate",
    "thumbprint",
    "uvicorn_options",
]

#: The key of the peer certificate (DER bytes) in the request's ASGI state.
PEER_CERT_STATE = "safehold_peer_cert_der"
CERT_ROLES = ("reader", "operator", "admin")
_THUMBPRINT_RE = re.compile(r"^[0-9A-F]{40}$")


@dataclass(frozen=True)
class CertIdentity:
    """A client certificate's role, and a short fingerprint of it (for logs)."""

    role: str
    fingerprint: str


def thumbprint(der: bytes) -> str:
    """Return SF's thumbprint of a DER certificate: SHA-1, upper-case hex."""
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


def _normalize_thumbprint(text: str) -> str:
    return re.sub(r"[\s:]", "", text).upper()


def _common_names(der: bytes) -> list[str]:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return []
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


class ClientCertRoles:
    """Certificate thumbprints and common names, each mapped to one role."""

    def __init__(
        self, thumbprints: Mapping[str, str], common_names: Mapping[str, str] | None = None
    ) -> None:
        self._thumbprints: dict[str, str] = {}
        for tp, role in thumbprints.items():
            norm = _normalize_thumbprint(tp)
            if not _THUMBPRINT_RE.match(norm):
                raise PolicyError(f"{tp!r} is not a certificate thumbprint (40 hex digits)")
            self._thumbprints[norm] = _check_role(role)
        self._names = {cn: _check_role(r) for cn, r in (common_names or {}).items()}

    @classmethod
    def from_file(cls, path: Path) -> ClientCertRoles:
        """
        Read lines ``<role> <thumbprint>`` or ``<role> CN=<common name>``; ``#`` starts a comment.

        Raises:
            PolicyError: a line is malformed or names an unknown role.
        """
        thumbprints: dict[str, str] = {}
        names: dict[str, str] = {}
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            role, _, subject = line.partition(" ")
            subject = subject.strip()
            if not subject:
                raise PolicyError(f"{path}:{number}: expected '<role> <thumbprint>|CN=<name>'")
            if subject.upper().startswith("CN="):
                names[subject[3:].strip()] = role
            else:
                thumbprints[subject] = role
        return cls(thumbprints, names)

    def __bool__(self) -> bool:
        return bool(self._thumbprints or self._names)

    def check(self, der: bytes) -> CertIdentity | None:
        """
        Return the identity of a verified peer certificate, or ``None`` if it has no role.

        A thumbprint match wins over a common-name match; among common names the
        highest role wins.
        """
        tp = thumbprint(der)
        role = self._thumbprints.get(tp)
        if role is None:
            found = [self._names[cn] for cn in _common_names(der) if cn in self._names]
            role = max(found, key=CERT_ROLES.index) if found else None
        return None if role is None else CertIdentity(role, f"cert:{tp[:8]}")


def _check_role(role: str) -> str:
    if role not in CERT_ROLES:
        raise PolicyError(
            f"unknown role {role!r} for a client certificate: use {', '.join(CERT_ROLES)}"
        )
    return role


class ClientCertH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, which also puts the TLS peer certificate in each request's state."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Record the verified peer certificate of this connection, if any."""
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            # app_state is copied into every request's scope["state"]; this copy is
            # this connection's own, so the certificate never leaks to another one.
            self.app_state = {**self.app_state, PEER_CERT_STATE: der}


def peer_certificate(state: Mapping[str, Any]) -> bytes | None:
    """Return the peer certificate (DER) a request's ASGI state carries, if any."""
    der = state.get(PEER_CERT_STATE)
    return der if isinstance(der, bytes) else None


def install(app: Any, roles: ClientCertRoles) -> None:
    """Let *app* admit the certificates of *roles* (``api.deps`` looks them up there)."""
    app.state.client_certs = roles


def uvicorn_options(client_ca: Path) -> dict[str, Any]:
    """
    Return the uvicorn options that ask for (and verify) client certificates.

    Certificates are optional at the TLS level, so bearer tokens keep working.
    """
    if not client_ca.exists():
        raise PolicyError(f"client CA bundle {client_ca} does not exist")
    return {
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
        "ssl_ca_certs": str(client_ca),
        "http": ClientCertH11Protocol,
    }
