"""
Where backups go and come from: two narrow Protocols, and the engine behind them.

The store needs four things from a repository, and asks for no more:
store a stream as a snapshot, forget one, list snapshots, and read one back.
``RepositoryTarget`` provides them over ``safehold.repo``; tests use a fake.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from safehold.core.progress import NullProgress, ProgressSink
from safehold.core.snapshot import Snapshot, SnapshotMeta
from safehold.repo import Repository, backup_stream, dump
from safehold.state._offload import StoreProcess, describe

__all__ = ["BackupSink", "BackupSource", "BackupTarget", "LazyRepositoryTarget", "RepositoryTarget"]


@runtime_checkable
class BackupSink(Protocol):
    """
    **Protocol**: somewhere backups are stored.

    Methods block; the store calls them from a worker thread, one backup at a time.
    """

    @property
    def location(self) -> str:
        """Where the backups go, for messages and ``BackupInfo.location``; no credentials."""
        ...

    def store(self, stream: BinaryIO, *, name: str, meta: SnapshotMeta) -> Snapshot:
        """
        Store everything *stream* yields as one snapshot described by *meta*.

        The snapshot must be durable and listed by ``BackupSource.snapshots`` when this
        returns, and must carry *meta*'s partition, type, parent, chain id, epoch and
        LSN unchanged. A failure raises; nothing partial may be listed afterwards.
        """
        ...

    def forget(self, snapshot_id: str) -> None:
        """Remove a snapshot from the listing; removing a missing one is not an error."""
        ...


@runtime_checkable
class BackupSource(Protocol):
    """**Protocol**: somewhere backups are read from. Methods block."""

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot, of every partition; the store filters."""
        ...

    def fetch(self, snapshot: Snapshot, out: BinaryIO) -> int:
        """
        Write the content of a stream snapshot to *out*; return its size.

        Damaged content raises rather than being written.
        """
        ...


@runtime_checkable
class BackupTarget(BackupSink, BackupSource, Protocol):
    """**Protocol**: both; what ``StateStore.open(target=...)`` takes."""


class RepositoryTarget:
    """
    A ``BackupTarget`` over a safehold repository (``safehold.repo``).

    A backup file is stored by a child process (``store_file``, ``_offload``) when
    the repository's storage can be described to one (a ``FileStorage``) and no
    *progress* sink is given: the engine's work then holds the child's GIL, not the
    store's. The child is started at the first backup and reused; ``close`` stops it.

    Args:
        repo: an open repository, with a key that can read (restores need it).
        progress: receives the engine's progress while a backup is stored.
        offload: False stores every backup in this process; None (the default)
            offloads where it can.
    """

    def __init__(
        self,
        repo: Repository,
        *,
        progress: ProgressSink | None = None,
        offload: bool | None = None,
    ) -> None:
        self._repo = repo
        self._progress = progress or NullProgress()
        spec = describe(repo) if offload is not False and progress is None else None
        self._child = StoreProcess(repo, spec) if spec is not None else None

    @property
    def location(self) -> str:
        """The repository storage's location."""
        return self._repo.storage.properties.location

    def store(self, stream: BinaryIO, *, name: str, meta: SnapshotMeta) -> Snapshot:
        """Back the stream up through the engine."""
        return backup_stream(
            self._repo, stream, name=name, meta=meta, progress=self._progress
        ).snapshot

    def store_file(self, path: Path, *, name: str, meta: SnapshotMeta) -> Snapshot:
        """Store the file *path* (as ``store`` would its content): in the child, if there is one."""
        if self._child is None:
            with path.open("rb") as f:
                return self.store(f, name=name, meta=meta)
        return self._child.store(path, name=name, meta=meta)

    def close(self) -> None:
        """Stop the backup process, if one runs (the next backup starts it again)."""
        if self._child is not None:
            self._child.close()

    def forget(self, snapshot_id: str) -> None:
        """
        Delete the snapshot's manifest.

        That is what forgetting a snapshot is in the format (``docs/format.md``):
        its data stays until the next ``prune``, which finds nothing refers to it.
        """
        self._repo.storage.delete(f"snapshots/{snapshot_id}")

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot, oldest first."""
        return self._repo.snapshots()

    def fetch(self, snapshot: Snapshot, out: BinaryIO) -> int:
        """Dump the snapshot's one file."""
        if self._child is not None:
            self._repo.refresh_index()  # the child stored blobs this process has not seen
        return dump(self._repo, snapshot, out)


class LazyRepositoryTarget:
    """
    A ``BackupTarget`` whose repository is opened at its first use.

    A controller creates a storage's repository before the first job that writes
    to it, which may come after the service starts; until then the target lists
    no snapshots. ``attach.open_attached`` builds one for a FileShare path.

    Args:
        location: where the backups go, for messages (no credentials).
        open_repo: opens the repository (called once, on a worker thread).
        exists: whether the repository exists yet (no: ``snapshots`` is empty).
    """

    def __init__(
        self, location: str, open_repo: Callable[[], Repository], exists: Callable[[], bool]
    ) -> None:
        self._location = location
        self._open_repo = open_repo
        self._exists = exists
        self._target: RepositoryTarget | None = None
        self._lock = threading.Lock()  # the store calls targets from worker threads

    def _open(self) -> RepositoryTarget:
        with self._lock:
            if self._target is None:
                self._target = RepositoryTarget(self._open_repo())
            return self._target

    @property
    def location(self) -> str:
        """Where the backups go."""
        return self._location

    def store(self, stream: BinaryIO, *, name: str, meta: SnapshotMeta) -> Snapshot:
        """Store a backup."""
        return self._open().store(stream, name=name, meta=meta)

    def store_file(self, path: Path, *, name: str, meta: SnapshotMeta) -> Snapshot:
        """Store a backup file (see ``RepositoryTarget.store_file``)."""
        return self._open().store_file(path, name=name, meta=meta)

    def close(self) -> None:
        """Stop the backup process, if one runs."""
        if self._target is not None:
            self._target.close()

    def forget(self, snapshot_id: str) -> None:
        """Forget a vetoed backup."""
        self._open().forget(snapshot_id)

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot; none while the repository does not exist yet."""
        if self._target is None and not self._exists():
            return []
        return self._open().snapshots()

    def fetch(self, snapshot: Snapshot, out: BinaryIO) -> int:
        """Read a backup back."""
        return self._open().fetch(snapshot, out)
