"""
The storage Protocol: the whole contract between the engine and a backend.

A storage is a flat namespace of immutable objects with ``/``-separated names.
It offers no rename and no append, so that object stores can implement it
without tricks; the engine only ever writes whole objects once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from safehold.core.errors import UsageError

__all__ = ["ObjectInfo", "Storage", "StorageProperties", "validate_name"]

# Lower case only, so a repository survives a move to a case-insensitive store;
# no empty, "." or ".." components, so a name can never escape a directory.
_NAME_RE = re.compile(r"^[a-z0-9_][a-z0-9._-]*(/[a-z0-9_][a-z0-9._-]*)*$")


def validate_name(name: str) -> str:
    """
    Check that *name* is a valid object name and return it.

    Raises:
        UsageError: the name is empty, absolute, has empty, ``.`` or ``..``
            components, or has characters outside ``[a-z0-9._-]``.
    """
    if not _NAME_RE.match(name) or ".." in name.split("/"):
        raise UsageError(f"invalid object name {name!r}")
    return name


@dataclass(frozen=True)
class ObjectInfo:
    """An object's name and size in bytes."""

    name: str
    size: int


@dataclass(frozen=True)
class StorageProperties:
    """
    What callers may know about a storage.

    Attributes:
        location: where it is, for messages; never contains a credential.
        connections: how many requests it serves well in parallel.
        accepts_views: ``put`` takes a ``memoryview`` without copying it first,
            so writers may hand over their buffers instead of a ``bytes`` copy.
    """

    location: str
    connections: int = 4
    accepts_views: bool = False


@runtime_checkable
class Storage(Protocol):
    """
    **Protocol**: a place that stores immutable, named objects.

    Contract, for every implementation:

    - Names are checked with ``validate_name``; a bad name raises ``UsageError``.
    - ``put`` is atomic: a reader sees the whole object or nothing, never a part,
      even if the writer dies. Writing an existing name replaces it whole.
    - ``get`` with a range returns exactly ``length`` bytes or raises
      ``ReadRangeError``; a missing object raises ``ObjectNotFound``.
    - ``delete`` is idempotent: deleting a missing object is not an error.
    - ``list`` yields every object whose name starts with *prefix*, sorted by
      name, lazily; objects being written by ``put`` are not listed.
    - Failures raise ``storage.errors.StorageError`` subclasses; ``permanent``
      says whether a retry can help. No third-party exception escapes.
    - Every method is safe to call from several threads at once.
    """

    @property
    def properties(self) -> StorageProperties:
        """Describe the storage."""
        ...

    def create(self) -> None:
        """Create the container or directory if it does not exist; idempotent."""
        ...

    def stat(self, name: str) -> ObjectInfo:
        """Return the object's size; raise ``ObjectNotFound`` if it is missing."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose names start with *prefix*, sorted by name."""
        ...

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Read *length* bytes from *offset* (to the end when *length* is None)."""
        ...

    def put(self, name: str, data: bytes) -> None:
        """
        Store *data* under *name*, atomically.

        Storages whose properties say ``accepts_views`` also take a
        ``memoryview``, and keep no reference to it after returning.
        """
        ...

    def delete(self, name: str) -> None:
        """Remove the object; a missing object is not an error."""
        ...

    def close(self) -> None:
        """Release connections; the storage is not used afterwards."""
        ...
