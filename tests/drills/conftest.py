"""Receivers for the drill tests: a webhook HTTP server and an SMTP server with STARTTLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from safehold.testing import free_port
from tests.service.catalogs import pg_database  # noqa: F401 - the service tests' fixtures
from tests.service.conftest import clock, ctx, engine  # noqa: F401


@dataclass
class Received:
    """What the webhook server received: (path, headers, raw body) per POST."""

    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    fail_next: int = 0  # answer 503 to this many POSTs first (delivery retries)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        """The JSON bodies posted to *path*."""
        with self.lock:
            return [json.loads(b) for p, _, b in self.posts if p == path]


@pytest.fixture
def webhooks() -> Iterator[tuple[str, Received]]:
    """A real HTTP server recording every POST; yields (base URL, what it received)."""
    got = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with got.lock:
                failing = got.fail_next > 0
                if failing:
                    got.fail_next -= 1
                else:
                    got.posts.append((self.path, dict(self.headers.items()), body))
            self.send_response(503 if failing else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", got
    finally:
        server.shutdown()
        server.server_close()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "smtp.crt", tmp / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Mailbox:
    """The SMTP server's address, its CA file, and the messages it took."""

    port: int
    ca_file: Path
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    starttls: list[bool] = field(default_factory=list)


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[Mailbox]:
    """aiosmtpd on a free port, requiring STARTTLS with a self-signed certificate."""
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP, Envelope, Session

    cert, key = _self_signed(tmp_path)
    box = Mailbox(port=free_port(), ca_file=cert)

    class Handler:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            del server
            box.starttls.append(session.ssl is not None)
            content = envelope.original_content or b""
            box.messages.append((str(envelope.mail_from), list(envelope.rcpt_tos), content))
            return "250 OK"

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=box.port,
        tls_context=tls,
        require_starttls=True,
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
