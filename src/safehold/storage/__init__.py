"""
Storage backends behind one small Protocol.

``storage.base`` holds the Protocol and its value types; each concrete backend
lives in its own module and is reached only through ``storage.registry`` from
the composition root (``safehold.bootstrap``).
"""

from safehold.storage.base import (
    LOCK_POLICY_NAME,
    Hold,
    ImmutableStorage,
    LockPolicy,
    ObjectInfo,
    Storage,
    StorageProperties,
    immutable,
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

__all__ = [
    "LOCK_POLICY_NAME",
    "Hold",
    "ImmutabilityUnsupported",
    "ImmutableStorage",
    "LockPolicy",
    "ObjectInfo",
    "ObjectLocked",
    "ObjectNotFound",
    "ReadRangeError",
    "Storage",
    "StorageError",
    "StorageFull",
    "StorageNotFound",
    "StoragePermissionDenied",
    "StorageProperties",
    "StorageUnavailable",
    "immutable",
    "validate_name",
]
