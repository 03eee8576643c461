"""``safehold serve --tls-cert/--tls-key`` serves HTTPS; clients and agents verify it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.agent.procs import ADMIN, AGENT, cli, start, start_controller


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "safehold test")])
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
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_controller_with_a_remote_agent(tmp_path: Path) -> None:
    """Over HTTPS: the API answers, an unverified client is refused, an agent and the CLI work."""
    cert, key = self_signed(tmp_path)
    controller, url = start_controller(
        tmp_path / "ctl",
        extra=["--tls-cert", str(cert), "--tls-key", str(key), "--no-embedded-agent"],
        scheme="https",
        verify=str(cert),
    )
    try:
        agent = start(
            [
                "agent",
                "--controller",
                url,
                "--token",
                AGENT,
                "--id",
                "tls-agent",
                "--ca-cert",
                str(cert),
                "--poll",
                "0.2",
                "--heartbeat",
                "0.3",
            ],
            tmp_path / "agent.log",
        )
    except BaseException:
        controller.stop()
        raise
    try:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz")
        src = tmp_path / "src"
        src.mkdir()
        (src / "x").write_text("over tls")
        pid = "7150a000-0000-4000-8000-000000000001"
        cli(
            "partition",
            "add",
            "--url",
            url,
            "--ca-cert",
            str(cert),
            "--application",
            "fabric:/Tls",
            "--service",
            "fabric:/Tls/Svc",
            "--partition-id",
            pid,
            "--source",
            f"dir:{src}",
        )
        r = cli(
            "partition",
            "backup",
            pid,
            "--wait",
            "--url",
            url,
            "--ca-cert",
            str(cert),
            "--storage-path",
            str(tmp_path / "store"),
        )
        assert "stored at" in r.stdout
        resp = httpx.get(
            f"{url}/Partitions/{pid}/$/GetBackupProgress",
            params={"api-version": "6.4"},
            headers={"Authorization": f"Bearer {ADMIN}"},
            verify=ssl.create_default_context(cafile=str(cert)),
        )
        assert resp.json()["AgentId"] == "tls-agent"
    finally:
        agent.stop()
        controller.stop()
