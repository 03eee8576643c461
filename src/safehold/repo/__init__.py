"""
The backup engine: a deduplicating, compressed, encrypted repository.

Public API (everything else in this package is private)::

    Repository.init(storage, password, *, pack_size=...) -> Repository
    Repository.open(storage, password) -> Repository
    repo.snapshots() -> list[Snapshot]          # oldest first
    repo.find_snapshot("latest" | id | prefix) -> Snapshot
    backup_paths(repo, paths, *, meta, progress, parent) -> BackupResult
    backup_stream(repo, stream, *, name, meta | finish, progress) -> BackupResult
    restore(repo, snapshot, target, *, include, dry_run, progress) -> RestoreResult
    dump(repo, snapshot, out, path=None) -> int
    forget(repo, snapshot_ids) -> None
    prune(repo, *, dry_run, progress) -> PruneResult
    check(repo, *, read_data, progress) -> CheckReport

The format is specified in ``docs/format.md``.
"""

from safehold.repo.backup import BackupResult, backup_paths, backup_stream
from safehold.repo.keys import KdfParams, KeyInfo
from safehold.repo.repository import ChunkerParams, Repository
from safehold.repo.restore import RestoreResult, dump, restore

__all__ = [
    "BackupResult",
    "ChunkerParams",
    "KdfParams",
    "KeyInfo",
    "Repository",
    "RestoreResult",
    "backup_paths",
    "backup_stream",
    "dump",
    "restore",
]

from safehold.repo.check import CheckReport, check, rebuild_index
from safehold.repo.prune import PruneResult, forget, prune

__all__ += ["CheckReport", "PruneResult", "check", "forget", "prune", "rebuild_index"]

from safehold.repo.copy import CopyResult, copy_snapshots  # noqa: E402

__all__ += ["CopyResult", "copy_snapshots"]

from safehold.repo.index_compact import CompactionTrigger, CompactResult, compact_index  # noqa: E402

__all__ += ["CompactResult", "CompactionTrigger", "compact_index"]
