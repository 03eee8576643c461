"""
An in-memory storage, for unit tests of the layers above.

It keeps the full Protocol contract, including errors, so a test that passes
here and fails on a real backend points at the backend.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from safehold.storage.base import ObjectInfo, StorageProperties, validate_name
from safehold.storage.errors import ObjectNotFound, ReadRangeError, StorageNotFound

__all__ = ["MemoryStorage"]


class MemoryStorage:
    """A storage held in a dict; thread-safe."""

    def __init__(self, *, created: bool = True) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._created = created

    @property
    def properties(self) -> StorageProperties:
        """Describe the storage."""
        return StorageProperties(location="memory:", connections=4, accepts_views=True)

    def create(self) -> None:
        """Mark the storage as existing."""
        self._created = True

    def _check(self) -> None:
        if not self._created:
            raise StorageNotFound("memory storage does not exist")

    def stat(self, name: str) -> ObjectInfo:
        """Return the object's size."""
        validate_name(name)
        self._check()
        with self._lock:
            if name not in self._objects:
                raise ObjectNotFound(f"{name}: not found in memory:")
            return ObjectInfo(name, len(self._objects[name]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield objects whose names start with *prefix*, sorted by name."""
        self._check()
        with self._lock:
            items = sorted((k, len(v)) for k, v in self._objects.items() if k.startswith(prefix))
        for name, size in items:
            yield ObjectInfo(name, size)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Read a range of the object."""
        validate_name(name)
        self._check()
        with self._lock:
            data = self._objects.get(name)
        if data is None:
            raise ObjectNotFound(f"{name}: not found in memory:")
        end = len(data) if length is None else offset + length
        out = data[offset:end]
        if length is not None and len(out) != length:
            raise ReadRangeError(f"{name}: asked for {length} bytes at {offset}, got {len(out)}")
        return out

    def put(self, name: str, data: bytes) -> None:
        """Store a copy of *data*."""
        validate_name(name)
        self._check()
        with self._lock:
            self._objects[name] = bytes(data)

    def delete(self, name: str) -> None:
        """Remove the object if present."""
        validate_name(name)
        self._check()
        with self._lock:
            self._objects.pop(name, None)

    def close(self) -> None:
        """Nothing to release."""

    # Test helpers: not part of the Protocol.
    def raw(self) -> dict[str, bytes]:
        """Return the live dict of objects, for tests that corrupt or inspect them."""
        return self._objects
