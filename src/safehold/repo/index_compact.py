"""
Index compaction (``docs/format.md`` § Index compaction).

Every backup writes at least one small index file and nothing but prune and
``repair index`` ever merges them, so in a fleet, where thousands of
partitions back up into one repository, ``index/`` grows by one file per
backup, and so does the listing each refresh starts with. ``compact_index``
merges a batch of small index files into bounded ones (``write_index_files``,
at most ``FILE_MAX_BLOBS`` blobs a file, each naming the files it supersedes)
and then deletes the merged files. ``CompactionTrigger`` decides, after a
backup, from the file count the backup's refresh already knows, whether to.

Safety, in the order things happen:

- It runs under the repository's shared lock: never while prune (exclusive)
  runs, and alongside backups, which only add files.
- Index files are read strictly: a damaged, unreadable or vanished one is
  neither merged nor deleted. A merged file holds every pack entry of every
  file it supersedes.
- The merged files are written before any old file is deleted, so a crash in
  between leaves the union of the old and new files: nothing is lost.
- Two compactors racing each write complete files; the second one's deletes
  find the files gone, which is not an error. The duplicates are merged away
  by a later compaction (entries are deduplicated by pack).
- Held (object-locked, append-only) index files are never merged, so no
  delete is even tried on them; a delete refused anyway is skipped.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from safehold.repo.errors import IntegrityError
from safehold.repo.holds import holds_of, lock_of
from safehold.repo.index import Index, read_index_file, write_index_files
from safehold.repo.locks import RepoLock
from safehold.repo.pack import BlobEntry, PackInfo
from safehold.repo.repository import Repository
from safehold.storage import ObjectInfo, ObjectLocked, ObjectNotFound, StorageError

__all__ = [
    "BATCH_FILES",
    "COMPACT_FILES",
    "SMALL_FILE_BYTES",
    "CompactResult",
    "CompactionTrigger",
    "compact_index",
    "index_file_count",
]

log = logging.getLogger("safehold.repo")

# Compact once a repository holds this many index files more than its last
# compaction left. Below it, a listing is one S3 page (1,000 keys) and a few
# milliseconds on a file system; each compaction then costs about one read
# and one delete per backup that wrote a file, against a listing per backup.
COMPACT_FILES = 256
# Only files smaller than this are merged. An index file takes about 38 bytes a
# blob (measured: ids are hex, compressed), a tiny backup's file about 350
# bytes, a full one (``FILE_MAX_BLOBS``) about 1.9 MB: this is about 7,000
# blobs, a seventh of a full file. Larger files are already bounded: there are
# at most (blobs / 7,000) of them, a count that grows with the data, not with
# the number of backups. A merged file stays a candidate until it passes this
# size, so a blob is rewritten a few times at most (each round adds 256 files).
SMALL_FILE_BYTES = 256 << 10
# At most this many files are merged in one run: it bounds the pause of the
# backup that runs it and its memory. Measured on the file backend of a busy
# 2-core machine: about 1.3 ms a file (read, verify, delete), so about 1.3 s
# here; a steady run (about 300 files) about 0.5 s, once in 300 backups. A
# repository far behind catches up over several backups.
BATCH_FILES = 1024
# Fewer small files than this are not worth a lock and a write.
MIN_FILES = 16


@dataclass
class CompactResult:
    """
    What a compaction did.

    Attributes:
        merged: the index files merged and then deleted (or found already gone).
        written: the new index files.
        kept: files that were merged but could not be deleted (held, or a
            storage error): harmless, the union still holds; a later
            compaction or prune removes them.
        skipped: one message per small file left out (damaged, unreadable,
            held, or naming a pack differently from another file).
        files_left: index files in the repository afterwards, as far as this
            run knows (what it listed, less what it deleted, plus what it wrote).
        pending: small files left for a later run (more than one batch).
    """

    merged: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    packs: int = 0
    blobs: int = 0
    files_left: int = 0
    pending: int = 0


def index_file_count(index: Index) -> int:
    """
    How many index files *index* holds: what its last load or refresh listed
    and read, without a listing (the tables keep their count in the header).
    """
    return len(index.files) + sum(t.files for t in index.tables)


def _read_strict(repo: Repository, names: Sequence[str]) -> list[tuple[str, list[PackInfo] | str]]:
    """Read each file in parallel; a failure becomes its message, never an exception."""

    def one(name: str) -> list[PackInfo] | str:
        try:
            return read_index_file(repo.storage, name, repo.keys.index_key)
        except ObjectNotFound:
            return f"index file {name} is gone (another compaction merged it)"
        except (IntegrityError, StorageError) as exc:
            return f"index file {name} was not merged: {exc}"

    with ThreadPoolExecutor(max(1, repo.storage.properties.connections)) as pool:
        return list(zip(names, pool.map(one, names), strict=True))


def _merge(packs: dict[str, PackInfo], infos: list[PackInfo]) -> dict[str, PackInfo] | None:
    """
    *packs* with *infos* added (blobs of a pack named twice are united); None if
    a pack is named with another generation, key or size, so that the file
    holding it is not merged: every entry of a merged file must survive as it is.
    """
    add: dict[str, PackInfo] = {}
    for p in infos:
        have = add.get(p.id) or packs.get(p.id)
        if have is None:
            add[p.id] = p
            continue
        if (have.gen, have.eph, have.size) != (p.gen, p.eph, p.size):
            return None
        if have.blobs != p.blobs:
            seen = {b.id for b in have.blobs}
            extra: tuple[BlobEntry, ...] = tuple(b for b in p.blobs if b.id not in seen)
            add[p.id] = PackInfo(p.id, p.gen, p.eph, p.size, have.blobs + extra)
    packs.update(add)
    return packs


def _candidates(
    repo: Repository, listing: list[ObjectInfo], small_bytes: int, batch: int, result: CompactResult
) -> list[str]:
    """The small files to merge, smallest first, held ones left out."""
    small = sorted((i for i in listing if i.size < small_bytes), key=lambda i: (i.size, i.name))
    names = [i.name for i in small[:batch]]
    result.pending = len(small) - len(names)
    lock = lock_of(repo)
    if lock is None or not names:
        return names
    if lock[1].mode == "append-only":
        # Nothing can ever be deleted: merging would only add files.
        result.skipped.append("the repository is append-only: its index files are held for good")
        return []
    held = holds_of(repo, names)
    for h in held.values():
        result.skipped.append(f"index file {h.describe()}")
    return [n for n in names if n not in held]


def compact_index(
    repo: Repository,
    *,
    batch: int = BATCH_FILES,
    small_bytes: int = SMALL_FILE_BYTES,
    min_files: int = 2,
    wait: float = 0.0,
) -> CompactResult:
    """
    Merge up to *batch* index files smaller than *small_bytes* into bounded
    files, then delete the merged ones; do nothing if fewer than *min_files*
    can be merged.

    Takes the repository's shared lock for *wait* seconds at most. The
    repository's own index is left as it is (its next refresh sees the change).

    Raises:
        RepositoryLocked: prune holds the exclusive lock.
        StorageError: the listing or a merged file's write failed; nothing was
            deleted then.
    """
    result = CompactResult()
    with RepoLock(repo.storage, exclusive=False, wait=wait):
        listing = list(repo.storage.list("index/"))
        result.files_left = len(listing)
        names = _candidates(repo, listing, small_bytes, batch, result)
        if len(names) < min_files:
            return result
        packs: dict[str, PackInfo] = {}
        merged: list[str] = []
        for name, got in _read_strict(repo, names):
            if isinstance(got, str):
                result.skipped.append(got)
                continue
            out = _merge(packs, got)
            if out is None:
                result.skipped.append(f"index file {name} names a pack unlike another file does")
                continue
            packs = out
            merged.append(name)
        if len(merged) < min_files:
            return result
        infos = list(packs.values())
        result.written = write_index_files(
            repo.storage, repo.keys.index_key, infos, supersedes=merged
        )
        result.packs, result.blobs = len(infos), sum(len(p.blobs) for p in infos)
        result.merged = [n for n in merged if n not in result.written]
        result.kept = _delete(repo, result.merged)
        result.merged = [n for n in result.merged if n not in result.kept]
        result.files_left += len(result.written) - len(result.merged)
    return result


def _delete(repo: Repository, names: list[str]) -> list[str]:
    """Delete *names* (a missing one is fine); return those that could not be deleted."""

    def one(name: str) -> str | None:
        try:
            repo.storage.delete(name)
        except ObjectLocked:
            return name  # held after all: it stays, superseded and agreeing
        except StorageError as exc:
            log.warning("index compaction: %s stays (%s)", name, exc)
            return name
        return None

    with ThreadPoolExecutor(max(2, repo.storage.properties.connections)) as pool:
        return [n for n in pool.map(one, names) if n is not None]


class CompactionTrigger:
    """
    Decides after each backup whether to compact, from the index the backup
    refreshed: no listing unless it compacts. Thread-safe; one per long-lived
    engine.

    It compacts when the repository holds more than ``limit`` index files
    (*threshold*, more for a large index in memory) beyond what the last compaction here
    left (large, held or damaged files that compaction cannot shrink would
    otherwise trigger it at every backup). A random margin of up to half the
    limit, drawn at each backup, spreads
    the agents of a fleet sharing the repository, so they seldom compact the
    same files at once.
    """

    def __init__(
        self,
        threshold: int = COMPACT_FILES,
        *,
        jitter: bool = True,
        batch: int = BATCH_FILES,
        small_bytes: int = SMALL_FILE_BYTES,
        min_files: int = MIN_FILES,
    ) -> None:
        self.threshold = threshold
        self.min_files = min_files
        self.batch = batch
        self.small_bytes = small_bytes
        self._jitter = jitter
        self._floor: dict[str, int] = {}
        self._lock = threading.Lock()
        self._running = threading.Lock()  # one compaction at a time per trigger (process)

    def limit(self, index: Index) -> int:
        """
        How many index files beyond the floor *index* may hold: *threshold*, or
        ``sqrt(2 * blobs)`` for an index held in memory.

        A reader whose index is in memory (up to ``MEMORY_BLOBS``) reads it all
        again after a compaction deleted files it held, at about the cost per
        blob that a listing has per file (measured: 40 to 70 µs each on a busy
        machine). With T files between compactions a backup pays about T/2
        files of listing and blobs/T of reload; ``sqrt(2 * blobs)`` makes the
        sum smallest (447 at 100,000 blobs). A reader with tables rebuilds only
        those above the oldest that held a merged file: 0.1 to 0.2 s measured,
        whatever the repository's size, so *threshold* holds there.
        """
        if index.tables:
            return self.threshold
        return max(self.threshold, math.isqrt(2 * len(index)))

    def due(self, repo: Repository) -> bool:
        """Whether *repo* holds enough index files for a compaction (no storage access)."""
        count = index_file_count(repo.index)
        limit = self.limit(repo.index)
        with self._lock:
            floor = self._floor.get(str(repo.config.get("id")), 0)
        margin = secrets.randbelow(limit // 2 + 1) if self._jitter else 0
        return count > floor + limit + margin

    def after_backup(self, repo: Repository) -> CompactResult | None:
        """
        Compact *repo* if due; return what was done, or None.

        Never raises for a failed compaction (the backup is already stored): it
        is logged, and tried again after *threshold* more index files. While
        one compaction runs, other backups through this trigger do not start
        another (nor wait for it): they return None at once.
        """
        if not self.due(repo) or not self._running.acquire(blocking=False):
            return None
        try:
            return self._compact(repo)
        finally:
            self._running.release()

    def _compact(self, repo: Repository) -> CompactResult | None:
        rid = str(repo.config.get("id"))
        try:
            result = compact_index(
                repo, batch=self.batch, small_bytes=self.small_bytes, min_files=self.min_files
            )
        except Exception as exc:  # the backup it follows has succeeded: never fail it
            log.warning("index compaction of %s failed: %s", repo.storage.properties.location, exc)
            with self._lock:
                self._floor[rid] = index_file_count(repo.index)
            return None
        with self._lock:
            # Catching up (more small files than one batch): the next backup goes on.
            behind = result.pending > 0 and bool(result.merged)
            self._floor[rid] = 0 if behind else result.files_left
        if result.merged:
            log.info(
                "index compaction: %d index files merged into %d (%d blobs)",
                len(result.merged),
                len(result.written),
                result.blobs,
            )
        return result
