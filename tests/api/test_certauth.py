"""
Client-certificate login over TLS, beside bearer tokens, as SF clusters admit clients
(``ClientCertThumbprints``/``AdminClientCertThumbprints`` and common names).

Every certificate is made by the test; the server is uvicorn with ``ssl_cert_reqs``.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from safehold.api.certauth import ClientCertRoles, thumbprint
from safehold.core.policy import PolicyError
from tests.api.conftest import ADMIN, READER, auth
from tests.api.sf_tls import Pki, https, tls_controller

V = {"api-version": "6.4"}
POLICY = {
    "Name": "by-cert",
    "AutoRestoreOnDataLoss": False,
    "MaxIncrementalBackups": 0,
    "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT1H"},
    "Storage": {"StorageKind": "FileShare", "Path": "/srv/backups"},
}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Pki]]:
    with tls_controller(tmp_path_factory.mktemp("tls")) as (url, pki, _ctx):
        yield url, pki


def test_admin_certificate_by_thumbprint_may_create_a_policy(tls: tuple[str, Pki]) -> None:
    """A thumbprint mapped to admin (SF's AdminClientCertThumbprints) may do admin work."""
    url, pki = tls
    with https(pki, pki.admin, url) as c:
        resp = c.post("/BackupRestore/BackupPolicies/$/Create", params=V, json=POLICY)
        assert resp.status_code in (201, 409), resp.text
        assert c.get("/BackupRestore/BackupPolicies/by-cert", params=V).status_code == 200


def test_reader_certificate_by_common_name_reads_but_may_not_write(tls: tuple[str, Pki]) -> None:
    """A common name mapped to reader (SF's ClientCertificateCommonNames) may only read."""
    url, pki = tls
    with https(pki, pki.reader, url) as c:
        assert c.get("/BackupRestore/BackupPolicies", params=V).status_code == 200
        resp = c.post("/BackupRestore/BackupPolicies/$/Create", params=V, json=POLICY)
        assert resp.status_code == 403, resp.text


def test_certificate_without_a_role_is_401(tls: tuple[str, Pki]) -> None:
    """A certificate the CA signed but no thumbprint or name maps is not admitted."""
    url, pki = tls
    with https(pki, pki.stranger, url) as c:
        resp = c.get("/BackupRestore/BackupPolicies", params=V)
    assert resp.status_code == 401
    assert "not allowed" in resp.json()["Error"]["Message"]


def test_certificate_from_an_unknown_ca_fails_the_handshake(tls: tuple[str, Pki]) -> None:
    """The TLS layer verifies the chain: another CA's certificate never reaches the app."""
    url, pki = tls
    with https(pki, pki.rogue, url) as c, pytest.raises((httpx.HTTPError, ssl.SSLError)):
        c.get("/BackupRestore/BackupPolicies", params=V)


def test_bearer_tokens_still_work_over_tls_without_a_certificate(tls: tuple[str, Pki]) -> None:
    """Certificates are optional at the TLS level: token clients and agents keep working."""
    url, pki = tls
    with https(pki, None, url) as c:
        assert c.get("/BackupRestore/BackupPolicies", params=V, headers=auth(READER)).is_success
        assert c.get("/BackupRestore/BackupPolicies", params=V).status_code == 401
        # A bearer token, when sent, is what counts: a bad one is refused.
        bad = c.get("/BackupRestore/BackupPolicies", params=V, headers=auth("nope"))
        assert bad.status_code == 401


def test_a_certificate_is_never_seen_on_another_connection(tls: tuple[str, Pki]) -> None:
    """The peer certificate belongs to its connection: a later plain connection is 401."""
    url, pki = tls
    with https(pki, pki.admin, url) as admin, https(pki, None, url) as anonymous:
        for _ in range(3):
            assert admin.get("/BackupRestore/BackupPolicies", params=V).status_code == 200
            assert anonymous.get("/BackupRestore/BackupPolicies", params=V).status_code == 401


def test_unauthenticated_request_with_bad_api_version_is_401_first(tls: tuple[str, Pki]) -> None:
    """SF's gateway authenticates before the service reads api-version."""
    url, pki = tls
    with https(pki, None, url) as c:
        assert c.get(
            "/BackupRestore/BackupPolicies", params={"api-version": "5.0"}
        ).status_code == (401)
        assert c.get("/BackupRestore/BackupPolicies").status_code == 401
        resp = c.get(
            "/BackupRestore/BackupPolicies", params={"api-version": "5.0"}, headers=auth(ADMIN)
        )
        assert resp.status_code == 400
        assert resp.json()["Error"]["Code"] == "E_INVALIDARG"


def test_roles_file_is_read_and_checked(tmp_path: Path) -> None:
    """Lines '<role> <thumbprint>' or '<role> CN=<name>'; bad lines are errors, not ignored."""
    good = tmp_path / "good"
    good.write_text(
        "# comment\nadmin 12:34:56:78:9a:bc:de:f0:12:34:56:78:9a:bc:de:f0:12:34:56:78\n"
        "operator CN=ops.example\n\n"
    )
    roles = ClientCertRoles.from_file(good)
    assert roles
    for text in ("superuser ABCDEF", "admin not-hex", "reader\n", "root CN=x"):
        bad = tmp_path / "bad"
        bad.write_text(text)
        with pytest.raises(PolicyError):
            ClientCertRoles.from_file(bad)
    assert thumbprint(b"x") == "11F6AD8EC52A2984ABAAFD7C3B516503785C2072"


def test_serve_options_need_tls_and_a_ca(tmp_path: Path) -> None:
    """`safehold serve --client-certs-file` needs --client-ca and TLS; then asks for certs."""
    from fastapi import FastAPI

    from safehold.api.certauth import ClientCertH11Protocol
    from safehold.cli.service_server import _client_cert_options
    from safehold.core.errors import UsageError

    roles = tmp_path / "roles"
    roles.write_text("reader CN=someone\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until uvicorn starts\n")
    app = FastAPI()
    tls = {"ssl_certfile": "c", "ssl_keyfile": "k"}
    for certs, bundle, with_tls in ((roles, None, tls), (None, ca, tls), (roles, ca, {})):
        with pytest.raises(UsageError):
            _client_cert_options(app, certs, bundle, with_tls)
    options = _client_cert_options(app, roles, ca, tls)
    assert options["ssl_cert_reqs"] == ssl.CERT_OPTIONAL
    assert options["ssl_ca_certs"] == str(ca)
    assert options["http"] is ClientCertH11Protocol
    assert app.state.client_certs
