"""
Storage backends under test.

Every backend in ``BACKENDS`` runs the whole conformance suite
(``test_conformance.py``). A backend that needs a server starts it here, on a
free loopback port, for the test session: Azurite for Azure, moto for S3,
Samba's smbd for SMB (see ``servers.py``). Each test gets a fresh container,
bucket or directory on the shared server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from safehold.storage import Storage
from safehold.storage.file import FileStorage
from safehold.storage.memory import MemoryStorage
from safehold.storage.retry import RetryingStorage
from tests.storage import servers
from tests.storage.servers import S3Server, unique

BackendFactory = Callable[[pytest.FixtureRequest, Path], Storage]

# Short timeouts: a test server that stops answering fails a test in seconds.
CONNECT_TIMEOUT = 5.0
TIMEOUT = 20.0


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    """An Azurite blob server for the session."""
    server = servers.azurite(tmp_path_factory.mktemp("azurite"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto S3 server for the session, with signature checks on."""
    server = servers.moto(tmp_path_factory.mktemp("moto"), auth=True)
    server.start()
    try:
        key_id, secret = servers.moto_credentials(server)
        yield S3Server(server, key_id, secret)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Samba]:
    """An smbd for the session."""
    samba = servers.Samba(tmp_path_factory.mktemp("samba"))
    samba.server.start()
    yield samba
    samba.server.stop()


def _file(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    del request
    return FileStorage(tmp_path / "store")


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    del request, tmp_path
    return MemoryStorage()


def _retry(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    del request, tmp_path
    return RetryingStorage(MemoryStorage(), budget=1.0)


def _azure(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    from safehold.storage.azure import AzureStorage

    del tmp_path
    server: servers.Server = request.getfixturevalue("azurite_server")
    # A prefix, so that every test also checks that names map under it.
    return AzureStorage(
        unique(),
        "repos/one",
        connection_string=servers.azurite_connection_string(server),
        connect_timeout=CONNECT_TIMEOUT,
        timeout=TIMEOUT,
    )


def _s3(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    from safehold.storage.s3 import S3Storage

    del tmp_path
    s3: S3Server = request.getfixturevalue("s3_server")
    return S3Storage(
        unique("t-"),
        "repos/one",
        access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key,
        endpoint_url=s3.endpoint,
        connect_timeout=CONNECT_TIMEOUT,
        timeout=TIMEOUT,
    )


def _smb(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    from safehold.storage.smb import SMBStorage

    del tmp_path
    samba: servers.Samba = request.getfixturevalue("samba")
    return SMBStorage(
        servers.HOST,
        "backup",
        f"{unique()}/repo",
        port=samba.port,
        username=samba.user,
        password=samba.password,
        connect_timeout=CONNECT_TIMEOUT,
        timeout=TIMEOUT,
    )


BACKENDS: dict[str, BackendFactory] = {
    "azure": _azure,
    "file": _file,
    "memory": _memory,
    "retry": _retry,
    "s3": _s3,
    "smb": _smb,
}


@pytest.fixture(params=sorted(BACKENDS))
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """A fresh, created, empty storage of each kind."""
    store = BACKENDS[request.param](request, tmp_path)
    store.create()
    yield store
    store.close()
