"""Policies with AzureBlobStore and S3 storages, on Azurite and moto, through the real engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safehold.agent.worker import execute as execute_item
from safehold.bootstrap import open_policy_storage
from safehold.core.policy import parse_storage
from safehold.core.progress import CountingProgress
from safehold.core.work import WorkItem
from safehold.repo.keys import KdfParams
from safehold.service.engine import RepoEngine
from safehold.testing import tree_bytes
from tests.storage import servers

PID = "c10dc10d-0000-4000-8000-000000000001"


def execute(work: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Run a work item given as its wire JSON; return the outcome as its wire JSON."""
    return execute_item(WorkItem.model_validate(work), **kwargs).model_dump(exclude_none=True)


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    server = servers.azurite(tmp_path_factory.mktemp("azurite"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[servers.Server, str, str]]:
    server = servers.moto(tmp_path_factory.mktemp("moto"), auth=True)
    server.start()
    try:
        key_id, secret = servers.moto_credentials(server)
        yield server, key_id, secret
    finally:
        server.stop()


def work(kind: str, source: Path, storage: dict[str, Any], **params: Any) -> dict[str, Any]:
    base = {
        "backup_type": "Full",
        "parent_snapshot": None,
        "chain_snapshot": None,
        "epoch": [0, 0],
        "lsn": 1,
        "retention": None,
        **params,
    }
    return {
        "JobId": "j",
        "Kind": kind,
        "Deadline": "2100-01-01T00:00:00Z",
        "Partition": {
            "PartitionId": PID,
            "ApplicationName": "fabric:/Cloud",
            "ServiceName": "fabric:/Cloud/Svc",
            "Source": f"dir:{source}",
            "RestoreTo": None,
        },
        "Storage": storage,
        "Params": base,
    }


def round_trip(tmp_path: Path, storage: dict[str, Any]) -> None:
    engine = RepoEngine("cloud test password", kdf=KdfParams(n=1024))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"cloud bytes" * 1000)
    before = tree_bytes(src)
    store = open_policy_storage(parse_storage(storage))
    try:
        engine.ensure_repository(store)
    finally:
        store.close()
    out = execute(
        work("backup", src, storage),
        engine=engine,
        open_storage=open_policy_storage,
        progress=CountingProgress(),
    )
    assert out["State"] == "Success", out
    (src / "a").write_text("changed")
    back = execute(
        work("restore", src, storage, snapshot_id=out["Snapshot"]["Id"]),
        engine=engine,
        open_storage=open_policy_storage,
        progress=CountingProgress(),
    )
    assert back["State"] == "Success", back
    assert tree_bytes(src) == before


def test_azure_blob_store_policy(azurite: servers.Server, tmp_path: Path) -> None:
    """ConnectionString and ContainerName reach the Azure backend; the container is created."""
    round_trip(
        tmp_path,
        {
            "StorageKind": "AzureBlobStore",
            "ConnectionString": servers.azurite_connection_string(azurite),
            "ContainerName": servers.unique("sf"),
        },
    )


def test_s3_policy(moto: tuple[servers.Server, str, str], tmp_path: Path) -> None:
    """Bucket, prefix, endpoint, region and keys reach the S3 backend."""
    server, key_id, secret = moto
    bucket = servers.unique("sf")
    import boto3

    boto3.client(
        "s3",
        endpoint_url=f"http://{servers.HOST}:{server.port}",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    round_trip(
        tmp_path,
        {
            "StorageKind": "S3",
            "BucketName": bucket,
            "Prefix": "backups/shop",
            "Region": "us-east-1",
            "EndpointUrl": f"http://{servers.HOST}:{server.port}",
            "AccessKeyId": key_id,
            "SecretAccessKey": secret,
        },
    )


@pytest.fixture(scope="module")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Samba]:
    smb = servers.Samba(tmp_path_factory.mktemp("samba"))
    smb.server.start()
    yield smb
    smb.server.stop()


def test_unc_file_share_policy(samba: servers.Samba, tmp_path: Path) -> None:
    """A UNC FileShare path with PrimaryUserName/PrimaryPassword goes through the SMB backend."""
    sub = servers.unique("sf")
    round_trip(
        tmp_path,
        {
            "StorageKind": "FileShare",
            "Path": f"\\\\{servers.HOST}:{samba.port}\\backup\\{sub}",
            "PrimaryUserName": samba.user,
            "PrimaryPassword": samba.password,
        },
    )
    assert (samba.share_dir / sub / "config").exists()
