"""
A controller API over TLS with client certificates, for the SF-compatibility tests.

The certificates are made here: a CA, a server certificate for 127.0.0.1, and
client certificates (one admitted by thumbprint as admin, one by common name as
reader, one the CA signed but no role names, and one from another CA). The app
is the real FastAPI application over a SQLite catalog and the fake engine,
served by uvicorn with ``ssl_cert_reqs`` and safehold's ``ClientCertH11Protocol``.
"""

from __future__ import annotations

import base64
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from safehold.api import certauth
from safehold.api.app import create_app
from safehold.api.deps import TokenStore
from safehold.bootstrap import open_policy_storage
from safehold.service.catalog import open_catalog
from safehold.service.context import ServiceContext
from safehold.service.secrets import SecretBox
from safehold.service.uow import SqlUnitOfWork
from safehold.testing import FakeEngine, free_port
from tests.api.conftest import TOKENS

READER_CN = "sf-reader.example"


@dataclass(frozen=True)
class Pki:
    """Paths of the test certificates; each client ``.pem`` holds its key and certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    admin: Path
    reader: Path
    stranger: Path
    rogue: Path
    admin_thumbprint: str


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.now(UTC)
    issuer_name, issuer_key = issuer if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    out = b""
    if key is not None:
        out += key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return out + cert.public_bytes(serialization.Encoding.PEM)


def make_pki(root: Path) -> Pki:
    """Make every certificate under *root*."""
    root.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("safehold test CA", ca_key, None, ca=True)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _cert("another CA", other_key, None, ca=True)
    (root / "ca.pem").write_bytes(_pem(ca))
    server_key = ec.generate_private_key(ec.SECP256R1())
    (root / "server.pem").write_bytes(
        _pem(_cert("127.0.0.1", server_key, (ca.subject, ca_key), server=True))
    )
    (root / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths: dict[str, Path] = {}
    admin_der = b""
    for name, cn, issuer in (
        ("admin", "sf-admin.example", (ca.subject, ca_key)),
        ("reader", READER_CN, (ca.subject, ca_key)),
        ("stranger", "stranger.example", (ca.subject, ca_key)),
        ("rogue", "sf-admin.example", (other_ca.subject, other_key)),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(cn, key, issuer)
        paths[name] = root / f"{name}.pem"
        paths[name].write_bytes(_pem(cert, key))
        if name == "admin":
            admin_der = cert.public_bytes(serialization.Encoding.DER)
    return Pki(
        ca=root / "ca.pem",
        server_cert=root / "server.pem",
        server_key=root / "server.key",
        admin=paths["admin"],
        reader=paths["reader"],
        stranger=paths["stranger"],
        rogue=paths["rogue"],
        admin_thumbprint=certauth.thumbprint(admin_der),
    )


def client_context(pki: Pki, pem: Path | None) -> ssl.SSLContext:
    """An SSL context trusting the test CA, presenting *pem* (key + certificate) if given."""
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if pem is not None:
        ctx.load_cert_chain(str(pem))
    return ctx


def make_context(data: Path) -> ServiceContext:
    """A service context over a fresh SQLite catalog and the fake engine."""
    db = open_catalog(str(data / "catalog.sqlite"))
    return ServiceContext(
        uow=lambda: SqlUnitOfWork(db),  # type: ignore[arg-type,return-value]
        secrets=SecretBox(base64.urlsafe_b64encode(b"k" * 32)),
        open_storage=open_policy_storage,
        engine=FakeEngine(),
    )


@contextmanager
def serve(app: Any, **options: Any) -> Iterator[str]:
    """Serve *app* with uvicorn in a thread (no lifespan); yield its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-tls", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    scheme = "https" if "ssl_certfile" in options else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


@contextmanager
def tls_controller(tmp: Path) -> Iterator[tuple[str, Pki, ServiceContext]]:
    """The API over TLS, admitting the admin certificate by thumbprint and the reader by CN."""
    pki = make_pki(tmp / "pki")
    roles = tmp / "client-certs"
    roles.write_text(
        f"# like SF's AdminClientCertThumbprints and ClientCertificateCommonNames\n"
        f"admin {pki.admin_thumbprint}\nreader CN={READER_CN}\n"
    )
    ctx = make_context(tmp)
    app = create_app(ctx, TokenStore(dict(TOKENS)))
    certauth.install(app, certauth.ClientCertRoles.from_file(roles))
    options = {
        "ssl_certfile": str(pki.server_cert),
        "ssl_keyfile": str(pki.server_key),
        **certauth.uvicorn_options(pki.ca),
    }
    with serve(app, **options) as url:
        yield url, pki, ctx


def https(pki: Pki, pem: Path | None, url: str) -> httpx.Client:
    """An httpx client of *url* presenting *pem* (or no certificate)."""
    return httpx.Client(base_url=url, verify=client_context(pki, pem), timeout=30)
