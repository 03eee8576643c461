"""
The S3 backend: ``s3://BUCKET[/prefix]``, for AWS and S3-compatible servers.

Objects are keys ``prefix/name``. ``put`` is one PutObject, which S3 makes
visible whole or not at all (so one object is at most 5 GiB; packs are 16 MiB).
botocore's own retries are off: the retry wrapper (``storage.retry``) is the
one place that retries, so that its time budget holds. Every request has a
connect and a read timeout. A custom endpoint (MinIO, Ceph, a test server)
is addressed path-style.

Errors from botocore are translated at this edge::

    NoSuchBucket, HEAD 404 on a missing bucket  -> StorageNotFound
    NoSuchKey, HEAD 404                         -> ObjectNotFound
    401, 403, bad key or signature, no keys     -> StoragePermissionDenied
    507, storage-full codes                     -> StorageFull
    408, 429, 5xx, SlowDown, timeouts, resets   -> StorageUnavailable
    anything else from botocore                 -> StorageError
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

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
from safehold.storage.base import ObjectInfo, StorageProperties, validate_name
from safehold.storage.errors import (
    ObjectNotFound,
    ReadRangeError,
    StorageError,
    StorageFull,
    StorageNotFound,
    StoragePermissionDenied,
    StorageUnavailable,
)

__all__ = ["S3Storage", "from_url"]

_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "RequestTimeout",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
# S3 itself has no "full"; S3-compatible servers on disks do (MinIO's code).
_FULL_CODES = frozenset({"XMinioStorageFull", "QuotaExceeded", "InsufficientStorage"})
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class S3Storage:
    """
    A storage in one S3 bucket, optionally under a prefix.

    Keys left as ``None`` fall back to botocore's default chain (profile,
    instance role). *endpoint_url* selects an S3-compatible server.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
        connections: int = 8,
    ) -> None:
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._region = region or "us-east-1"
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=max(10, 2 * connections),
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            region_name=self._region,
        )
        # boto3 clients are thread-safe; sessions are not, so only the client is kept.
        self._client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)
        shown = f"s3://{bucket}/{self._prefix}".rstrip("/")
        if endpoint_url:
            shown = f"{shown} at {redact_url(endpoint_url)}"
        self._props = StorageProperties(location=shown, connections=connections)

    @property
    def properties(self) -> StorageProperties:
        """Describe the storage."""
        return self._props

    def _key(self, name: str) -> str:
        return join_prefix(self._prefix, validate_name(name))

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """Turn botocore errors into storage errors naming the location and the cause."""
        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            self._raise(what, exc)

    def _raise(self, what: str, exc: BotoCoreError | ClientError) -> NoReturn:
        where = self._props.location
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            raise StoragePermissionDenied(f"{what}: no usable S3 credentials for {where}") from exc
        if isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError)):
            # Refused or reset connections, DNS failures, connect and read timeouts,
            # a body cut short.
            raise StorageUnavailable(
                f"{what}: cannot reach {where} ({type(exc).__name__})"
            ) from exc
        if not isinstance(exc, ClientError):
            raise StorageError(f"{what}: {type(exc).__name__} in {where}") from exc
        code, status = _code_status(exc)
        # Only the status and S3's error code: never the request or its signature.
        cause = f"(HTTP {status} {code})" if code != str(status) else f"(HTTP {status})"
        if code == "NoSuchBucket":
            raise StorageNotFound(f"{what}: bucket {self._bucket} not found in {where}") from exc
        if code in ("NoSuchKey", "404") or status == 404:
            raise ObjectNotFound(f"{what}: not found in {where}") from exc
        if code in _DENIED_CODES or status in (401, 403):
            raise StoragePermissionDenied(f"{what}: access denied in {where} {cause}") from exc
        if code in _FULL_CODES or status == 507:
            raise StorageFull(f"{what}: no space left in {where} {cause}") from exc
        if code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS:
            raise StorageUnavailable(f"{what}: server busy or failing in {where} {cause}") from exc
        raise StorageError(f"{what}: request failed in {where} {cause}") from exc

    def _bucket_exists(self) -> bool:
        """Ask whether the bucket exists (HEAD answers carry no error code)."""
        with self._translate("check bucket"):
            try:
                self._client.head_bucket(Bucket=self._bucket)
            except ClientError as exc:
                if _code_status(exc)[1] == 404:
                    return False
                raise
        return True

    def create(self) -> None:
        """Create the bucket if it does not exist."""
        if self._bucket_exists():
            return
        args: dict[str, Any] = {"Bucket": self._bucket}
        if self._region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        with self._translate("create"):
            try:
                self._client.create_bucket(**args)
            except ClientError as exc:
                if _code_status(exc)[0] != "BucketAlreadyOwnedByYou":
                    raise

    def stat(self, name: str) -> ObjectInfo:
        """Return the object's size."""
        key = self._key(name)
        try:
            with self._translate(name):
                head = self._client.head_object(Bucket=self._bucket, Key=key)
        except ObjectNotFound:
            if not self._bucket_exists():
                raise StorageNotFound(
                    f"{name}: bucket {self._bucket} not found in {self._props.location}"
                ) from None
            raise
        return ObjectInfo(name, int(head["ContentLength"]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield objects whose names start with *prefix*; S3 lists keys in byte order."""
        start = join_prefix(self._prefix, prefix)
        cut = len(self._prefix) + 1 if self._prefix else 0
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=start
        )
        with self._translate(f"list {prefix or '/'}"):
            for page in pages:
                for item in page.get("Contents", ()):
                    yield ObjectInfo(str(item["Key"])[cut:], int(item["Size"]))

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Read *length* bytes at *offset*; a short read raises ``ReadRangeError``."""
        key = self._key(name)
        check_offsets(offset, length)
        if length == 0:
            # HTTP cannot express an empty range; the object must still exist.
            size = self.stat(name).size
            if offset > size:
                raise ReadRangeError(
                    f"{name}: offset {offset} is past the end ({size} bytes) "
                    f"in {self._props.location}"
                )
            return b""
        args: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        if length is not None:
            args["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            args["Range"] = f"bytes={offset}-"
        with self._translate(name):
            try:
                response = self._client.get_object(**args)
                data = bytes(response["Body"].read())
            except ClientError as exc:
                if _code_status(exc)[1] != 416:
                    raise
                # 416: the range starts at or past the end.
                if length is None:
                    return b""
                data = b""
        return check_range(name, offset, length, data, self._props.location)

    def put(self, name: str, data: bytes) -> None:
        """Store the object with one PutObject, replacing any object of that name."""
        key = self._key(name)
        with self._translate(name):
            self._client.put_object(Bucket=self._bucket, Key=key, Body=data)

    def delete(self, name: str) -> None:
        """Delete the object; S3 answers the same whether or not it existed."""
        key = self._key(name)
        with self._translate(name):
            self._client.delete_object(Bucket=self._bucket, Key=key)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()


def _code_status(exc: ClientError) -> tuple[str, int]:
    """Return S3's error code and the HTTP status of a failed request."""
    response: Mapping[str, Any] = exc.response
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def from_url(url: str, env: Mapping[str, str]) -> S3Storage:
    """
    Open ``s3://BUCKET[/prefix]`` with settings from *env*.

    Reads ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
    ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``) and ``AWS_ENDPOINT_URL``.

    Raises:
        UsageError: the URL is malformed.
    """
    bucket, prefix = parse_bucket_url(url, "s3", "bucket")
    return S3Storage(
        bucket,
        prefix,
        access_key_id=env_value(env, "AWS_ACCESS_KEY_ID"),
        secret_access_key=env_value(env, "AWS_SECRET_ACCESS_KEY"),
        session_token=env_value(env, "AWS_SESSION_TOKEN"),
        region=env_value(env, "AWS_REGION") or env_value(env, "AWS_DEFAULT_REGION"),
        endpoint_url=env_value(env, "AWS_ENDPOINT_URL"),
    )
