"""
The Azure Blob Storage backend: ``azure://CONTAINER[/prefix]``.

Objects are block blobs named ``prefix/name``. ``put`` is a single Put Blob
(or, past 64 MiB, staged blocks made visible by one Put Block List), so a
reader sees the whole blob or nothing. The SDK's own retries are off: the
retry wrapper (``storage.retry``) is the one place that retries, so that its
time budget holds. Every request has a connect and a read timeout.

Credentials, in this order: a connection string (the form Service Fabric's
backup policies hold: ``DefaultEndpointsProtocol=…;AccountName=…;AccountKey=…``),
an account name with an account key, or an account name with a SAS token.

**Immutability** (``enable_lock``): each blob but lock files is written with
its own time-based immutability policy (``Locked`` for compliance,
``Unlocked`` for governance; expiry = now + the policy's days) in the same
Put Blob, which needs a container with version-level immutability support
turned on (an account setting, made in the portal or ARM). A legal hold set
on a blob by an administrator is honoured as a hold. ``enable_lock`` writes
``lock-policy`` with a policy and reads it back: where the server does not
keep it (Azurite keeps none), it refuses with ``ImmutabilityUnsupported``.

Errors from the SDK are translated at this edge::

    409 BlobImmutableDueTo…           -> ObjectLocked
    404 ContainerNotFound             -> StorageNotFound
    404 BlobNotFound                  -> ObjectNotFound
    401, 403, bad key or signature    -> StoragePermissionDenied
    408, 429, 5xx, timeouts, resets   -> StorageUnavailable
    anything else from the SDK        -> StorageError
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from enum import Enum
from typing import Any, NoReturn

from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential, TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient, ImmutabilityPolicy

from safehold.core.errors import UsageError
from safehold.storage._shared import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    check_offsets,
    check_range,
    env_value,
    join_prefix,
    parse_bucket_url,
    redact_url,
)
from safehold.storage.base import (
    LOCK_POLICY_NAME,
    Hold,
    LockPolicy,
    ObjectInfo,
    StorageProperties,
    validate_name,
)
from safehold.storage.errors import (
    ImmutabilityUnsupported,
    ObjectLocked,
    ObjectNotFound,
    ReadRangeError,
    StorageError,
    StorageNotFound,
    StoragePermissionDenied,
    StorageUnavailable,
)

__all__ = ["AzureStorage", "from_url"]

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_IMMUTABLE_CODES = frozenset({"BlobImmutableDueToPolicy", "BlobImmutableDueToLegalHold"})
# LockPolicy mode -> Azure's immutability policy mode.
_AZURE_MODE = {"compliance": "Locked", "governance": "Unlocked"}


def _token_client(
    container: str, credential: TokenCredential, endpoint: str | None, options: dict[str, Any]
) -> ContainerClient:
    """A container client that authenticates with an Azure AD token credential."""
    if not endpoint:
        raise UsageError("an Azure AD credential needs the blob service URL (endpoint)")
    url = endpoint.rstrip("/")
    try:
        return ContainerClient(url, container, credential=credential, **options)
    except ValueError:
        raise UsageError(f"invalid Azure blob endpoint {redact_url(url)}") from None


class AzureStorage:
    """
    A storage in one Azure Blob container, optionally under a prefix.

    Give exactly one way to authenticate: *connection_string*, or
    *account_name* with *account_key* or *sas_token*, or a *credential*: an
    Azure AD token credential (azure-identity's, for SF's
    ``ManagedIdentityAzureBlobStore``) with *endpoint* (the blob service URL).
    *endpoint* overrides the blob endpoint (``https://ACCOUNT.blob.core.windows.net``),
    for sovereign clouds and the Azurite emulator; a connection string carries its own.

    Raises:
        UsageError: no credentials, two kinds of credentials, or a malformed
            connection string. Messages never quote a credential.
    """

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        connection_string: str | None = None,
        account_name: str | None = None,
        account_key: str | None = None,
        sas_token: str | None = None,
        endpoint: str | None = None,
        credential: TokenCredential | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
        connections: int = 8,
    ) -> None:
        if not container:
            raise UsageError("the Azure container name is empty")
        self._container = container
        self._prefix = prefix.strip("/")
        options: dict[str, Any] = {
            "retry_total": 0,
            "connection_timeout": connect_timeout,
            "read_timeout": timeout,
        }
        if credential is not None:
            if connection_string is not None or account_key is not None or sas_token is not None:
                raise UsageError("give an Azure AD credential or a key, SAS or connection string")
            self._client = _token_client(container, credential, endpoint, options)
            account = account_name or self._client.account_name or "?"
        elif connection_string is not None:
            if account_key is not None or sas_token is not None:
                raise UsageError("give an Azure connection string or a key or SAS token, not both")
            try:
                self._client = ContainerClient.from_connection_string(
                    connection_string, container, **options
                )
            except ValueError:
                # Not chained: the SDK's message may quote the string, key and all.
                raise UsageError("the Azure connection string is malformed") from None
            account = self._client.account_name or "?"
        else:
            if not account_name:
                raise UsageError(
                    "no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING, or "
                    "AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN"
                )
            if (account_key is None) == (sas_token is None):
                raise UsageError(
                    f"Azure account {account_name}: give either an account key or a SAS token"
                )
            key: AzureNamedKeyCredential | AzureSasCredential
            if account_key is not None:
                key = AzureNamedKeyCredential(account_name, account_key)
            else:
                key = AzureSasCredential((sas_token or "").lstrip("?"))
            url = (endpoint or f"https://{account_name}.blob.core.windows.net").rstrip("/")
            try:
                self._client = ContainerClient(url, container, credential=key, **options)
            except ValueError:
                raise UsageError(f"invalid Azure blob endpoint {redact_url(url)}") from None
            account = account_name
        shown = f"azure://{container}/{self._prefix}".rstrip("/")
        self._props = StorageProperties(
            location=f"{shown} (account {account})", connections=connections
        )
        self._policy: LockPolicy | None = None
        self._policy_read = False

    @property
    def properties(self) -> StorageProperties:
        """Describe the storage."""
        return self._props

    def _key(self, name: str) -> str:
        return join_prefix(self._prefix, validate_name(name))

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """Turn SDK errors into storage errors naming the location and the cause."""
        try:
            yield
        except AzureError as exc:
            self._raise(what, exc)

    def _raise(self, what: str, exc: AzureError) -> NoReturn:
        where = self._props.location
        if isinstance(exc, ClientAuthenticationError):
            # Includes a key that is not valid base64 (AzureSigningError).
            raise StoragePermissionDenied(
                f"{what}: authentication failed in {where}{_code(exc)}"
            ) from exc
        if isinstance(exc, (ServiceRequestError, ServiceResponseError, IncompleteReadError)):
            # Connection refused or reset, DNS failure, connect or read timeout,
            # a body cut short.
            raise StorageUnavailable(
                f"{what}: cannot reach the blob endpoint of {where} ({type(exc).__name__})"
            ) from exc
        if isinstance(exc, HttpResponseError):
            status = exc.status_code or 0
            if status == 409 and _error_code(exc) in _IMMUTABLE_CODES:
                raise ObjectLocked(f"{what}: the blob is held in {where}{_code(exc)}") from exc
            if status == 404 and _error_code(exc) == "ContainerNotFound":
                raise StorageNotFound(
                    f"{what}: container {self._container} not found in {where}"
                ) from exc
            if status == 404:
                raise ObjectNotFound(f"{what}: not found in {where}") from exc
            if status in (401, 403):
                raise StoragePermissionDenied(
                    f"{what}: access denied in {where}{_code(exc)}"
                ) from exc
            if status in _TRANSIENT_STATUS:
                raise StorageUnavailable(
                    f"{what}: server busy or failing in {where}{_code(exc)}"
                ) from exc
            raise StorageError(f"{what}: request failed in {where}{_code(exc)}") from exc
        raise StorageError(f"{what}: {type(exc).__name__} in {where}") from exc

    def create(self) -> None:
        """Create the container if it does not exist."""
        with self._translate("create"), suppress(ResourceExistsError):
            self._client.create_container()

    def stat(self, name: str) -> ObjectInfo:
        """Return the blob's size."""
        key = self._key(name)
        with self._translate(name):
            props = self._client.get_blob_client(key).get_blob_properties()
        return ObjectInfo(name, int(props.size))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield blobs whose names start with *prefix*; the service lists in name order."""
        start = join_prefix(self._prefix, prefix)
        cut = len(self._prefix) + 1 if self._prefix else 0
        with self._translate(f"list {prefix or '/'}"):
            for blob in self._client.list_blobs(name_starts_with=start or None):
                yield ObjectInfo(blob.name[cut:], int(blob.size))

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Read *length* bytes at *offset*; a short read raises ``ReadRangeError``."""
        key = self._key(name)
        check_offsets(offset, length)
        if length == 0:
            # The service cannot express an empty range; the object must still exist.
            size = self.stat(name).size
            if offset > size:
                raise ReadRangeError(
                    f"{name}: offset {offset} is past the end ({size} bytes) "
                    f"in {self._props.location}"
                )
            return b""
        with self._translate(name):
            try:
                data = self._client.download_blob(key, offset=offset, length=length).readall()
            except HttpResponseError as exc:
                if exc.status_code != 416:
                    raise
                # 416: the range starts at or past the end.
                if length is None:
                    return b""
                data = b""
        return check_range(name, offset, length, data, self._props.location)

    def put(self, name: str, data: bytes) -> None:
        """
        Upload the blob whole, replacing any blob of that name.

        Under a lock policy a covered blob carries its immutability policy from
        the same request; replacing a held blob raises ``ObjectLocked`` unless
        it holds the same bytes already (a retried write).
        """
        key = self._key(name)
        extra: dict[str, Any] = {}
        policy = self.lock_policy()
        if policy is not None and policy.covers(name):
            extra["immutability_policy"] = _immutability(policy, datetime.now(UTC))
        try:
            with self._translate(name):
                self._client.upload_blob(key, data, length=len(data), overwrite=True, **extra)
        except ObjectLocked:
            if self.get(name) != bytes(data):
                raise

    def delete(self, name: str) -> None:
        """
        Delete the blob; a missing blob is fine, a missing container is not.

        A held blob raises ``ObjectLocked``, naming until when it is held.
        """
        key = self._key(name)
        try:
            with self._translate(name):
                self._client.delete_blob(key)
        except ObjectNotFound:
            pass
        except ObjectLocked as exc:
            hold = self.hold(name)
            if hold is None:
                raise
            where = self._props.location
            raise ObjectLocked(f"{name}: cannot delete: {hold.describe()} in {where}") from exc

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    # ImmutableStorage
    def lock_policy(self) -> LockPolicy | None:
        """Return the policy recorded in the container (read once)."""
        if not self._policy_read:
            try:
                data: bytes | None = self.get(LOCK_POLICY_NAME)
            except ObjectNotFound:
                data = None
            self._policy = LockPolicy.from_bytes(data) if data is not None else None
            self._policy_read = True
        return self._policy

    def enable_lock(self, policy: LockPolicy) -> None:
        """
        Record *policy* in a held ``lock-policy`` blob, after checking that holds are kept.

        Raises:
            ImmutabilityUnsupported: the mode is ``append-only``, or the server
                accepted the blob without keeping its immutability policy.
        """
        if policy.mode not in _AZURE_MODE:
            raise ImmutabilityUnsupported(
                f"Azure holds blobs for a period: use compliance or governance "
                f"({self._props.location})"
            )
        self.create()
        self._policy, self._policy_read = policy, True
        try:
            self.put(LOCK_POLICY_NAME, policy.to_bytes())
            if self.hold(LOCK_POLICY_NAME) is None:
                self._policy = None
                self.delete(LOCK_POLICY_NAME)  # not held, so it can go
                raise ImmutabilityUnsupported(
                    f"{self._props.location} did not keep the blob's immutability policy: "
                    "turn on version-level immutability support for the container "
                    "(the Azurite emulator has none)"
                )
        except StorageError:
            self._policy, self._policy_read = None, False
            raise

    def hold(self, name: str) -> Hold | None:
        """Return the immutability policy or legal hold on *name* if it is in force."""
        key = self._key(name)
        with self._translate(name):
            props = self._client.get_blob_client(key).get_blob_properties()
        if props.has_legal_hold:
            return Hold(name, "legal-hold", None)
        policy = props.immutability_policy
        until = getattr(policy, "expiry_time", None)
        if until is None:
            return None
        until = until if until.tzinfo else until.replace(tzinfo=UTC)
        if until <= datetime.now(UTC):
            return None
        mode = "compliance" if str(policy.policy_mode).lower() == "locked" else "governance"
        return Hold(name, mode, until.astimezone(UTC))

    def extend_hold(self, name: str, until: datetime) -> None:
        """Move the blob's immutability expiry to *until* if that is later."""
        policy = self.lock_policy()
        if policy is None:
            raise ImmutabilityUnsupported(f"{name}: {self._props.location} is not locked")
        current = self.hold(name)
        if current is not None and (current.until is None or current.until >= until):
            return
        with self._translate(name):
            self._client.get_blob_client(self._key(name)).set_immutability_policy(
                _immutability(policy, until, period=False)
            )


def _immutability(policy: LockPolicy, at: datetime, *, period: bool = True) -> ImmutabilityPolicy:
    """The blob immutability policy for *policy*: expiring *at* plus its days, or *at*."""
    expiry = (policy.until(at) or at) if period else at
    return ImmutabilityPolicy(expiry_time=expiry, policy_mode=_AZURE_MODE[policy.mode])


def _error_code(exc: HttpResponseError) -> str:
    """Return the service's error code (``BlobNotFound``), or ``""``."""
    code = getattr(exc, "error_code", None)
    # The SDK gives a StorageErrorCode member or a plain string.
    return str(code.value) if isinstance(code, Enum) else str(code or "")


def _code(exc: HttpResponseError) -> str:
    """Return `` (HTTP 403 AuthenticationFailed)`` for a message."""
    # Only the status and the service's error code: the response text can quote
    # what the server signed, and nothing of the request belongs in a message.
    parts = [f"HTTP {exc.status_code}"] if exc.status_code else []
    if _error_code(exc):
        parts.append(_error_code(exc))
    return f" ({' '.join(parts)})" if parts else ""


def from_url(url: str, env: Mapping[str, str]) -> AzureStorage:
    """
    Open ``azure://CONTAINER[/prefix]`` with credentials from *env*.

    Reads ``AZURE_STORAGE_CONNECTION_STRING``; or ``AZURE_STORAGE_ACCOUNT`` with
    ``AZURE_STORAGE_KEY`` or ``AZURE_STORAGE_SAS_TOKEN``, and optionally
    ``AZURE_STORAGE_ENDPOINT`` (the blob endpoint URL).

    Raises:
        UsageError: the URL is malformed or no credentials are set.
    """
    container, prefix = parse_bucket_url(url, "azure", "container")
    connection_string = env_value(env, "AZURE_STORAGE_CONNECTION_STRING")
    if connection_string is not None:
        return AzureStorage(container, prefix, connection_string=connection_string)
    return AzureStorage(
        container,
        prefix,
        account_name=env_value(env, "AZURE_STORAGE_ACCOUNT"),
        account_key=env_value(env, "AZURE_STORAGE_KEY"),
        sas_token=env_value(env, "AZURE_STORAGE_SAS_TOKEN"),
        endpoint=env_value(env, "AZURE_STORAGE_ENDPOINT"),
    )
