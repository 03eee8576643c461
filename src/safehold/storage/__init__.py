"""
Storage backends behind one small Protocol.

``storage.base`` holds the Protocol and its value types; each concrete backend
lives in its own module and is reached only through ``storage.registry`` from
the composition root (``safehold.bootstrap``).
"""

from safehold.storage.base import ObjectInfo, Storage, StorageProperties, validate_name
from safehold.storage.errors import (
    ObjectNotFound,
    ReadRangeError,
    StorageError,
    StorageFull,
    StorageNotFound,
    StoragePermissionDenied,
    StorageUnavailable,
)

__all__ = [
    "ObjectInfo",
    "ObjectNotFound",
    "ReadRangeError",
    "Storage",
    "StorageError",
    "StorageFull",
    "StorageNotFound",
    "StoragePermissionDenied",
    "StorageProperties",
    "StorageUnavailable",
    "validate_name",
]
