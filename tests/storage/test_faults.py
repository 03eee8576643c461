"""
Failures of real servers: killed, frozen, refusing credentials, missing
containers, full disks. Each must end in a clear ``StorageError`` (never a
hang, never a third-party exception) and must not leak a credential.

The kill and freeze tests run on servers of their own (module scope), so the
conformance suite's shared servers are never disturbed.
"""

from __future__ import annotations

import base64
import datetime
import os
import secrets
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from safehold.storage import (
    Storage,
    StorageFull,
    StorageNotFound,
    StoragePermissionDenied,
    StorageUnavailable,
)
from safehold.storage.file import FileStorage
from safehold.storage.retry import RetryingStorage
from tests.storage import servers
from tests.storage.servers import S3Server, unique

# A generous guard against hangs; the tests themselves never time anything.
pytestmark = pytest.mark.timeout(180)

KILLABLE = ["azure", "s3", "smb"]
# Short timeouts: the frozen-server test waits for them to expire.
CONNECT_TIMEOUT = 2.0
TIMEOUT = 3.0


@dataclass
class Target:
    """A server of the test's own and how to open a storage on it."""

    name: str
    server: servers.Server
    make: Callable[[], Storage]


def _short(store: Storage, *, budget: float) -> RetryingStorage:
    """Wrap *store* with a small budget and short waits, to keep the tests quick."""
    return RetryingStorage(store, budget=budget, first_delay=0.2, max_delay=1.0)


@pytest.fixture(scope="module", params=KILLABLE)
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """A dedicated server that the test may kill, freeze and restart."""
    workdir = tmp_path_factory.mktemp(f"fault-{request.param}")
    if request.param == "azure":
        from safehold.storage.azure import AzureStorage

        server = servers.azurite(workdir)
        connection_string = servers.azurite_connection_string(server)

        def make() -> Storage:
            return AzureStorage(
                "faults",
                connection_string=connection_string,
                connect_timeout=CONNECT_TIMEOUT,
                timeout=TIMEOUT,
            )

    elif request.param == "s3":
        from safehold.storage.s3 import S3Storage

        server = servers.moto(workdir)
        endpoint = f"http://{servers.HOST}:{server.port}"

        def make() -> Storage:
            return S3Storage(
                "faults",
                access_key_id="test",
                secret_access_key="test",
                endpoint_url=endpoint,
                connect_timeout=CONNECT_TIMEOUT,
                timeout=TIMEOUT,
            )

    else:
        from safehold.storage.smb import SMBStorage

        samba = servers.Samba(workdir)
        server = samba.server

        def make() -> Storage:
            return SMBStorage(
                servers.HOST,
                "backup",
                "faults",
                port=samba.port,
                username=samba.user,
                password=samba.password,
                connect_timeout=CONNECT_TIMEOUT,
                timeout=TIMEOUT,
            )

    server.start()
    yield Target(request.param, server, make)
    server.stop()


@pytest.fixture
def live(target: Target) -> Iterator[Target]:
    """The target, running at the start and at the end of the test."""
    if not target.server.running:
        target.server.start()
    yield target
    target.server.resume()
    if not target.server.running:
        target.server.start()


def test_killed_server_fails_clearly_then_recovers(live: Target) -> None:
    """
    Puts running while the server dies end in StorageUnavailable, not a hang or a
    foreign exception; after a restart the same storage object works again.
    """
    store = _short(live.make(), budget=2.0)
    store.create()
    outcomes: list[BaseException | None] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            try:
                store.put(f"data/{n:06d}", os.urandom(2000))
                outcomes.append(None)
            except Exception as exc:
                outcomes.append(exc)
            n += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: outcomes.count(None) >= 5, "puts before the kill")
        live.server.stop()
        _wait_for(lambda: any(o is not None for o in outcomes), "a failed put after the kill")
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive(), "a put hung after the server died"
    errors = [o for o in outcomes if o is not None]
    assert all(isinstance(e, StorageUnavailable) for e in errors), errors
    assert "gave up after" in str(errors[0])

    raw = store.inner  # the same connections, without the waits
    for operation in (
        lambda: raw.get("data/000000"),
        lambda: raw.stat("data/000000"),
        lambda: list(raw.list("data/")),
        lambda: raw.delete("data/000000"),
        lambda: raw.put("config", b"x"),
    ):
        with pytest.raises(StorageUnavailable):
            operation()

    live.server.start()
    store.create()  # moto keeps nothing across a restart; the others keep their data
    store.put("after/restart", b"back again")
    assert store.get("after/restart") == b"back again"
    assert [o.name for o in store.list("after/")] == ["after/restart"]
    store.close()


def test_server_back_within_the_budget_is_not_an_error(live: Target) -> None:
    """An operation started while the server is down succeeds once it is back in time."""
    store = _short(live.make(), budget=60.0)
    store.create()
    live.server.stop()
    restart = threading.Timer(1.0, live.server.start)
    restart.start()
    try:
        store.create()
        store.put("during/outage", b"made it")
    finally:
        restart.join()
    assert store.get("during/outage") == b"made it"
    store.close()


def test_frozen_server_times_out(live: Target) -> None:
    """A server that accepts connections but never answers ends in StorageUnavailable."""
    raw = live.make()
    raw.create()
    raw.put("config", b"before")
    store = _short(raw, budget=1.0)
    live.server.pause()
    try:
        with pytest.raises(StorageUnavailable):
            store.get("config")
        with pytest.raises(StorageUnavailable):
            store.put("config", b"during")
    finally:
        live.server.resume()
    # A write that timed out on our side may still land once the server wakes:
    # write again until ours is the last one.
    for _ in range(50):
        store.put("config", b"after")
        if store.get("config") == b"after":
            break
        time.sleep(0.1)
    assert store.get("config") == b"after"
    raw.close()


def _wait_for(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {limit:g}s")
        time.sleep(0.05)


# Credentials ----------------------------------------------------------------


def _assert_denied_without_leak(store: Storage, secrets_: list[str]) -> None:
    """Every operation is refused at once with StoragePermissionDenied, leaking nothing."""
    retries: list[str] = []
    wrapped = RetryingStorage(store, on_retry=lambda what, *_: retries.append(what))
    operations: list[Callable[[], object]] = [
        lambda: wrapped.stat("config"),
        lambda: wrapped.get("config"),
        lambda: list(wrapped.list()),
        lambda: wrapped.put("config", b"x"),
    ]
    for operation in operations:
        with pytest.raises(StoragePermissionDenied) as caught:
            operation()
        assert store.properties.location in str(caught.value)
        _assert_no_secret(caught.value, secrets_)
    assert retries == [], "permission errors must not be retried"
    store.close()


def _assert_no_secret(exc: BaseException, secrets_: list[str]) -> None:
    """Neither the message nor the whole chained traceback holds any of *secrets_*."""
    message = str(exc)
    full = "".join(traceback.format_exception(exc))
    for secret in secrets_:
        assert secret
        assert secret not in message
        assert secret not in full


def _random_azure_key() -> str:
    return base64.b64encode(secrets.token_bytes(64)).decode()


def test_azure_wrong_key(azurite_server: servers.Server) -> None:
    """A connection string with the wrong account key is refused without a retry or a leak."""
    from safehold.storage.azure import AzureStorage

    good = AzureStorage(
        "denied", connection_string=servers.azurite_connection_string(azurite_server)
    )
    good.create()
    good.put("config", b"x")
    key = _random_azure_key()
    connection_string = servers.azurite_connection_string(azurite_server, key)
    store = AzureStorage("denied", connection_string=connection_string)
    _assert_denied_without_leak(store, [key, connection_string])


def test_azure_bad_sas_token(azurite_server: servers.Server) -> None:
    """A SAS token signed with the wrong key, given through the environment, is refused."""
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from safehold.storage.azure import from_url

    token = generate_container_sas(
        servers.AZURITE_ACCOUNT,
        "denied",
        account_key=_random_azure_key(),
        permission=ContainerSasPermissions(read=True, write=True, list=True),
        expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1),
    )
    signature = dict(p.split("=", 1) for p in token.split("&"))["sig"]
    env = {
        "AZURE_STORAGE_ACCOUNT": servers.AZURITE_ACCOUNT,
        "AZURE_STORAGE_SAS_TOKEN": token,
        "AZURE_STORAGE_ENDPOINT": servers.azurite_endpoint(azurite_server),
    }
    _assert_denied_without_leak(from_url("azure://denied", env), [token, signature])


def test_azure_read_only_sas_cannot_write(azurite_server: servers.Server) -> None:
    """A valid SAS token without write permission reads, and its put is refused."""
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from safehold.storage.azure import AzureStorage

    AzureStorage(
        "readonly", connection_string=servers.azurite_connection_string(azurite_server)
    ).create()
    token = generate_container_sas(
        servers.AZURITE_ACCOUNT,
        "readonly",
        account_key=servers.AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1),
    )
    store = AzureStorage(
        "readonly",
        account_name=servers.AZURITE_ACCOUNT,
        sas_token=token,
        endpoint=servers.azurite_endpoint(azurite_server),
    )
    assert list(store.list()) == []
    with pytest.raises(StoragePermissionDenied) as caught:
        store.put("config", b"x")
    _assert_no_secret(caught.value, [token])


@pytest.mark.parametrize("wrong", ["secret", "key id"])
def test_s3_wrong_credentials(s3_server: S3Server, wrong: str) -> None:
    """A wrong secret or an unknown key id is refused without a retry or a leak."""
    from safehold.storage.s3 import S3Storage

    bucket = unique("t-")
    S3Storage(
        bucket,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
        endpoint_url=s3_server.endpoint,
    ).create()
    secret = secrets.token_urlsafe(30)
    key_id = s3_server.access_key_id if wrong == "secret" else "AKIA" + secrets.token_hex(8).upper()
    store = S3Storage(
        bucket, access_key_id=key_id, secret_access_key=secret, endpoint_url=s3_server.endpoint
    )
    _assert_denied_without_leak(store, [secret, s3_server.secret_access_key])


def test_smb_wrong_password(samba: servers.Samba) -> None:
    """A wrong SMB password is refused without a retry or a leak."""
    from safehold.storage.smb import SMBStorage

    password = secrets.token_urlsafe(16)
    store = SMBStorage(
        servers.HOST, "backup", port=samba.port, username=samba.user, password=password
    )
    _assert_denied_without_leak(store, [password, samba.password])


def test_smb_password_in_url_is_refused() -> None:
    """A password written into an smb:// URL is refused, and the message does not repeat it."""
    from safehold.core.errors import UsageError
    from safehold.storage.smb import from_url

    with pytest.raises(UsageError) as caught:
        from_url("smb://backup:Hunter2-secret@127.0.0.1/share", {})
    assert "Hunter2-secret" not in str(caught.value)
    assert "SAFEHOLD_SMB_PASSWORD" in str(caught.value)


# Missing containers ---------------------------------------------------------


def _assert_storage_not_found(store: Storage, where: str) -> None:
    """Every operation on *store* fails at once with StorageNotFound naming *where*."""
    wrapped = RetryingStorage(store)
    operations: list[Callable[[], object]] = [
        lambda: wrapped.stat("config"),
        lambda: wrapped.get("config"),
        lambda: wrapped.get("config", 0, 0),
        lambda: list(wrapped.list()),
        lambda: list(wrapped.list("data/00/")),
        lambda: wrapped.put("data/00/abc", b"x"),
        lambda: wrapped.delete("config"),
    ]
    for operation in operations:
        with pytest.raises(StorageNotFound) as caught:
            operation()
        assert where in str(caught.value)


def test_azure_missing_container(azurite_server: servers.Server) -> None:
    """A container that was never created is StorageNotFound for every operation."""
    from safehold.storage.azure import AzureStorage

    name = unique()
    store = AzureStorage(name, connection_string=servers.azurite_connection_string(azurite_server))
    _assert_storage_not_found(store, name)


def test_s3_missing_bucket(s3_server: S3Server) -> None:
    """A bucket that was never created is StorageNotFound for every operation."""
    from safehold.storage.s3 import S3Storage

    name = unique("t-")
    store = S3Storage(
        name,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
        endpoint_url=s3_server.endpoint,
    )
    _assert_storage_not_found(store, name)


def test_smb_missing_share(samba: servers.Samba) -> None:
    """A share that does not exist is StorageNotFound, even for create()."""
    from safehold.storage.smb import SMBStorage

    store = SMBStorage(
        servers.HOST, "noshare", port=samba.port, username=samba.user, password=samba.password
    )
    _assert_storage_not_found(store, "noshare")
    with pytest.raises(StorageNotFound):
        store.create()


def test_smb_missing_directory(samba: servers.Samba) -> None:
    """A directory not yet created is StorageNotFound, and put does not create it."""
    from safehold.storage.smb import SMBStorage

    path = f"{unique()}/repo"
    store = SMBStorage(
        servers.HOST, "backup", path, port=samba.port, username=samba.user, password=samba.password
    )
    _assert_storage_not_found(store, path)
    store.create()
    store.put("data/00/abc", b"x")
    assert store.get("data/00/abc") == b"x"


# Full disks -----------------------------------------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs at a fresh directory (needs root and the right to mount)."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    with _mounted(mountpoint):
        yield mountpoint


class _mounted:
    """Mount a 1 MiB tmpfs on *mountpoint* for the duration of a with-block."""

    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint

    def __enter__(self) -> Path:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0777", "tmpfs", str(self.mountpoint)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or 'not root'}")
        return self.mountpoint

    def __exit__(self, *exc: object) -> None:
        # Lazy: an smbd child may still hold the directory open.
        subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)


def test_file_backend_full_disk(tiny_tmpfs: Path) -> None:
    """Writing more than fits is StorageFull at once, and leaves no partial file."""
    store = FileStorage(tiny_tmpfs / "repo")
    store.create()
    store.put("config", b"small")
    retries: list[str] = []
    wrapped = RetryingStorage(store, on_retry=lambda what, *_: retries.append(what))
    with pytest.raises(StorageFull) as caught:
        wrapped.put("data/00/big", os.urandom(2 << 20))
    assert str(tiny_tmpfs) in str(caught.value)
    assert retries == []
    assert [o.name for o in store.list()] == ["config"]
    assert not any(p.name.startswith(".tmp-") for p in tiny_tmpfs.rglob("*"))


def test_smb_full_share(samba: servers.Samba) -> None:
    """A share on a full disk reports StorageFull, and the temporary file is gone."""
    from safehold.storage.smb import SMBStorage

    with _mounted(samba.small_dir):
        store = SMBStorage(
            servers.HOST,
            "small",
            "repo",
            port=samba.port,
            username=samba.user,
            password=samba.password,
        )
        store.create()
        with pytest.raises(StorageFull):
            RetryingStorage(store).put("data/00/big", os.urandom(2 << 20))
        assert list(store.list()) == []
        leftovers = [p.name for p in samba.small_dir.rglob("*") if p.name.startswith(".tmp-")]
        assert leftovers == []
        store.close()
