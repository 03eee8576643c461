"""
Delta restore: bring an existing data directory to a base backup's files,
reading from the repository only the chunks whose content differs.

pgBackRest's ``--delta``, with the repository's own ids as checksums. Every
chunk of a file in the backup is named by its keyed BLAKE3 id (``repo.blob_id``),
and its length is in the index, so the local file's bytes at that chunk's
offset are hashed with the same key and compared with the id: equal, the chunk
is kept; different (or past the end of the local file), it is fetched. Nothing
of an unchanged chunk is read from the storage; only the trees and the delta
chunk lists' list blobs are, and the changed chunks, in coalesced ranges of
their packs. Local files, links and directories that the backup does not have
are deleted (``pg_wal``'s old segments, ``postmaster.pid``, …); files are cut to
the backup's size; owners, modes and times are set as backed up.

The caller checks that the directory is a stopped copy of the same cluster
(``recovery.py``); this module knows files, not PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from safehold.core.progress import NullProgress, ProgressSink
from safehold.core.snapshot import Snapshot
from safehold.db.errors import DbError
from safehold.repo.errors import IntegrityError
from safehold.repo.index import BlobLocation
from safehold.repo.pack import pack_name
from safehold.repo.repository import Repository
from safehold.repo.restore_io import set_meta
from safehold.repo.tree import ListCache, Node, Tree, content_ids
from safehold.storage import ObjectNotFound, StorageError

__all__ = ["DeltaResult", "delta_restore"]

# Needed chunks are scattered through the packs of the backup that stored them,
# so ranges are coalesced only across small gaps: bytes not needed are not read.
_GAP = 4 * 1024
_MAX_RANGE = 4 * 1024 * 1024


@dataclass
class DeltaResult:
    """
    What a delta restore read and wrote.

    ``bytes_fetched`` counts every byte read from the storage (trees, list
    blobs, pack ranges of the changed chunks, with the gaps read across);
    ``full_bytes`` is what the same backup's blobs take in the storage, which a
    full restore reads at least once.
    """

    files: int = 0
    files_changed: int = 0
    removed: int = 0
    chunks: int = 0
    chunks_fetched: int = 0
    blobs_fetched: int = 0
    bytes_hashed: int = 0
    bytes_written: int = 0
    bytes_fetched: int = 0
    requests: int = 0
    full_bytes: int = 0


@dataclass
class _File:
    rel: str
    node: Node
    slots: list[tuple[int, bytes, BlobLocation]]  # (offset, id, where), in file order


class _Reader:
    """Reads trees and list blobs, counting what they cost."""

    def __init__(self, repo: Repository, result: DeltaResult) -> None:
        self.repo, self.result = repo, result
        self.lock = threading.Lock()
        self.lists = ListCache(self.read)

    def read(self, blob_id: bytes) -> bytes:
        loc = self.repo.locate(blob_id)
        with self.lock:
            self.result.bytes_fetched += loc.entry.length
            self.result.full_bytes += loc.entry.length
            self.result.requests += 1
        return self.repo.read_blob(blob_id)

    def tree(self, tree_id: bytes, prefix: str) -> Tree:
        try:
            return Tree.parse(self.read(tree_id))
        except ValueError as exc:
            raise IntegrityError(f"tree {tree_id.hex()[:16]} under {prefix or '/'}: {exc}") from exc

    def walk(self, tree_id: bytes, prefix: str = "") -> Iterator[tuple[str, Node]]:
        for node in sorted(self.tree(tree_id, prefix).nodes, key=lambda n: n.name):
            yield prefix + node.name, node
            if node.type == "dir" and node.subtree is not None:
                yield from self.walk(node.subtree, f"{prefix}{node.name}/")


def delta_restore(
    repo: Repository,
    snapshot: Snapshot,
    target: Path,
    *,
    root_name: str = "pgdata",
    progress: ProgressSink | None = None,
    workers: int | None = None,
) -> DeltaResult:
    """
    Make *target* hold exactly the files of *snapshot*'s directory *root_name*.

    Raises:
        IntegrityError: a blob is missing or damaged (the files it feeds are
            left incomplete: run the restore again once the repository is repaired).
        DbError: the snapshot is not a single-directory snapshot of *root_name*,
            or it holds a kind of file a data directory does not.
    """
    repo.keys.require_read("restore")
    progress = progress or NullProgress()
    result = DeltaResult()
    reader = _Reader(repo, result)
    top = {n.name: n for n in reader.tree(bytes.fromhex(snapshot.tree), "").nodes}
    root = top.get(root_name)
    if root is None or root.type != "dir" or root.subtree is None or len(top) != 1:
        raise DbError(f"snapshot {snapshot.short_id} is not a backup of one {root_name}/ directory")
    wanted = dict(reader.walk(root.subtree))
    target = Path(target).absolute()
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    base = str(target) + "/"
    result.removed = _remove_extra(base, "", wanted)
    files = _make_entries(base, wanted)
    plans = _plan_files(repo, reader, files, result)
    result.files = len(plans)
    seen: set[bytes] = set()
    for plan in plans:
        for _, blob_id, loc in plan.slots:
            if blob_id not in seen:
                seen.add(blob_id)
                result.full_bytes += loc.entry.length
    n = workers or max(2, repo.storage.properties.connections)
    total = sum(p.node.size for p in plans)
    progress.begin("delta restore", total_bytes=total, total_items=len(plans))
    with ThreadPoolExecutor(n, thread_name_prefix="safehold-delta") as pool:
        needed = list(pool.map(lambda p: _compare(repo, base, p, result), plans))
    progress.advance(done_bytes=result.bytes_hashed)
    _fetch(repo, base, [f for f, need in zip(plans, needed, strict=True) if need], result, n)
    progress.end()
    warnings: list[str] = []
    for rel, node in wanted.items():
        if node.type != "dir":
            set_meta(base + rel, node, warnings)
    for rel, node in sorted(wanted.items(), key=lambda e: -e[0].count("/")):
        if node.type == "dir":
            set_meta(base + rel, node, warnings)
    set_meta(str(target), root, warnings)
    return result


def _remove_extra(base: str, rel_dir: str, wanted: dict[str, Node]) -> int:
    """
    Delete what the backup does not have under *rel_dir*, or has as another kind
    (deepest first); return how many entries. A symbolic link to a directory
    where the backup has a directory (``pg_wal`` on another disk) is kept, and
    what is in it is cleaned the same way.
    """
    removed = 0
    with os.scandir(base + rel_dir) as it:
        entries = list(it)
    for e in entries:
        rel = rel_dir + e.name
        node = wanted.get(rel)
        if e.is_symlink():
            kind = "dir-link" if e.is_dir() else "symlink"
        else:
            kind = "dir" if e.is_dir() else "file" if e.is_file() else "other"
        want = node.type if node is not None else None
        if want == "symlink" and kind == "dir-link":
            continue  # its target is checked when links are made
        if want == "dir" and kind in ("dir", "dir-link"):
            removed += _remove_extra(base, rel + "/", wanted)
            continue
        if want == kind:
            continue
        if kind == "dir":
            shutil.rmtree(e.path)
            removed += 1
        else:
            os.unlink(e.path)
            removed += 1
    return removed


def _make_entries(base: str, wanted: dict[str, Node]) -> list[tuple[str, Node]]:
    """Create missing directories and links (parents first); return the files."""
    files = []
    for rel, node in wanted.items():
        p = base + rel
        if node.type == "dir":
            os.makedirs(p, mode=0o700, exist_ok=True)
        elif node.type == "symlink":
            if os.path.islink(p) and os.readlink(p) == node.target:
                continue
            if os.path.lexists(p):
                os.unlink(p)
            os.symlink(node.target or "", p)
        elif node.type == "file":
            files.append((rel, node))
        else:
            raise DbError(f"the backup holds {rel}, a {node.type}: not a data directory's file")
    return files


def _plan_files(
    repo: Repository, reader: _Reader, files: list[tuple[str, Node]], result: DeltaResult
) -> list[_File]:
    plans = []
    for rel, node in files:
        slots = []
        offset = 0
        for blob_id in content_ids(node, reader.lists):
            loc = repo.locate(blob_id)
            slots.append((offset, blob_id, loc))
            offset += loc.entry.raw_length
        if offset != node.size:
            raise IntegrityError(f"{rel}: its blobs add up to {offset} bytes, not {node.size}")
        result.chunks += len(slots)
        plans.append(_File(rel, node, slots))
    return plans


def _compare(repo: Repository, base: str, plan: _File, result: DeltaResult) -> bool:
    """
    Keep the chunks of *plan*'s local file that match; leave only the others in
    its slots. The file is created if missing and cut to the backup's size.
    """
    p = base + plan.rel
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    hashed = 0
    try:
        size = os.fstat(fd).st_size
        keep_to = min(size, plan.node.size)
        changed = []
        for offset, blob_id, loc in plan.slots:
            n = loc.entry.raw_length
            if offset + n <= keep_to:
                hashed += n
                if repo.blob_id(os.pread(fd, n, offset)) == blob_id:
                    continue
            changed.append((offset, blob_id, loc))
        if size != plan.node.size:
            os.ftruncate(fd, plan.node.size)
    finally:
        os.close(fd)
    plan.slots = changed
    _add(result, hashed, len(changed), bool(changed) or size != plan.node.size)
    return bool(changed)


_COUNT = threading.Lock()


def _add(result: DeltaResult, hashed: int, changed: int, file_changed: bool) -> None:
    with _COUNT:
        result.bytes_hashed += hashed
        result.chunks_fetched += changed
        result.files_changed += file_changed


def _fetch(
    repo: Repository, base: str, plans: list[_File], result: DeltaResult, workers: int
) -> None:
    """Read the changed chunks from their packs, in coalesced ranges, and write them."""
    by_pack: dict[str, dict[bytes, tuple[BlobLocation, list[tuple[str, int]]]]] = defaultdict(dict)
    for plan in plans:
        for offset, blob_id, loc in plan.slots:
            by_pack[loc.pack.id].setdefault(blob_id, (loc, []))[1].append((plan.rel, offset))
    runs = [run for blobs in by_pack.values() for run in _ranges(list(blobs.values()))]
    lock = threading.Lock()

    def write(run: list[tuple[BlobLocation, list[tuple[str, int]]]]) -> None:
        start = run[0][0].entry.offset
        end = max(loc.entry.offset + loc.entry.length for loc, _ in run)
        name = pack_name(run[0][0].pack.id)
        try:
            data = memoryview(repo.storage.get(name, start, end - start))
        except (ObjectNotFound, StorageError) as exc:
            raise IntegrityError(f"pack {name} could not be read: {exc}") from exc
        written = 0
        for loc, places in run:
            e = loc.entry
            plain = repo.decode_blob(loc, data[e.offset - start : e.offset - start + e.length])
            for rel, offset in places:
                fd = os.open(base + rel, os.O_WRONLY | os.O_NOFOLLOW)
                try:
                    view, at = memoryview(plain), offset
                    while view:
                        k = os.pwrite(fd, view, at)
                        view, at = view[k:], at + k
                finally:
                    os.close(fd)
                written += len(plain)
        with lock:
            result.bytes_fetched += end - start
            result.requests += 1
            result.blobs_fetched += len(run)
            result.bytes_written += written

    with ThreadPoolExecutor(workers, thread_name_prefix="safehold-delta-fetch") as pool:
        for f in [pool.submit(write, run) for run in runs]:
            f.result()


def _ranges(
    blobs: list[tuple[BlobLocation, list[tuple[str, int]]]],
) -> Iterator[list[tuple[BlobLocation, list[tuple[str, int]]]]]:
    blobs.sort(key=lambda b: b[0].entry.offset)
    run: list[tuple[BlobLocation, list[tuple[str, int]]]] = []
    end = 0
    for b in blobs:
        e = b[0].entry
        if run and (e.offset - end > _GAP or end - run[0][0].entry.offset > _MAX_RANGE):
            yield run
            run = []
        run.append(b)
        end = e.offset + e.length
    if run:
        yield run
