"""
What the conformance suite cannot say for every backend: URLs and the
environment, prefixes inside a shared container, SMB's temporary files, and
messages that must not repeat a credential.
"""

from __future__ import annotations

import pytest

from safehold.core.errors import UsageError
from safehold.storage import ObjectInfo, ObjectNotFound, Storage
from safehold.storage.memory import MemoryStorage
from safehold.storage.registry import open_storage, redact_url, schemes
from safehold.storage.retry import RetryingStorage
from tests.storage import servers
from tests.storage.servers import S3Server, unique

# URLs and the environment ---------------------------------------------------


def test_schemes() -> None:
    """Every backend is registered under its scheme."""
    assert ["azure", "file", "memory", "s3", "smb"] == schemes()


def test_open_storage_retries_by_default() -> None:
    """open_storage wraps the backend in the retry wrapper unless told not to."""
    wrapped = open_storage("memory://")
    assert isinstance(wrapped, RetryingStorage)
    assert isinstance(wrapped.inner, MemoryStorage)
    assert isinstance(open_storage("memory://", retry_budget=None), MemoryStorage)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("smb://backup:Hunter2@nas:445/share/dir", "smb://nas:445/share/dir"),
        ("azure://cont/prefix?sv=2024&sig=SeCrEt", "azure://cont/prefix"),
        ("s3://bucket/p#fragment", "s3://bucket/p"),
        ("smb://nas:notaport/share", "smb://nas/share"),
        ("/srv/backups/repo", "/srv/backups/repo"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    """Only scheme, host, port and path survive redaction; nothing makes it fail."""
    assert shown == redact_url(url)


def test_azure_url_with_connection_string(
    azurite_server: servers.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """azure://CONTAINER/prefix with AZURE_STORAGE_CONNECTION_STRING opens a working storage."""
    connection_string = servers.azurite_connection_string(azurite_server)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string)
    container = unique()
    store = open_storage(f"azure://{container}/some/prefix")
    expected = f"azure://{container}/some/prefix (account {servers.AZURITE_ACCOUNT})"
    assert expected == store.properties.location
    _round_trip(store)


def test_azure_url_with_account_key(
    azurite_server: servers.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY (and an endpoint) opens a working storage."""
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", servers.AZURITE_ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_KEY", servers.AZURITE_KEY)
    monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", servers.azurite_endpoint(azurite_server))
    store = open_storage(f"azure://{unique()}")
    assert servers.AZURITE_KEY not in store.properties.location
    _round_trip(store)


def test_azure_settings_that_cannot_work() -> None:
    """Missing, doubled or malformed credentials are usage errors that quote no secret."""
    from safehold.storage.azure import AzureStorage, from_url

    with pytest.raises(UsageError, match="AZURE_STORAGE_CONNECTION_STRING"):
        from_url("azure://cont", {})
    with pytest.raises(UsageError, match="either an account key or a SAS token"):
        from_url("azure://cont", {"AZURE_STORAGE_ACCOUNT": "acct"})
    with pytest.raises(UsageError, match="either an account key or a SAS token"):
        AzureStorage("cont", account_name="acct", account_key="k2V5", sas_token="sv=1&sig=x")
    malformed = "AccountKey=Zm9vYmFyc2VjcmV0;no-equals-sign-here"
    with pytest.raises(UsageError, match="malformed") as caught:
        AzureStorage("cont", connection_string=malformed)
    assert "Zm9vYmFyc2VjcmV0" not in str(caught.value)
    assert caught.value.__suppress_context__
    with pytest.raises(UsageError, match="container name is missing"):
        from_url("azure://", {})


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("azure://user:Pa55word@cont/p", "Pa55word"),
        ("azure://cont/p?sv=2024&sig=SeCrEtSiG", "SeCrEtSiG"),
        ("s3://AKIAXX:SeCrEtKeY@bucket", "SeCrEtKeY"),
    ],
)
def test_credentials_in_bucket_urls_are_refused(url: str, secret: str) -> None:
    """Credentials belong in the environment; the refusal does not repeat them."""
    with pytest.raises(UsageError, match="environment variables") as caught:
        open_storage(url)
    assert secret not in str(caught.value)


def test_s3_url_from_environment(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """s3://BUCKET/prefix with the AWS_* variables opens a working storage."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    bucket = unique("t-")
    store = open_storage(f"s3://{bucket}/repo")
    assert f"s3://{bucket}/repo at {s3_server.endpoint}" == store.properties.location
    _round_trip(store)


def test_smb_url_from_environment(samba: servers.Samba, monkeypatch: pytest.MonkeyPatch) -> None:
    """smb://HOST:PORT/SHARE/path with SAFEHOLD_SMB_USER and _PASSWORD opens a working storage."""
    monkeypatch.setenv("SAFEHOLD_SMB_USER", samba.user)
    monkeypatch.setenv("SAFEHOLD_SMB_PASSWORD", samba.password)
    path = f"{unique()}/repo"
    store = open_storage(f"smb://{servers.HOST}:{samba.port}/backup/{path}")
    assert f"smb://{servers.HOST}:{samba.port}/backup/{path}" == store.properties.location
    _round_trip(store)


def test_smb_user_in_url(samba: servers.Samba, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user may be named in the URL; the password still comes from the environment."""
    monkeypatch.delenv("SAFEHOLD_SMB_USER", raising=False)
    monkeypatch.setenv("SAFEHOLD_SMB_PASSWORD", samba.password)
    store = open_storage(f"smb://{samba.user}@{servers.HOST}:{samba.port}/backup/{unique()}")
    assert samba.user not in store.properties.location
    _round_trip(store)


@pytest.mark.parametrize(
    "url", ["smb://nas", "smb://nas/", "smb:///share", "smb://nas:port/share", "smb://nas/s?x=1"]
)
def test_malformed_smb_urls(url: str) -> None:
    """An SMB URL needs a host and a share, a numeric port, and nothing after a '?'."""
    with pytest.raises(UsageError):
        open_storage(url)


def _round_trip(store: Storage) -> None:
    store.create()
    store.put("keys/k1", b"key file")
    assert b"key file" == store.get("keys/k1")
    assert [ObjectInfo("keys/k1", 8)] == list(store.list())
    store.close()


# Prefixes -------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["azure", "s3"])
def test_prefixes_share_a_container_without_seeing_each_other(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """Repositories under "repo" and "repo2" in one container do not see each other."""
    if backend == "azure":
        from safehold.storage.azure import AzureStorage

        azurite: servers.Server = request.getfixturevalue("azurite_server")
        container = unique()

        def make(prefix: str) -> Storage:
            return AzureStorage(
                container, prefix, connection_string=servers.azurite_connection_string(azurite)
            )

    else:
        from safehold.storage.s3 import S3Storage

        s3: S3Server = request.getfixturevalue("s3_server")
        bucket = unique("t-")

        def make(prefix: str) -> Storage:
            return S3Storage(
                bucket,
                prefix,
                access_key_id=s3.access_key_id,
                secret_access_key=s3.secret_access_key,
                endpoint_url=s3.endpoint,
            )

    whole, repo, repo2 = make(""), make("repo"), make("/repo2/")
    whole.create()
    repo.put("config", b"1")
    repo2.put("config", b"22")
    assert [ObjectInfo("config", 1)] == list(repo.list())
    assert [ObjectInfo("config", 2)] == list(repo2.list())
    assert ["repo/config", "repo2/config"] == [o.name for o in whole.list()]
    assert b"1" == whole.get("repo/config")
    with pytest.raises(ObjectNotFound):
        repo.get("repo2/config")


# SMB details ----------------------------------------------------------------


def _smb(samba: servers.Samba, path: str) -> Storage:
    from safehold.storage.smb import SMBStorage

    return SMBStorage(
        servers.HOST, "backup", path, port=samba.port, username=samba.user, password=samba.password
    )


def test_smb_list_skips_unfinished_puts(samba: servers.Samba) -> None:
    """The temporary file of a put that died is never listed."""
    path = unique()
    store = _smb(samba, path)
    store.create()
    store.put("data/ab/abcd", b"whole")
    (samba.share_dir / path / "data" / "ab" / ".tmp-0123456789abcdef").write_bytes(b"part")
    assert [ObjectInfo("data/ab/abcd", 5)] == list(store.list())


def test_smb_directories_are_not_objects(samba: servers.Samba) -> None:
    """A directory that holds objects is not itself an object."""
    store = _smb(samba, unique())
    store.create()
    store.put("data/ab/abcd", b"x")
    with pytest.raises(ObjectNotFound):
        store.stat("data/ab")
    assert [] == list(store.list("data/zz/"))


def test_smb_large_object_in_pieces(samba: servers.Samba) -> None:
    """Objects larger than one request (4 MiB pieces) are written and read whole."""
    import os

    store = _smb(samba, unique())
    store.create()
    data = os.urandom(9 << 20)
    store.put("data/00/big", data)
    assert data == store.get("data/00/big")
    assert data[5_000_000:5_000_100] == store.get("data/00/big", 5_000_000, 100)
