"""
An in-memory storage, for unit tests of the layers above.

It keeps the full Protocol contract, including errors, so a test that passes
here and fails on a real backend points at the backend.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from safehold.storage.base import (
    LOCK_POLICY_NAME,
    Hold,
    LockPolicy,
    ObjectInfo,
    StorageProperties,
    validate_name,
)
from safehold.storage.errors import ObjectLocked, ObjectNotFound, ReadRangeError, StorageNotFound

__all__ = ["MemoryStorage"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MemoryStorage:
    """
    A storage held in a dict; thread-safe.

    It implements ``ImmutableStorage`` too, as the reference for the layers
    above: holds are kept here, and *clock* lets a test end them.
    """

    def __init__(self, *, created: bool = True, clock: Callable[[], datetime] = _utcnow) -> None:
        self._objects: dict[str, bytes] = {}
        self._holds: dict[str, Hold] = {}
        self._policy: LockPolicy | None = None
        self._clock = clock
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
        """Store a copy of *data*; a held name keeps its bytes (same bytes: no error)."""
        validate_name(name)
        self._check()
        with self._lock:
            hold = self._held(name)
            if hold is not None:
                if self._objects.get(name) == bytes(data):
                    return
                raise ObjectLocked(f"{name}: cannot replace: {hold.describe()} in memory:")
            self._objects[name] = bytes(data)
            if self._policy is not None and self._policy.covers(name):
                until = self._policy.until(self._clock())
                self._holds[name] = Hold(name, self._policy.mode, until)

    def delete(self, name: str) -> None:
        """Remove the object if present; a held object raises ``ObjectLocked``."""
        validate_name(name)
        self._check()
        with self._lock:
            hold = self._held(name)
            if hold is not None:
                raise ObjectLocked(f"{name}: cannot delete: {hold.describe()} in memory:")
            self._objects.pop(name, None)
            self._holds.pop(name, None)

    # ImmutableStorage
    def _held(self, name: str) -> Hold | None:
        """The hold on *name* if it is in force now; call with the lock held."""
        hold = self._holds.get(name)
        if hold is None or name not in self._objects:
            return None
        if hold.until is not None and hold.until <= self._clock():
            return None
        return hold

    def lock_policy(self) -> LockPolicy | None:
        """Return the policy in force."""
        return self._policy

    def enable_lock(self, policy: LockPolicy) -> None:
        """Hold what is written from now on; record the policy."""
        self._check()
        with self._lock:
            self._policy = policy
        self.put(LOCK_POLICY_NAME, policy.to_bytes())

    def hold(self, name: str) -> Hold | None:
        """Return the hold on *name* if it is in force."""
        validate_name(name)
        with self._lock:
            return self._held(name)

    def extend_hold(self, name: str, until: datetime) -> None:
        """Hold *name* until at least *until*."""
        validate_name(name)
        with self._lock:
            if name not in self._objects:
                raise ObjectNotFound(f"{name}: not found in memory:")
            hold = self._holds.get(name)
            mode = self._policy.mode if self._policy else "governance"
            if hold is None:
                self._holds[name] = Hold(name, mode, until)
            elif hold.until is not None and hold.until < until:
                self._holds[name] = Hold(name, hold.mode, until)

    def close(self) -> None:
        """Nothing to release."""

    # Test helpers: not part of the Protocol.
    def raw(self) -> dict[str, bytes]:
        """Return the live dict of objects, for tests that corrupt or inspect them."""
        return self._objects
