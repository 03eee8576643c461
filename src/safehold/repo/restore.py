"""
Restore: a snapshot, or part of it, into a target directory.

Every blob is verified (authentication tag and content id) before a byte of it
is written. Packs are read in parallel, one coalesced range at a time, and each
blob is written straight to every place that needs it, through descriptors
that stay open while a file's blobs arrive (``restore_io``). Nothing is written
outside the target: names are checked when trees are parsed, and no path
component that the restore creates or meets is followed if it is a symlink.
Files that got damaged data are removed, and the restore fails naming them.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from safehold.core.errors import UsageError
from safehold.core.progress import NullProgress, ProgressSink
from safehold.core.snapshot import Snapshot
from safehold.repo.errors import IntegrityError, RepoError
from safehold.repo.index import BlobLocation
from safehold.repo.pack import pack_name
from safehold.repo.repository import Repository
from safehold.repo.restore_io import OpenFiles, RestoreFile, set_meta
from safehold.repo.tree import ListCache, Node, Tree, content_ids
from safehold.storage import ObjectNotFound, StorageError

__all__ = ["RestoreResult", "dump", "restore", "walk"]

_GAP = 1024 * 1024  # read across gaps up to this size rather than issue another request
_MAX_RANGE = 16 * 1024 * 1024  # and read at most this much at once, to bound memory
_OPEN_FILES = 256  # descriptors kept open at most (files whose blobs are still coming)
_BATCH_BYTES = 32 * 1024 * 1024  # plan this much, then let the workers write it meanwhile
_BATCH_FILES = 1000  # or this many files
_Slot = tuple[RestoreFile, int]  # (the file, offset in it)


@dataclass
class RestoreResult:
    """What a restore did (or, for a dry run, would do)."""

    files: int = 0
    dirs: int = 0
    bytes: int = 0
    planned: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def walk(repo: Repository, tree_id: bytes, prefix: str = "") -> Iterator[tuple[str, Node]]:
    """
    Yield ``(relative path, node)`` for every entry under a tree, parents first.

    Raises:
        IntegrityError: a tree blob is damaged or unsafe.
    """
    try:
        tree = Tree.parse(repo.read_blob(tree_id))
    except ValueError as exc:
        raise IntegrityError(
            f"tree {tree_id.hex()[:16]} under {prefix or '/'} is invalid: {exc}"
        ) from exc
    for node in sorted(tree.nodes, key=lambda n: n.name):
        path = f"{prefix}{node.name}"
        yield path, node
        if node.type == "dir" and node.subtree is not None:
            yield from walk(repo, node.subtree, path + "/")


def _selected(path: str, includes: Sequence[str]) -> tuple[bool, bool]:
    """Return ``(restore it, it is an ancestor of an include)``."""
    if not includes:
        return True, False
    for inc in includes:
        if path == inc or path.startswith(inc + "/"):
            return True, False
    return False, any(inc.startswith(path + "/") for inc in includes)


class _Target:
    """Creates paths under the target without following symlinks it did not make."""

    def __init__(self, root: Path, *, fresh: bool) -> None:
        self.root = root
        self._prefix = str(root).rstrip("/") + "/"
        # Directories this restore created: nothing was in them to clear first.
        self.fresh: set[str] = {self._prefix[:-1] or "/"} if fresh else set()

    def path(self, rel: str) -> str:
        """The target path of *rel* (its names were checked when its tree was parsed)."""
        return self._prefix + rel

    def in_fresh(self, p: str) -> bool:
        """Whether *p*'s directory was created by this restore (so *p* cannot exist yet)."""
        return os.path.dirname(p) in self.fresh

    def make_dir(self, p: str) -> None:
        """Create the directory *p*, or keep the real directory that is there."""
        if self.in_fresh(p):
            try:
                os.mkdir(p, 0o700)
            except FileExistsError:
                pass  # made meanwhile by someone else: treated as found below
            else:
                self.fresh.add(p)
                return
        self.clear(p, keep_dir=True)
        os.makedirs(p, exist_ok=True)

    def clear(self, p: str, *, keep_dir: bool) -> None:
        """Remove what is at *p* unless it is a real directory and *keep_dir*."""
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            raise UsageError(f"{p} is a directory in the target where the snapshot has a file")
        os.unlink(p)


class _Restorer:
    def __init__(
        self, repo: Repository, target: _Target, progress: ProgressSink, warnings: list[str]
    ) -> None:
        self.repo = repo
        self.t = target
        self.progress = progress
        self.lock = threading.Lock()
        self.damaged: dict[str, str] = {}  # path -> reason
        self.files = OpenFiles(_OPEN_FILES, warnings)

    def write_range(self, pack_id: str, blobs: list[tuple[BlobLocation, list[_Slot]]]) -> None:
        start = blobs[0][0].entry.offset
        end = max(loc.entry.offset + loc.entry.length for loc, _ in blobs)
        try:
            data = memoryview(self.repo.storage.get(pack_name(pack_id), start, end - start))
        except (ObjectNotFound, StorageError) as exc:
            reason = f"pack {pack_name(pack_id)} could not be read: {exc}"
            self._fail([t for _, targets in blobs for t in targets], reason)
            return
        for loc, targets in blobs:
            e = loc.entry
            try:
                plain = self.repo.decode_blob(
                    loc, data[e.offset - start : e.offset - start + e.length]
                )
            except IntegrityError as exc:
                self._fail(targets, str(exc))
                continue
            zero = not any(plain[:64]) and plain == bytes(len(plain))
            for f, offset in targets:
                fd = self.files.acquire(f)
                try:
                    # A sparse file was truncated to size: a hole reads as zeros.
                    view, at = memoryview(b"" if f.node.sparse and zero else plain), offset
                    while view:  # a short write is legal; a full disk raises
                        n = os.pwrite(fd, view, at)
                        view, at = view[n:], at + n
                finally:
                    self.files.release(f)
            self.progress.advance(done_bytes=len(plain) * len(targets))

    def _fail(self, targets: list[_Slot], reason: str) -> None:
        with self.lock:
            for f, _ in targets:
                self.damaged.setdefault(f.path, reason)
        for f, _ in targets:
            self.files.give_up(f)


def _ranges(
    blobs: list[tuple[BlobLocation, list[_Slot]]],
) -> Iterator[list[tuple[BlobLocation, list[_Slot]]]]:
    blobs.sort(key=lambda b: b[0].entry.offset)
    run: list[tuple[BlobLocation, list[_Slot]]] = []
    end = 0
    for b in blobs:
        if run and (b[0].entry.offset - end > _GAP or end - run[0][0].entry.offset > _MAX_RANGE):
            yield run
            run = []
        run.append(b)
        end = b[0].entry.offset + b[0].entry.length
    if run:
        yield run


class _Plan:
    """Creates the entries' directories and files, and maps each pack to what it feeds."""

    def __init__(self, repo: Repository, t: _Target, r: _Restorer) -> None:
        self.repo, self.t, self.r = repo, t, r
        self.by_pack: dict[str, dict[bytes, tuple[BlobLocation, list[_Slot]]]] = defaultdict(dict)
        self.links: dict[str, str] = {}
        self.later: list[tuple[str, Node]] = []
        self.files: dict[str, RestoreFile] = {}  # path -> file, for regular files with data
        self.batch_bytes = self.batch_files = 0
        self.load = ListCache(repo.read_blob)  # delta chunk lists' list blobs

    def add(self, rel: str, node: Node, result: RestoreResult) -> None:
        p = self.t.path(rel)
        if node.type == "dir":
            self.t.make_dir(p)
            result.dirs += 1
            return
        if not self.t.in_fresh(p):
            self.t.clear(p, keep_dir=False)
        if node.type != "file" or (node.hardlink and node.hardlink in self.links):
            self.later.append((rel, node))
            return
        if node.hardlink:
            self.links[node.hardlink] = p
        # The file is created when its first blob arrives (restore_io), unless it has none.
        f = RestoreFile(p, node, 0)
        slots: list[tuple[BlobLocation, bytes, int]] = []
        offset = 0
        try:
            ids = content_ids(node, self.load)
        except IntegrityError as exc:  # its chunk list is missing or damaged
            with self.r.lock:
                self.r.damaged[p] = str(exc)
            ids, offset = [], node.size  # nothing to write; not "adds up to 0 bytes"
        for blob_id in ids:
            try:
                loc = self.repo.locate(blob_id)
            except IntegrityError as exc:
                with self.r.lock:
                    self.r.damaged[p] = str(exc)
                slots = []
                break
            slots.append((loc, blob_id, offset))
            offset += loc.entry.raw_length
        else:
            if offset != node.size:
                with self.r.lock:
                    self.r.damaged[p] = f"its blobs add up to {offset} bytes, not {node.size}"
                slots = []
        f.pending = len(slots)
        self.batch_files += 1
        self.batch_bytes += node.size
        for loc, blob_id, at in slots:
            self.by_pack[loc.pack.id].setdefault(blob_id, (loc, []))[1].append((f, at))
        if slots:
            self.files[p] = f
        else:
            os.close(f.create())  # empty (or damaged: it is removed at the end)
        result.files += 1
        result.bytes += node.size

    def flush(self, pool: ThreadPoolExecutor) -> list[Future[None]]:
        """Hand every pack range planned so far to the workers, and start a new batch."""
        futures = [
            pool.submit(self.r.write_range, pack_id, run)
            for pack_id, blobs in self.by_pack.items()
            for run in _ranges(list(blobs.values()))
        ]
        self.by_pack.clear()
        self.batch_bytes = self.batch_files = 0
        return futures

    def run(self, entries: list[tuple[str, Node]], result: RestoreResult, workers: int) -> None:
        """
        Plan every entry and write the files' contents, in batches.

        Workers write one batch while the next is planned, so the walk through
        the entries (Python, one thread) overlaps the writing. A pack that
        feeds two batches is read in two ranges; consecutive files mostly sit
        in consecutive packs, so that is rare.
        """
        futures: list[Future[None]] = []
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="safehold-restore") as pool:
                for rel, node in entries:
                    self.add(rel, node, result)
                    if self.batch_bytes >= _BATCH_BYTES or self.batch_files >= _BATCH_FILES:
                        futures += self.flush(pool)
                futures += self.flush(pool)
                for f in futures:
                    f.result()
        finally:
            self.r.files.close_all()


def _select(repo: Repository, snapshot: Snapshot, includes: list[str]) -> list[tuple[str, Node]]:
    entries = []
    for path, node in walk(repo, bytes.fromhex(snapshot.tree)):
        take, ancestor = _selected(path, includes)
        if take or (ancestor and node.type == "dir"):
            entries.append((path, node))
    if includes and not any(_selected(p, includes)[0] for p, _ in entries):
        raise UsageError(f"nothing in snapshot {snapshot.short_id} matches {', '.join(includes)}")
    return entries


def _dry_run(entries: list[tuple[str, Node]]) -> RestoreResult:
    result = RestoreResult()
    for path, node in entries:
        result.planned.append(f"{path}/" if node.type == "dir" else path)
        result.files += node.type == "file"
        result.dirs += node.type == "dir"
        result.bytes += node.size if node.type == "file" else 0
    return result


def restore(
    repo: Repository,
    snapshot: Snapshot,
    target: str | os.PathLike[str],
    *,
    include: Sequence[str] = (),
    dry_run: bool = False,
    progress: ProgressSink | None = None,
    workers: int | None = None,
) -> RestoreResult:
    """
    Restore *snapshot* (or the paths in *include*) under *target*.

    Existing files at the same paths are replaced; nothing else in the target
    is touched.

    Raises:
        IntegrityError: some data was damaged; those files are not left behind,
            and the message names them and the damaged pack.
        KeyNotAllowed: the key is write-only.
    """
    repo.keys.require_read("restore")
    progress = progress or NullProgress()
    entries = _select(repo, snapshot, [i.strip("/") for i in include if i.strip("/")])
    if dry_run:
        return _dry_run(entries)
    result = RestoreResult()
    root = Path(target).absolute()
    t = _Target(root, fresh=_make_root(root))
    r = _Restorer(repo, t, progress, result.warnings)
    total = sum(n.size for _, n in entries if n.type == "file")
    progress.begin("restore", total_bytes=total, total_items=len(entries))
    # 1. Directories and empty files; 2. the other files, batch by batch.
    plan = _Plan(repo, t, r)
    try:
        plan.run(
            entries,
            result,
            workers or max(os.cpu_count() or 2, repo.storage.properties.connections),
        )
    except OSError as exc:
        where = exc.filename or root
        raise RepoError(f"cannot write {where} in the restore target: {exc.strerror}") from exc
    # 3. Links and special files, then metadata (directories last, deepest first).
    for rel, node in plan.later:
        _make_special(t.path(rel), node, plan.links, result)
    for rel, node in entries:
        p = t.path(rel)
        f = plan.files.get(p)
        if node.type != "dir" and (f is None or not f.done) and p not in r.damaged:
            set_meta(p, node, result.warnings)  # files with data were finished as written
    dirs = sorted((e for e in entries if e[1].type == "dir"), key=lambda e: -e[0].count("/"))
    for rel, node in dirs:
        set_meta(t.path(rel), node, result.warnings)
    progress.end()
    if r.damaged:
        for p in r.damaged:
            Path(p).unlink(missing_ok=True)
        lines = "; ".join(
            f"{os.path.relpath(p, root)}: {why}" for p, why in sorted(r.damaged.items())
        )
        raise IntegrityError(
            f"{len(r.damaged)} file(s) not restored, their data is damaged: {lines}"
        )
    return result


def _make_root(root: Path) -> bool:
    """
    Create the target directory; return whether it is new (or empty).

    Raises:
        UsageError: it cannot be created, or it is not a directory.
    """
    if root.exists() and not root.is_dir():
        raise UsageError(f"the restore target {root} exists and is not a directory")
    try:
        fresh = not root.exists() or not any(root.iterdir())
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise UsageError(f"the restore target {root} exists and is not a directory") from exc
    except OSError as exc:
        raise UsageError(f"cannot create the restore target {root}: {exc.strerror}") from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write into the restore target {root}: permission denied")
    return fresh


def _make_special(p: str, node: Node, links: dict[str, str], result: RestoreResult) -> None:
    try:
        if node.type == "file" and node.hardlink:
            os.link(links[node.hardlink], p, follow_symlinks=False)
            result.files += 1
        elif node.type == "symlink":
            os.symlink(node.target or "", p)
        elif node.type == "fifo":
            os.mkfifo(p, stat.S_IMODE(node.mode))
        elif node.type in ("chardev", "blockdev"):
            os.mknod(p, node.mode, node.rdev)
        elif node.type == "socket":
            return  # sockets are not restorable; their listing is enough
    except OSError as exc:
        result.warnings.append(f"{p}: cannot create {node.type}: {exc.strerror}")


def dump(repo: Repository, snapshot: Snapshot, out: IO[bytes], path: str | None = None) -> int:
    """
    Write one file of *snapshot* to the binary stream *out*; return its size.

    Without *path*, the snapshot must hold exactly one file (a stream backup).

    Raises:
        UsageError: no such file, or *path* is needed.
        IntegrityError: its data is damaged (nothing damaged is written).
    """
    repo.keys.require_read("dump")
    files = [(p, n) for p, n in walk(repo, bytes.fromhex(snapshot.tree)) if n.type == "file"]
    if path is None:
        if len(files) != 1:
            raise UsageError(f"snapshot {snapshot.short_id} holds {len(files)} files; name one")
        node = files[0][1]
    else:
        want = path.strip("/")
        match = [n for p, n in files if p == want]
        if not match:
            raise UsageError(f"no file {want!r} in snapshot {snapshot.short_id}")
        node = match[0]
    written = 0
    for blob_id in content_ids(node, repo.read_blob):
        data = repo.read_blob(blob_id)
        out.write(data)
        written += len(data)
    return written
