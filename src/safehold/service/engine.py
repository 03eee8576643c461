"""
The narrow view of the backup engine that the service and its agents use.

``BackupEngine`` is what callers rely on; ``RepoEngine`` implements it with
``safehold.repo``. Storages are opened by a ``StorageOpener`` that the
composition root provides, so nothing here picks a concrete backend.
Every storage holds one repository, protected by the controller-level password.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from safehold.core.policy import StorageSpec
from safehold.core.progress import ProgressSink
from safehold.core.snapshot import Snapshot, SnapshotMeta
from safehold.repo import Repository
from safehold.repo.index import Index
from safehold.repo.index_compact import CompactionTrigger
from safehold.repo.keys import KdfParams, Keyring
from safehold.repo.shared import SharedIndex
from safehold.storage.base import Storage

__all__ = ["BackupEngine", "RepoEngine", "StorageOpener"]

StorageOpener = Callable[[StorageSpec], Storage]


@dataclass(frozen=True)
class _Kept:
    """What an engine keeps of a repository between jobs (config, keys, index)."""

    config: dict[str, Any]
    keys: Keyring
    ring: frozenset[str]  # the keyring files the keys were read from
    since: float
    shared: SharedIndex
    pack_keys: dict[str, bytes] = field(default_factory=dict)  # unsealed, by pack id


class BackupEngine(Protocol):
    """
    **Protocol**: backup, restore, list and forget snapshots in a storage.

    The repository in a storage is created on the first backup. Errors are
    ``SafeholdError`` subclasses (``repo.errors`` and ``storage.errors``).
    """

    def backup_dir(
        self,
        storage: Storage,
        path: Path,
        *,
        meta: SnapshotMeta,
        progress: ProgressSink,
        parent: str | None = None,
    ) -> Snapshot:
        """
        Back up the directory *path*; return the new snapshot.

        *parent* is the snapshot whose unchanged files need not be read again
        (the partition's previous backup, which the controller names); None
        reads every file. No other snapshot is looked at, however many a
        shared repository holds.
        """
        ...

    def backup_stream(
        self,
        storage: Storage,
        stream: BinaryIO,
        *,
        name: str,
        meta: SnapshotMeta,
        progress: ProgressSink,
    ) -> Snapshot:
        """Back up a byte stream as one file *name*; return the new snapshot."""
        ...

    def restore_dir(
        self, storage: Storage, snapshot_id: str, target: Path, *, progress: ProgressSink
    ) -> Snapshot:
        """Write the snapshot's files under *target*; return the snapshot."""
        ...

    def dump(self, storage: Storage, snapshot_id: str, out: BinaryIO) -> int:
        """Write a stream snapshot's content to *out*; return the byte count."""
        ...

    def snapshots(self, storage: Storage) -> list[Snapshot]:
        """Return the snapshots, oldest first ([] when the storage has no repository)."""
        ...

    def ensure_repository(self, storage: Storage) -> None:
        """Create the repository if the storage has none (callers serialise this)."""
        ...

    def forget(self, storage: Storage, snapshot_ids: Sequence[str]) -> None:
        """Remove snapshots (their data goes at the next prune)."""
        ...


class RepoEngine:
    """
    ``BackupEngine`` over ``safehold.repo``.

    A long-lived engine (an agent's) keeps each repository open between jobs
    (``docs/format.md`` § Keeping a repository open (agents)): its config, its
    unlocked keys (for *keys_for* seconds, so a job does not pay a key
    derivation each time) and one index shared by concurrent jobs, refreshed
    with only the index files added since. Each job checks the config and the
    keyring files (one read, one listing): if either changed, the repository
    is opened again. The storage of each call stays the caller's: the engine
    never closes it.
    """

    def __init__(
        self, password: str, *, kdf: KdfParams | None = None, keys_for: float = 300.0
    ) -> None:
        self._password = password
        self._kdf = kdf
        self._keys_for = keys_for
        self._kept: dict[str, _Kept] = {}  # by storage location
        self._lock = threading.Lock()
        # Merges the small index files backups leave (docs/format.md § Index compaction).
        self._compaction = CompactionTrigger()

    def __repr__(self) -> str:
        return "RepoEngine(password=<hidden>)"

    def _open(self, storage: Storage, *, create: bool) -> Repository:
        from safehold.repo.errors import RepositoryNotFound

        try:
            config = Repository.read_config(storage)
        except RepositoryNotFound:
            if not create:
                raise
            if self._kdf is not None:
                return Repository.init(storage, self._password, kdf=self._kdf)
            return Repository.init(storage, self._password)
        where = storage.properties.location
        # A key rotation adds a keyring file: the kept keys would lack its generation.
        ring = frozenset(i.name for i in storage.list("keyring/"))
        with self._lock:
            kept = self._kept.get(where)
        if (
            kept is not None
            and kept.config == config
            and kept.ring == ring
            and time.monotonic() - kept.since < self._keys_for
        ):
            return Repository.for_job(storage, config, kept.keys, kept.shared, kept.pack_keys)
        fresh = Repository.open(storage, self._password, load_index=False)
        if kept is not None and kept.config.get("id") == config.get("id"):
            same, shared, pack_keys = True, kept.shared, kept.pack_keys
        else:  # the pack keys of one repository are the same under any of its key files
            same, shared, pack_keys = False, SharedIndex(Index()), {}
        now = time.monotonic()
        with self._lock:
            self._kept[where] = _Kept(fresh.config, fresh.keys, ring, now, shared, pack_keys)
        repo = Repository.for_job(storage, fresh.config, fresh.keys, shared, pack_keys)
        if not same:
            repo.reload_index(strict=False)
        return repo

    def _current(self, storage: Storage) -> Repository:
        """An open repository whose index is refreshed now (to read what others wrote)."""
        repo = self._open(storage, create=False)
        if repo.shared is not None:
            repo.refresh_index()
        return repo

    def open_repository(self, storage: Storage, *, create: bool = False) -> Repository:
        """
        The repository in *storage*, with the kept keys and index (database
        sources), its index refreshed; the caller closes it.
        """
        repo = self._open(storage, create=create)
        if repo.shared is not None:
            repo.refresh_index()
        return repo

    def after_backup(self, repo: Repository) -> None:
        """
        Compact *repo*'s index files if its last refresh counted too many (no
        listing otherwise); never raises. Backups through this engine call it;
        a caller that backs up into ``open_repository`` calls it when done.
        One compaction runs at a time in this engine; other jobs skip it.
        """
        if repo.shared is not None:
            repo.index = repo.shared.index  # what the index files say (the job is done)
        self._compaction.after_backup(repo)

    def backup_dir(
        self,
        storage: Storage,
        path: Path,
        *,
        meta: SnapshotMeta,
        progress: ProgressSink,
        parent: str | None = None,
    ) -> Snapshot:
        """Back up a directory, comparing with *parent* only."""
        from safehold.repo import backup_paths

        with self._open(storage, create=True) as repo:
            snap = backup_paths(
                repo, [path], meta=meta, progress=progress, parent=parent, search_parent=False
            ).snapshot
            self.after_backup(repo)
            return snap

    def backup_stream(
        self,
        storage: Storage,
        stream: BinaryIO,
        *,
        name: str,
        meta: SnapshotMeta,
        progress: ProgressSink,
    ) -> Snapshot:
        """Back up a byte stream."""
        from safehold.repo import backup_stream

        with self._open(storage, create=True) as repo:
            snap = backup_stream(repo, stream, name=name, meta=meta, progress=progress).snapshot
            self.after_backup(repo)
            return snap

    def restore_dir(
        self, storage: Storage, snapshot_id: str, target: Path, *, progress: ProgressSink
    ) -> Snapshot:
        """Restore a snapshot under *target*."""
        from safehold.repo import restore

        with self._current(storage) as repo:
            snap = repo.find_snapshot(snapshot_id)
            restore(repo, snap, target, progress=progress)
            return snap

    def dump(self, storage: Storage, snapshot_id: str, out: BinaryIO) -> int:
        """Write a stream snapshot's single file to *out*."""
        from safehold.repo import dump

        with self._current(storage) as repo:
            snap = repo.find_snapshot(snapshot_id)
            return dump(repo, snap, out, snap.source_name)

    def snapshots(self, storage: Storage) -> list[Snapshot]:
        """List snapshots; an empty storage has none."""
        from safehold.repo.errors import RepositoryNotFound

        try:
            repo = self._open(storage, create=False)
        except RepositoryNotFound:
            return []
        with repo:
            return list(repo.snapshots())

    def ensure_repository(self, storage: Storage) -> None:
        """Create the repository unless one is there; no password needed to check."""
        from safehold.repo.errors import RepositoryNotFound

        try:
            Repository.read_config(storage)
        except RepositoryNotFound:
            self._open(storage, create=True).close()

    def key_generations(self, storage: Storage) -> list[int]:
        """The repository's key generations, oldest first (read afresh, not the kept keys)."""
        with Repository.open(storage, self._password, load_index=False) as repo:
            return sorted(repo.keys.generations)

    def rotate_key(self, storage: Storage) -> list[int]:
        """
        Add a key generation that new data is written under (``safehold key rotate``).

        The keys are read afresh (kept ones may predate another rotation), and
        this engine forgets the keys it kept for the storage. Returns the generations.
        """
        with Repository.open(storage, self._password, load_index=False) as repo:
            repo.key_store.rotate(repo.keys)
            gens = sorted(repo.keys.generations)
        where = storage.properties.location
        with self._lock:
            self._kept.pop(where, None)
        return gens

    def forget(self, storage: Storage, snapshot_ids: Iterable[str]) -> None:
        """Remove snapshots."""
        from safehold.repo.prune import forget

        ids = list(snapshot_ids)
        if not ids:
            return
        with self._open(storage, create=False) as repo:
            forget(repo, ids)
