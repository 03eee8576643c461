"""
Where backups go: Service Fabric's ``BackupStorageDescription`` kinds, and safehold's S3.

Pure parsing and validation of the storage part of a backup policy (or of a
request's ``BackupStorage``): ``FileShare``, ``AzureBlobStore``,
``ManagedIdentityAzureBlobStore`` and ``S3``. ``PolicyError`` lives here, the
lowest module that raises it; ``core.policy`` re-exports all of it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from safehold.core.errors import UsageError

__all__ = [
    "REDACTED",
    "AzureBlobStorage",
    "FileShareStorage",
    "ManagedIdentityAzureBlobStorage",
    "PolicyError",
    "S3Storage",
    "StorageSpec",
    "parse_storage",
    "redact_storage",
]

REDACTED = "****"


class PolicyError(UsageError):
    """A policy, schedule, storage or name is malformed or out of range."""

    code = "E_INVALIDARG"


def _req_str(doc: Mapping[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(f"{where}.{key} is required and must be a non-empty string")
    return value


def _opt_str(doc: Mapping[str, Any], key: str, where: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PolicyError(f"{where}.{key} must be a string")
    return value


@dataclass(frozen=True)
class FileShareStorage:
    """``FileShare``: a directory (a local path or a mounted UNC share)."""

    path: str
    friendly_name: str | None = None
    primary_user_name: str | None = None
    primary_password: str | None = None
    secondary_user_name: str | None = None
    secondary_password: str | None = None

    kind = "FileShare"
    secret_fields = ("primary_password", "secondary_password")

    def to_json(self) -> dict[str, Any]:
        """Return the API shape (secrets included: redact before showing it)."""
        return _drop_none(
            {
                "StorageKind": self.kind,
                "FriendlyName": self.friendly_name,
                "Path": self.path,
                "PrimaryUserName": self.primary_user_name,
                "PrimaryPassword": self.primary_password,
                "SecondaryUserName": self.secondary_user_name,
                "SecondaryPassword": self.secondary_password,
            }
        )


@dataclass(frozen=True)
class AzureBlobStorage:
    """``AzureBlobStore``: a container in an Azure storage account."""

    connection_string: str
    container_name: str
    friendly_name: str | None = None

    kind = "AzureBlobStore"
    secret_fields = ("connection_string",)

    def to_json(self) -> dict[str, Any]:
        """Return the API shape (secrets included: redact before showing it)."""
        return _drop_none(
            {
                "StorageKind": self.kind,
                "FriendlyName": self.friendly_name,
                "ConnectionString": self.connection_string,
                "ContainerName": self.container_name,
            }
        )


@dataclass(frozen=True)
class S3Storage:
    """``S3`` (safehold's addition): a bucket and optional prefix on S3 or a compatible server."""

    bucket: str
    region: str | None = None
    endpoint_url: str | None = None
    prefix: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    friendly_name: str | None = None

    kind = "S3"
    secret_fields = ("secret_access_key",)

    def to_json(self) -> dict[str, Any]:
        """Return the API shape (secrets included: redact before showing it)."""
        return _drop_none(
            {
                "StorageKind": self.kind,
                "FriendlyName": self.friendly_name,
                "BucketName": self.bucket,
                "Region": self.region,
                "EndpointUrl": self.endpoint_url,
                "Prefix": self.prefix,
                "AccessKeyId": self.access_key_id,
                "SecretAccessKey": self.secret_access_key,
            }
        )


@dataclass(frozen=True)
class ManagedIdentityAzureBlobStorage:
    """
    ``ManagedIdentityAzureBlobStore``: a container reached with an Azure AD identity, no key.

    SF picks the VM scale set's or the cluster's managed identity (``ManagedIdentityType``);
    safehold hands the choice to azure-identity's credential chain on the controller and
    agents, with ``ManagedIdentityClientId`` (SF 9.1+) naming a user-assigned identity.
    """

    blob_service_uri: str
    container_name: str
    managed_identity_type: Literal["VMSS", "Cluster"] = "VMSS"
    managed_identity_client_id: str | None = None
    friendly_name: str | None = None

    kind = "ManagedIdentityAzureBlobStore"
    secret_fields = ()

    def to_json(self) -> dict[str, Any]:
        """Return the API shape (it holds no secret)."""
        return _drop_none(
            {
                "StorageKind": self.kind,
                "FriendlyName": self.friendly_name,
                "ManagedIdentityType": self.managed_identity_type,
                "BlobServiceUri": self.blob_service_uri,
                "ContainerName": self.container_name,
                "ManagedIdentityClientId": self.managed_identity_client_id,
            }
        )


StorageSpec = FileShareStorage | AzureBlobStorage | S3Storage | ManagedIdentityAzureBlobStorage


def _drop_none(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if v is not None}


def redact_storage(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Return a storage JSON object with every secret replaced by ``****``."""
    secret_keys = {"PrimaryPassword", "SecondaryPassword", "ConnectionString", "SecretAccessKey"}
    return {k: (REDACTED if k in secret_keys and v else v) for k, v in doc.items()}


def parse_storage(doc: object, where: str = "Storage") -> StorageSpec:
    """Parse and validate a ``BackupStorageDescription``."""
    if not isinstance(doc, Mapping):
        raise PolicyError(f"{where} must be an object with a StorageKind")
    kind = doc.get("StorageKind")
    friendly = _opt_str(doc, "FriendlyName", where)
    if kind == "FileShare":
        return FileShareStorage(
            path=_req_str(doc, "Path", where),
            friendly_name=friendly,
            primary_user_name=_opt_str(doc, "PrimaryUserName", where),
            primary_password=_opt_str(doc, "PrimaryPassword", where),
            secondary_user_name=_opt_str(doc, "SecondaryUserName", where),
            secondary_password=_opt_str(doc, "SecondaryPassword", where),
        )
    if kind == "AzureBlobStore":
        return AzureBlobStorage(
            connection_string=_req_str(doc, "ConnectionString", where),
            container_name=_req_str(doc, "ContainerName", where),
            friendly_name=friendly,
        )
    if kind == "S3":
        return S3Storage(
            bucket=_req_str(doc, "BucketName", where),
            region=_opt_str(doc, "Region", where),
            endpoint_url=_opt_str(doc, "EndpointUrl", where),
            prefix=_opt_str(doc, "Prefix", where),
            access_key_id=_opt_str(doc, "AccessKeyId", where),
            secret_access_key=_opt_str(doc, "SecretAccessKey", where),
            friendly_name=friendly,
        )
    if kind == "ManagedIdentityAzureBlobStore":
        return _parse_managed_identity(doc, where, friendly)
    raise PolicyError(
        f"{where}.StorageKind {kind!r} is not supported: use 'FileShare', 'AzureBlobStore', "
        "'ManagedIdentityAzureBlobStore' or 'S3'"
    )


def _parse_managed_identity(
    doc: Mapping[str, Any], where: str, friendly: str | None
) -> ManagedIdentityAzureBlobStorage:
    mi_type = doc.get("ManagedIdentityType")
    if mi_type not in ("VMSS", "Cluster"):
        raise PolicyError(f"{where}.ManagedIdentityType must be 'VMSS' or 'Cluster'")
    uri = _req_str(doc, "BlobServiceUri", where)
    if not re.match(r"^https?://[^/\s]+(/[^\s]*)?$", uri):
        raise PolicyError(
            f"{where}.BlobServiceUri must be a URL such as 'https://ACCOUNT.blob.core.windows.net'"
        )
    return ManagedIdentityAzureBlobStorage(
        blob_service_uri=uri.rstrip("/"),
        container_name=_req_str(doc, "ContainerName", where),
        managed_identity_type=mi_type,
        managed_identity_client_id=_opt_str(doc, "ManagedIdentityClientId", where),
        friendly_name=friendly,
    )
