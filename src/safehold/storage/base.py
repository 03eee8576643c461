"""
The storage Protocol: the whole contract between the engine and a backend.

A storage is a flat namespace of immutable objects with ``/``-separated names.
It offers no rename and no append, so that object stores can implement it
without tricks; the engine only ever writes whole objects once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol, runtime_checkable

from safehold.core.errors import UsageError

__all__ = [
    "LOCK_POLICY_NAME",
    "Hold",
    "ImmutableStorage",
    "LockMode",
    "LockPolicy",
    "ObjectInfo",
    "Storage",
    "StorageProperties",
    "immutable",
    "validate_name",
]

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


LockMode = Literal["compliance", "governance", "append-only"]

LOCK_POLICY_NAME = "lock-policy"
"""The object that records a storage's ``LockPolicy``; it is held itself."""

# Lock files are the one thing the engine deletes in normal work: they stay mutable.
_EXEMPT = ("locks/",)


@dataclass(frozen=True)
class LockPolicy:
    """
    How a storage protects what is written to it.

    Attributes:
        mode: ``compliance`` (nobody can shorten or remove a hold, S3 COMPLIANCE,
            Azure locked policy), ``governance`` (S3 GOVERNANCE, Azure unlocked
            policy: a principal allowed to bypass it can), or ``append-only``
            (file and SMB: a name, once written, is never deleted or replaced).
        days: each object is held until its write time plus *days*; 0 with
            ``append-only``, where the hold never ends.
    """

    mode: LockMode
    days: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("compliance", "governance", "append-only"):
            raise UsageError(f"unknown lock mode {self.mode!r}")
        if self.mode == "append-only" and self.days:
            raise UsageError("an append-only repository holds objects for good: no lock days")
        if self.mode != "append-only" and not 1 <= self.days <= 36500:
            raise UsageError(f"{self.mode} locks need a period of 1 to 36500 days")

    def covers(self, name: str) -> bool:
        """Whether *name* is held once written (everything but lock files)."""
        return not name.startswith(_EXEMPT)

    def until(self, written: datetime) -> datetime | None:
        """When a hold on an object written at *written* ends; ``None``: never."""
        return None if self.mode == "append-only" else written + timedelta(days=self.days)

    def to_bytes(self) -> bytes:
        """Serialise, for the ``lock-policy`` object."""
        return json.dumps({"mode": self.mode, "days": self.days}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LockPolicy:
        """
        Parse a ``lock-policy`` object.

        Raises:
            UsageError: the object is not a lock policy.
        """
        try:
            doc = json.loads(data)
            return cls(mode=doc["mode"], days=int(doc["days"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"the {LOCK_POLICY_NAME} object is damaged ({exc})") from None


@dataclass(frozen=True)
class Hold:
    """
    A held object: it cannot be deleted or replaced before *until*.

    Attributes:
        name: the object.
        mode: the policy's mode, or ``legal-hold``.
        until: when the hold ends (UTC); ``None``: it does not end by itself.
    """

    name: str
    mode: str
    until: datetime | None

    def describe(self) -> str:
        """``data/ab/… held (compliance) until 2026-12-31 10:00 UTC``, for messages."""
        when = f"until {self.until:%Y-%m-%d %H:%M} UTC" if self.until else "for good"
        return f"{self.name} held ({self.mode}) {when}"


@runtime_checkable
class ImmutableStorage(Protocol):
    """
    **Capability**: a storage that can hold objects against deletion and replacement.

    A backend that offers it implements these methods besides ``Storage``'s.
    The point is protection against someone holding the storage's full
    credential (ransomware, a stolen key): the hold is kept by the server or
    the filesystem, never only by this client. Contract:

    - ``enable_lock`` turns holds on for everything written afterwards and
      records the policy in the storage (``lock-policy``, itself held). It
      raises ``ImmutabilityUnsupported`` when the server cannot enforce the
      mode: a storage never claims a hold it cannot keep.
    - Once enabled, every ``put`` of a name the policy covers is held from the
      moment it is visible until its write time plus the policy's days (or for
      good in ``append-only`` mode). Lock files (``locks/``) are not held.
    - ``delete`` of a held name raises ``ObjectLocked`` (naming the hold) and
      changes nothing. Once a hold has ended, ``delete`` works as before.
    - A ``put`` to a held name raises ``ObjectLocked`` or has no visible
      effect: ``get`` keeps returning the held bytes. A ``put`` of the same
      bytes again (a retried write) succeeds.
    - Deleting or replacing a held object through the server's own API with
      the same credential fails too, or leaves the held bytes what ``get``,
      ``stat`` and ``list`` return (S3: the oldest version of a name is its
      content, later versions and delete markers are ignored).
    - ``hold`` tells whether a name is held now, and until when; ``extend_hold``
      moves a hold's end later (never earlier).
    """

    def lock_policy(self) -> LockPolicy | None:
        """Return the policy in force, or ``None`` when objects are not held."""
        ...

    def enable_lock(self, policy: LockPolicy) -> None:
        """Hold everything written from now on under *policy*; see the contract."""
        ...

    def hold(self, name: str) -> Hold | None:
        """Return the hold on *name* if it cannot be deleted now, else ``None``."""
        ...

    def extend_hold(self, name: str, until: datetime) -> None:
        """Hold *name* at least until *until*; a longer hold is left as it is."""
        ...


def immutable(storage: Storage) -> ImmutableStorage | None:
    """
    Return the object-lock capability of *storage*, looking through wrappers.

    Wrappers (the retry wrapper) expose what they wrap as ``inner``; the
    capability's calls are not retried.
    """
    seen: object = storage
    for _ in range(8):
        if isinstance(seen, ImmutableStorage):
            return seen
        seen = getattr(seen, "inner", None)
        if seen is None:
            return None
    return None
