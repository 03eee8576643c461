"""
SF's ``ManagedIdentityAzureBlobStore`` at the boundary: azure-identity's
``DefaultAzureCredential`` fetches a token from a managed-identity endpoint, and
Azurite in its OAuth mode (HTTPS, ``--oauth basic``) checks that token on every
request.

The managed-identity endpoint is the App Service flavour (``IDENTITY_ENDPOINT``
and ``IDENTITY_HEADER``), served here by the test, which mints the tokens.
Untested: a real Azure AD (Azurite's basic mode checks a token's audience,
issuer and lifetime, not its signature), the VM scale set's IMDS endpoint, and
the Cluster identity of a real SF cluster.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from safehold.bootstrap import open_policy_storage
from safehold.core.policy import parse_storage
from safehold.storage.errors import StorageError
from tests.api.sf_tls import make_pki
from tests.storage import servers

IDENTITY_HEADER = "identity-header-for-tests"
CLIENT_ID = "0b0b0b0b-0000-4000-8000-00000000c1d0"


def _b64(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


class TokenEndpoint:
    """A managed-identity endpoint (App Service protocol) minting JWTs for Azurite."""

    def __init__(self) -> None:
        self.requests: list[dict[str, list[str]]] = []
        self.audience = "https://storage.azure.com"
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                endpoint.requests.append(query)
                if self.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
                    self.send_response(401)
                    self.end_headers()
                    return
                now = int(time.time())
                claims = {
                    "aud": endpoint.audience,
                    "iss": "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
                    "iat": now - 60,
                    "nbf": now - 60,
                    "exp": now + 3600,
                    "oid": str(uuid.uuid4()),
                    "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                }
                token = f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(claims)}.c2lnbmF0dXJl"
                body = json.dumps(
                    {
                        "access_token": token,
                        "expires_on": str(now + 3600),
                        "resource": query.get("resource", [""])[0],
                        "token_type": "Bearer",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/msi/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def oauth_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Azurite over HTTPS with OAuth on; yields its blob endpoint and the CA that signed it."""
    work = tmp_path_factory.mktemp("azurite-oauth")
    pki = make_pki(work / "pki")
    if not servers.AZURITE.exists():
        servers.missing("Azurite", "run scripts/test-deps.sh: npm ci")
    (work / "data").mkdir()
    server = servers.Server(
        "azurite-oauth",
        [
            str(servers.AZURITE),
            *("--blobHost", servers.HOST, "--blobPort", "{port}", "--location", str(work / "data")),
            *("--cert", str(pki.server_cert), "--key", str(pki.server_key), "--oauth", "basic"),
            *("--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"),
        ],
        work,
    )
    server.start()
    try:
        yield f"https://127.0.0.1:{server.port}/{servers.AZURITE_ACCOUNT}", pki.ca
    finally:
        server.stop()


@pytest.fixture
def identity(
    monkeypatch: pytest.MonkeyPatch, oauth_azurite: tuple[str, Path]
) -> Iterator[TokenEndpoint]:
    """The host's managed identity, as App Service exposes it; no other credential is set."""
    for name in (
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_TENANT_ID",
        "AZURE_USERNAME",
        "AZURE_FEDERATED_TOKEN_FILE",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "IDENTITY_SERVER_THUMBPRINT",
    ):
        monkeypatch.delenv(name, raising=False)
    endpoint = TokenEndpoint()
    monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint.url)
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(oauth_azurite[1]))  # trust Azurite's TLS
    yield endpoint
    endpoint.close()


def _spec(blob_uri: str, container: str) -> Any:
    return parse_storage(
        {
            "StorageKind": "ManagedIdentityAzureBlobStore",
            "ManagedIdentityType": "VMSS",
            "BlobServiceUri": blob_uri,
            "ContainerName": container,
            "ManagedIdentityClientId": CLIENT_ID,
        }
    )


def test_managed_identity_storage_works_with_a_token_azurite_checks(
    identity: TokenEndpoint, oauth_azurite: tuple[str, Path]
) -> None:
    """DefaultAzureCredential gets a storage token for the user-assigned id; blobs go both ways."""
    storage = open_policy_storage(_spec(oauth_azurite[0], f"mi-{uuid.uuid4().hex[:12]}"))
    storage.create()
    storage.put("config", b"written with a managed identity")
    assert storage.get("config") == b"written with a managed identity"
    assert [o.name for o in storage.list()] == ["config"]
    assert identity.requests, "the managed-identity endpoint was never asked"
    asked = identity.requests[0]
    assert asked["resource"] == ["https://storage.azure.com"]
    assert asked["client_id"] == [CLIENT_ID]


def test_a_token_for_another_audience_is_refused_by_azurite(
    identity: TokenEndpoint, oauth_azurite: tuple[str, Path]
) -> None:
    """Azurite checks the token: one for another audience is a storage error, not a success."""
    identity.audience = "https://vault.azure.net"
    storage = open_policy_storage(_spec(oauth_azurite[0], f"mi-{uuid.uuid4().hex[:12]}"))
    with pytest.raises(StorageError):
        storage.create()


def test_no_identity_is_a_storage_error_that_names_no_secret(
    identity: TokenEndpoint, oauth_azurite: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A managed-identity endpoint that refuses us: a storage error, with no header in it."""
    monkeypatch.setenv("IDENTITY_HEADER", "wrong")
    storage = open_policy_storage(_spec(oauth_azurite[0], f"mi-{uuid.uuid4().hex[:12]}"))
    with pytest.raises(StorageError) as info:
        storage.create()
    assert "wrong" not in str(info.value)
    assert IDENTITY_HEADER not in str(info.value)
