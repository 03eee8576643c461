"""
Errors raised by storage backends.

Every backend translates its third-party exceptions into this tree at its edge
(``raise ... from exc``), so the layers above never see botocore, azure or OS
errors::

    StorageError                   a storage operation failed (exit 15, HTTP 502)
    ├── ObjectNotFound             the named object does not exist
    ├── StorageNotFound            the container, bucket, share or directory does not exist
    ├── StoragePermissionDenied    credentials refused or access denied
    ├── StorageFull                no space left or quota exceeded
    ├── ReadRangeError             fewer bytes than asked for came back
    ├── ObjectLocked               the object is held (object lock, append-only) (HTTP 409)
    ├── ImmutabilityUnsupported    the server cannot hold objects as asked
    └── StorageUnavailable         transient: timeout, 5xx, throttling, dropped connection

``permanent`` tells the retry wrapper whether trying again can help.
Messages name the storage location and the cause, never a credential.
"""

from __future__ import annotations

from safehold.core.errors import ExitCode, SafeholdError

__all__ = [
    "ImmutabilityUnsupported",
    "ObjectLocked",
    "ObjectNotFound",
    "ReadRangeError",
    "StorageError",
    "StorageFull",
    "StorageNotFound",
    "StoragePermissionDenied",
    "StorageUnavailable",
]


class StorageError(SafeholdError):
    """A storage operation failed."""

    exit_code = ExitCode.STORAGE
    http_status = 502
    code = "SAFEHOLD_E_STORAGE"
    permanent = True


class ObjectNotFound(StorageError):
    """The named object does not exist."""

    exit_code = ExitCode.NOT_FOUND
    http_status = 404
    code = "SAFEHOLD_E_OBJECT_NOT_FOUND"


class StorageNotFound(StorageError):
    """The container, bucket, share or directory does not exist."""

    code = "SAFEHOLD_E_STORAGE_NOT_FOUND"


class StoragePermissionDenied(StorageError):
    """The storage refused the credentials or the operation."""

    code = "SAFEHOLD_E_STORAGE_PERMISSION"


class StorageFull(StorageError):
    """No space left on the device, or the quota is exhausted."""

    code = "SAFEHOLD_E_STORAGE_FULL"


class ReadRangeError(StorageError):
    """A read returned fewer bytes than were asked for: the object is shorter than expected."""

    code = "SAFEHOLD_E_SHORT_READ"


class StorageUnavailable(StorageError):
    """A transient failure: trying again later may succeed."""

    code = "SAFEHOLD_E_STORAGE_UNAVAILABLE"
    permanent = False


class ObjectLocked(StorageError):
    """
    The object is held (object lock, legal hold, append-only) and cannot be
    deleted or replaced now. The message names the object and until when.
    """

    http_status = 409
    code = "SAFEHOLD_E_OBJECT_LOCKED"


class ImmutabilityUnsupported(StorageError):
    """The storage or its server cannot hold objects as asked; nothing was promised."""

    code = "SAFEHOLD_E_IMMUTABILITY_UNSUPPORTED"
