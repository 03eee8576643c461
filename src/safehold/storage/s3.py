"""
The S3 backend: ``s3://BUCKET[/prefix]``, for AWS and S3-compatible servers.

Objects are keys ``prefix/name``. ``put`` is one PutObject, which S3 makes
visible whole or not at all (so one object is at most 5 GiB; packs are 16 MiB).
botocore's own retries are off: the retry wrapper (``storage.retry``) is the
one place that retries, so that its time budget holds. Every request has a
connect and a read timeout. A custom endpoint (MinIO, Ceph, a test server)
is addressed path-style.

**Object Lock** (``enable_lock``): the bucket has S3 Object Lock on (and so
versioning), every object but lock files is written with its own retention
(``COMPLIANCE`` or ``GOVERNANCE``, retain-until = now + the policy's days) in
the same PutObject, and the policy is recorded in the ``lock-policy`` object.
A versioned bucket lets anyone with the credential add a delete marker or a
new version over a locked one, so in a locked bucket a name's content is its
*oldest* version: reads, sizes and listings ignore later versions and delete
markers, and ``delete`` removes every version of a name only once none is
held. Never sent: ``BypassGovernanceRetention``.

Errors from botocore are translated at this edge::

    NoSuchBucket, HEAD 404 on a missing bucket  -> StorageNotFound
    NoSuchKey, HEAD 404                         -> ObjectNotFound
    401, 403, bad key or signature, no keys     -> StoragePermissionDenied
    507, storage-full codes                     -> StorageFull
    408, 429, 5xx, SlowDown, timeouts, resets   -> StorageUnavailable
    anything else from botocore                 -> StorageError
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
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
        self._policy: LockPolicy | None = None
        self._policy_read = False
        # name -> version id of its oldest version, in a locked bucket (that never changes).
        self._pinned: dict[str, str] = {}

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

    def _locked(self) -> bool:
        return self.lock_policy() is not None

    def stat(self, name: str) -> ObjectInfo:
        """Return the object's size (in a locked bucket: of its oldest version)."""
        key = self._key(name)
        args: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        if self._pinned_read(name):
            args["VersionId"] = self._version(name)
        try:
            with self._translate(name):
                head = self._client.head_object(**args)
        except ObjectNotFound:
            if not self._bucket_exists():
                raise StorageNotFound(
                    f"{name}: bucket {self._bucket} not found in {self._props.location}"
                ) from None
            raise
        return ObjectInfo(name, int(head["ContentLength"]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield objects whose names start with *prefix*; S3 lists keys in byte order."""
        if self._locked():
            yield from self._list_oldest(prefix)
            return
        start = join_prefix(self._prefix, prefix)
        cut = len(self._prefix) + 1 if self._prefix else 0
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=start
        )
        with self._translate(f"list {prefix or '/'}"):
            for page in pages:
                for item in page.get("Contents", ()):
                    yield ObjectInfo(str(item["Key"])[cut:], int(item["Size"]))

    def _versions(self, start: str) -> Iterator[tuple[str, str, int, bool]]:
        """Yield (key, version id, size, is latest) under *start*, newest first per key."""
        pages = self._client.get_paginator("list_object_versions").paginate(
            Bucket=self._bucket, Prefix=start
        )
        with self._translate(f"list versions {start or '/'}"):
            for page in pages:
                for item in page.get("Versions", ()):
                    key, version = str(item["Key"]), str(item["VersionId"])
                    yield key, version, int(item["Size"]), bool(item.get("IsLatest"))

    def _list_oldest(self, prefix: str) -> Iterator[ObjectInfo]:
        """
        List a locked bucket: a held name with its oldest version's size.

        Names the policy does not cover (lock files) list as usual: their
        latest version, unless that is a delete marker.
        """
        cut = len(self._prefix) + 1 if self._prefix else 0
        key = ""
        entries: list[tuple[str, int, bool]] = []
        for k, version, size, latest in self._versions(join_prefix(self._prefix, prefix)):
            if k != key and entries:
                info = self._pick(key[cut:], entries)
                if info is not None:
                    yield info
                entries = []
            key = k
            entries.append((version, size, latest))
        if entries:
            info = self._pick(key[cut:], entries)
            if info is not None:
                yield info

    def _pick(self, name: str, entries: Sequence[tuple[str, int, bool]]) -> ObjectInfo | None:
        """Choose the version that is *name*'s content, from its versions newest first."""
        if self._pinned_read(name):
            version, size, _ = entries[-1]
            self._pinned[name] = version
            return ObjectInfo(name, size)
        latest = [size for _, size, is_latest in entries if is_latest]
        return ObjectInfo(name, latest[0]) if latest else None

    def _pinned_read(self, name: str) -> bool:
        """Whether *name* reads at its oldest version: a held name in a locked bucket."""
        policy = self.lock_policy()
        return policy is not None and policy.covers(name)

    def _version(self, name: str) -> str:
        """
        Return the id of *name*'s oldest version, which is its content in a locked bucket.

        Raises:
            ObjectNotFound: the name has no version (delete markers do not count).
        """
        version = self._pinned.get(name)
        if version is None:
            key = self._key(name)
            for k, v, _, _ in self._versions(key):
                if k == key:
                    version = v
                elif k > key:
                    break
            if version is None:
                raise ObjectNotFound(f"{name}: not found in {self._props.location}")
            self._pinned[name] = version
        return version

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
        if self._pinned_read(name):
            args["VersionId"] = self._version(name)
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
        """
        Store the object with one PutObject, replacing any object of that name.

        In a locked bucket a covered name gets its retention in the same
        request; writing a name again adds a version that reads ignore.
        """
        key = self._key(name)
        args: dict[str, Any] = {"Bucket": self._bucket, "Key": key, "Body": data}
        policy = self.lock_policy()
        if policy is not None and policy.covers(name):
            until = policy.until(datetime.now(UTC))
            args["ObjectLockMode"] = policy.mode.upper()
            args["ObjectLockRetainUntilDate"] = until
        with self._translate(name):
            self._client.put_object(**args)

    def delete(self, name: str) -> None:
        """
        Delete the object; S3 answers the same whether or not it existed.

        In a locked bucket every version goes, and only if none is held:
        a held object raises ``ObjectLocked`` and nothing changes.
        """
        key = self._key(name)
        if not self._locked():
            with self._translate(name):
                self._client.delete_object(Bucket=self._bucket, Key=key)
            return
        try:
            hold = self.hold(name)
        except ObjectNotFound:
            hold = None  # only delete markers, or nothing: clear them all the same
        if hold is not None:
            where = self._props.location
            raise ObjectLocked(f"{name}: cannot delete: {hold.describe()} in {where}")
        self._delete_versions(name, key)

    def _delete_versions(self, name: str, key: str) -> None:
        """Delete every version and delete marker of *key* (a held one raises ``ObjectLocked``)."""
        pages = self._client.get_paginator("list_object_versions").paginate(
            Bucket=self._bucket, Prefix=key
        )
        with self._translate(name):
            for page in pages:
                for item in [*page.get("Versions", ()), *page.get("DeleteMarkers", ())]:
                    if item["Key"] != key:
                        continue
                    try:
                        self._client.delete_object(
                            Bucket=self._bucket, Key=key, VersionId=item["VersionId"]
                        )
                    except ClientError as exc:
                        if _code_status(exc)[1] == 403 and not self._pinned_read(name):
                            # A lock file held by a bucket default retention: a
                            # delete marker hides it, which is all a lock file needs.
                            self._client.delete_object(Bucket=self._bucket, Key=key)
                            return
                        if _code_status(exc)[1] == 403:
                            raise ObjectLocked(
                                f"{name}: cannot delete: a version is held "
                                f"in {self._props.location}"
                            ) from exc
                        raise
        self._pinned.pop(name, None)

    # ImmutableStorage
    def lock_policy(self) -> LockPolicy | None:
        """
        Return the policy recorded in the bucket (read once).

        The ``lock-policy`` object is read at its oldest version when the
        bucket is versioned, so a delete marker or a new version over it
        changes nothing.
        """
        if self._policy_read:
            return self._policy
        key = self._key(LOCK_POLICY_NAME)
        versioned = False
        with self._translate(LOCK_POLICY_NAME):
            try:
                head = self._client.head_object(Bucket=self._bucket, Key=key)
                versioned = str(head.get("VersionId") or "null") != "null"
            except ClientError as exc:
                if _code_status(exc)[1] != 404:
                    raise
                headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
                if headers.get("x-amz-delete-marker") != "true":
                    self._policy_read = True
                    return None
                versioned = True
        args: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        if versioned:
            args["VersionId"] = self._version(LOCK_POLICY_NAME)
        with self._translate(LOCK_POLICY_NAME):
            data = bytes(self._client.get_object(**args)["Body"].read())
        self._policy = LockPolicy.from_bytes(data)
        self._policy_read = True
        return self._policy

    def enable_lock(self, policy: LockPolicy) -> None:
        """
        Turn Object Lock on (creating the bucket with it if needed) and record *policy*.

        Raises:
            ImmutabilityUnsupported: the mode is ``append-only``, or the
                server refuses Object Lock on this bucket.
        """
        if policy.mode == "append-only":
            raise ImmutabilityUnsupported(
                f"S3 holds objects for a period: use compliance or governance "
                f"({self._props.location})"
            )
        with self._translate("enable object lock"):
            try:
                if not self._bucket_exists():
                    args: dict[str, Any] = {
                        "Bucket": self._bucket,
                        "ObjectLockEnabledForBucket": True,
                    }
                    if self._region != "us-east-1":
                        args["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
                    self._client.create_bucket(**args)
                elif not self._lock_enabled():
                    self._client.put_bucket_versioning(
                        Bucket=self._bucket, VersioningConfiguration={"Status": "Enabled"}
                    )
                    self._client.put_object_lock_configuration(
                        Bucket=self._bucket,
                        ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"},
                    )
            except ClientError as exc:
                code, status = _code_status(exc)
                raise ImmutabilityUnsupported(
                    f"cannot turn on S3 Object Lock for {self._props.location} "
                    f"(HTTP {status} {code})"
                ) from exc
        if not self._lock_enabled():
            raise ImmutabilityUnsupported(f"S3 Object Lock is off for {self._props.location}")
        self._policy, self._policy_read = policy, True
        self.put(LOCK_POLICY_NAME, policy.to_bytes())

    def _lock_enabled(self) -> bool:
        try:
            conf = self._client.get_object_lock_configuration(Bucket=self._bucket)
        except ClientError as exc:
            if _code_status(exc)[0] == "ObjectLockConfigurationNotFoundError":
                return False
            raise
        return bool(conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")

    def _retention(self, name: str) -> tuple[str, datetime | None, bool]:
        """Return the mode, retain-until date and legal hold of *name*'s held version."""
        with self._translate(name):
            head = self._client.head_object(
                Bucket=self._bucket, Key=self._key(name), VersionId=self._version(name)
            )
        until = head.get("ObjectLockRetainUntilDate")
        mode = str(head.get("ObjectLockMode") or "").lower()
        return mode, until, head.get("ObjectLockLegalHoldStatus") == "ON"

    def hold(self, name: str) -> Hold | None:
        """Return the retention or legal hold on *name* if it is in force."""
        validate_name(name)
        if not self._pinned_read(name):
            return None  # not locked, or a lock file
        mode, until, legal = self._retention(name)
        if legal:
            return Hold(name, "legal-hold", None)
        if until is not None and until > datetime.now(UTC):
            return Hold(name, mode, until.astimezone(UTC))
        return None

    def extend_hold(self, name: str, until: datetime) -> None:
        """Move the retain-until date of *name*'s held version to *until* if that is later."""
        policy = self.lock_policy()
        if policy is None:
            raise ImmutabilityUnsupported(f"{name}: {self._props.location} is not locked")
        mode, current, _ = self._retention(name)
        if current is not None and current >= until:
            return
        with self._translate(name):
            self._client.put_object_retention(
                Bucket=self._bucket,
                Key=self._key(name),
                VersionId=self._version(name),
                Retention={"Mode": (mode or policy.mode).upper(), "RetainUntilDate": until},
            )

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
