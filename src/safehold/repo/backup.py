"""
Backup: a directory tree or a stream into a new snapshot.

The walker (the calling thread) lists directories depth first and hands large
files to a pool of readers; small ones it reads itself, a group at a time, after
a prefetch thread has asked the kernel to read them ahead (``backup_read``).
Each reader chunks its file with FastCDC and stores the
chunks through the ``BlobWriter``; hashing, compression and encryption release
the GIL, so readers run on all cores. A directory's tree is stored as soon as
its last child is done, so memory holds only directories still in progress.

A file whose size or times change while it is read is read again; if it keeps
changing it is stored as last read and reported, never silently.
Files unchanged since the parent snapshot (same size, mtime, ctime and inode)
are taken from it without being read.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import BinaryIO

from safehold.core.errors import UsageError
from safehold.core.progress import NullProgress, ProgressSink
from safehold.core.snapshot import Snapshot, SnapshotMeta, SnapshotSizes
from safehold.repo.backup_read import GROUP, INLINE, Prefetcher, ReadBuffer, make_chunker
from safehold.repo.backup_support import find_parent, make_snapshot, scan_totals
from safehold.repo.errors import IntegrityError
from safehold.repo.exclude import CACHEDIR_TAG, ExcludeOptions, Excluder
from safehold.repo.filescache import FilesCache
from safehold.repo.locks import RepoLock
from safehold.repo.pack import DATA, TREE
from safehold.repo.repository import Repository
from safehold.repo.tree import Node, Tree
from safehold.repo.writer import BlobWriter

__all__ = ["BackupResult", "backup_paths", "backup_stream"]

_READ_TRIES = 3
_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
    stat.S_IFSOCK: "socket",
}


@dataclass
class BackupResult:
    """What a backup did."""

    snapshot: Snapshot
    warnings: list[str] = field(default_factory=list)
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    dirs: int = 0
    bytes_read: int = 0
    trees_reused: int = 0  # directories whose tree was the parent snapshot's, unchanged


class _Dir:
    """A directory being backed up: its nodes, and how many children are unfinished."""

    __slots__ = ("node", "nodes", "parent", "pending", "prev_id", "prev_nodes", "small")

    def __init__(self, parent: _Dir | None, node: Node | None) -> None:
        self.parent = parent
        self.node = node
        self.nodes: list[Node] = []
        self.pending = 1  # the walk of this directory itself
        # The parent snapshot's tree of this directory: reused as it is when
        # every entry came out equal, instead of serialized and hashed again.
        self.prev_id: bytes | None = None
        self.prev_nodes: list[Node] | None = None
        self.small: list[tuple[str, Node]] = []  # small files to read, prefetched


def _meta_node(name: str, st: os.stat_result) -> Node:
    return Node(
        name=name,
        type=_TYPES.get(stat.S_IFMT(st.st_mode), "file"),
        mode=st.st_mode,
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
        dev=st.st_dev,
        size=st.st_size if stat.S_ISREG(st.st_mode) else 0,
    )


def _name(node: Node) -> str:
    return node.name


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in names:
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            continue
    return out


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino) == (
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
        b.st_ino,
    )


class _Backup:
    """One run of a directory backup."""

    def __init__(
        self,
        repo: Repository,
        writer: BlobWriter,
        progress: ProgressSink,
        workers: int,
        excluder: Excluder | None = None,
    ) -> None:
        self.repo = repo
        self.excluder = excluder or Excluder(ExcludeOptions(ignore_files=False))
        self.fs_dev: int | None = None  # the device of the root being walked (one-file-system)
        self.writer = writer
        self.progress = progress
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="safehold-read")
        self.inflight = threading.BoundedSemaphore(workers * 4)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.root_id: bytes | None = None
        self.error: BaseException | None = None
        self.result_warnings: list[str] = []
        self.counts = {"new": 0, "changed": 0, "unmodified": 0, "dirs": 0, "files": 0}
        self.bytes_read = 0
        self.logical = 0
        self.local = threading.local()
        self.files_cache: FilesCache | None = None  # write-only hosts: no parent to read
        self.trees_reused = 0
        self.prefetch: Prefetcher | None = Prefetcher()

    def warn(self, msg: str) -> None:
        with self.lock:
            self.result_warnings.append(msg)
        self.progress.warn(msg)

    # -- finishing directories -------------------------------------------------

    def _finish_one(self, d: _Dir) -> None:
        """A child of *d* (or its own walk) is done; store its tree when all are."""
        while True:
            with self.lock:
                d.pending -= 1
                if d.pending:
                    return
            nodes = [n for n in d.nodes if n.type not in ("unreadable", "excluded")]
            tree_id = self._reused_tree(d, nodes)
            if tree_id is None:
                tree_id, _ = self.writer.save(TREE, Tree(nodes).serialize())
            d.prev_nodes = None
            d.nodes = []
            if d.node is not None:
                d.node.subtree = tree_id
            if d.parent is None:
                self.root_id = tree_id
                self.done.set()
                return
            d = d.parent

    def _reused_tree(self, d: _Dir, nodes: list[Node]) -> bytes | None:
        """
        The parent snapshot's id for *d*'s tree if *nodes* are exactly its
        entries (so the tree would serialize to the same bytes), else None.
        """
        prev = d.prev_nodes
        if prev is None or d.prev_id is None or len(prev) != len(nodes):
            return None
        if sorted(nodes, key=_name) != sorted(prev, key=_name):
            return None
        if not self.repo.index.has(d.prev_id):
            return None
        with self.lock:
            self.trees_reused += 1
        return d.prev_id

    # -- reading files -----------------------------------------------------------

    def _read_file(self, path: str, node: Node) -> None:
        try:
            content, st, torn = self._chunk_file(path)
            if torn:
                self.warn(f"{path}: changed while it was read; stored as last read")
            node.content = content
            node.size = st.st_size
            node.mtime_ns, node.ctime_ns = st.st_mtime_ns, st.st_ctime_ns
            if self.files_cache is not None and not torn:
                self.files_cache.record(path, node)
        except OSError as exc:
            self.warn(f"{path}: cannot read: {exc.strerror}; not in this snapshot")
            node.type = "unreadable"
        except BaseException as exc:
            self.error = self.error or exc
            self.done.set()

    def _chunk_file(self, path: str) -> tuple[list[bytes], os.stat_result, bool]:
        buf = self._buffer()
        for attempt in range(_READ_TRIES):
            content: list[bytes] = []
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0))
            try:
                before = os.fstat(fd)
                read = 0
                for chunk in buf.chunks(fd):
                    blob_id, new = self.writer.save(DATA, chunk)
                    content.append(blob_id)
                    read += len(chunk)
                    self.progress.advance(done_bytes=len(chunk), new_bytes=len(chunk) if new else 0)
                after = os.fstat(fd)
            finally:
                os.close(fd)
            with self.lock:
                self.bytes_read += read
            if _same_file(before, after) and read == after.st_size:
                return content, after, False
            if attempt == _READ_TRIES - 1:
                return content, after, True
        raise AssertionError("unreachable")

    def _buffer(self) -> ReadBuffer:
        buf: ReadBuffer | None = getattr(self.local, "buf", None)
        if buf is None:
            buf = self.local.buf = ReadBuffer(make_chunker(self.repo), self.repo.chunker.max)
        return buf

    def finish_dir(self, d: _Dir) -> None:
        """The walk of *d* is over: read its last small files, then finish it."""
        self.read_small(d)
        self._finish_one(d)

    def shutdown(self) -> None:
        """Wait for the readers, and stop the prefetch thread."""
        self.pool.shutdown(wait=True)
        if self.prefetch is not None:
            self.prefetch.close()
            self.prefetch = None

    def read_small(self, d: _Dir) -> None:
        """Read the small files of *d* named to the prefetcher so far."""
        todo, d.small = d.small, []
        for path, node in todo:
            if self.error is not None:
                return
            self._read_file(path, node)

    def _file_task(self, path: str, node: Node, d: _Dir) -> None:
        try:
            self._read_file(path, node)
        finally:
            self.inflight.release()
            try:
                self._finish_one(d)
            except BaseException as exc:
                self.error = self.error or exc
                self.done.set()

    # -- walking -----------------------------------------------------------------

    def walk_dir(self, path: str, d: _Dir, parent_tree: Tree | None, ex: Excluder) -> None:
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            self.warn(f"{path}: cannot list: {exc.strerror}")
            entries = []
        if ex.active and entries:
            names = {e.name for e in entries}
            if ex.marked(path, names) and d.node is not None:
                d.node.type = "excluded"  # --exclude-if-present: the directory goes
                self.counts["dirs"] -= 1
                entries = []
            elif ex.cache_dir(path, names):
                entries = [e for e in entries if e.name == CACHEDIR_TAG]
            try:
                ex = ex.child(path, names)
            except UsageError as exc:
                self.warn(f"{path}: {exc.message}; its ignore file is not used")
        # A dict, not Tree.get: a directory of N files would cost N² lookups.
        parent = {n.name: n for n in parent_tree.nodes} if parent_tree is not None else None
        for entry in entries:
            if self.error is not None:
                return
            self.add_entry(entry.path, entry.name, d, parent, ex)
        self.finish_dir(d)

    def add_entry(
        self, path: str, name: str, d: _Dir, parent: dict[str, Node] | None, ex: Excluder
    ) -> None:
        try:
            st = os.lstat(path)
        except OSError as exc:
            self.warn(f"{path}: cannot stat: {exc.strerror}")
            return
        if ex.rules and ex.excluded(path, name, stat.S_ISDIR(st.st_mode)):
            return
        if stat.S_ISREG(st.st_mode) and ex.too_large(st.st_size):
            return
        if d.parent is None and d.node is None:
            self.fs_dev = st.st_dev  # a root of the backup
        node = _meta_node(name, st)
        node.xattrs = _xattrs(path) if node.type in ("file", "dir") else {}
        prev = parent.get(name) if parent is not None else None
        d.nodes.append(node)
        self.progress.advance(items=1)
        if node.type == "dir":
            self.counts["dirs"] += 1
            with self.lock:
                d.pending += 1
            child = _Dir(d, node)
            if ex.options.one_file_system and st.st_dev != self.fs_dev:
                self._finish_one(child)  # a mount point: kept, empty
                return
            sub = self._parent_subtree(prev)
            if sub is not None and prev is not None:
                child.prev_id, child.prev_nodes = prev.subtree, sub.nodes
            self.walk_dir(path, child, sub, ex)
        elif node.type == "symlink":
            try:
                node.target = os.fsdecode(os.readlink(path))
            except OSError as exc:
                self.warn(f"{path}: cannot read link: {exc.strerror}")
        elif node.type == "file":
            self._add_file(path, node, st, prev, d)
        elif node.type in ("chardev", "blockdev"):
            node.rdev = st.st_rdev

    def _add_file(
        self, path: str, node: Node, st: os.stat_result, prev: Node | None, d: _Dir
    ) -> None:
        self.counts["files"] += 1
        self.logical += st.st_size
        if st.st_nlink > 1:
            node.hardlink = f"{st.st_dev}:{st.st_ino}"
        node.sparse = st.st_blocks * 512 < st.st_size
        if prev is None and self.files_cache is not None:
            prev = self.files_cache.previous(path, node)
        if (
            prev is not None
            and prev.type == "file"
            and (prev.size, prev.mtime_ns, prev.ctime_ns, prev.inode)
            == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            and prev.chunk_list is None  # a delta chunk list (a database's): read it again
            and all(self.repo.index.has(c) for c in prev.content)
        ):
            node.content = list(prev.content)
            self.counts["unmodified"] += 1
            self.progress.advance(done_bytes=st.st_size)
            return
        self.counts["changed" if prev is not None else "new"] += 1
        if st.st_size <= INLINE:
            # Handing a small file to another thread costs more than reading
            # it; but a cold one is read ahead, with others (backup_read).
            if self.prefetch is None:
                self._read_file(path, node)
                return
            self.prefetch.add(path)
            d.small.append((path, node))
            if len(d.small) >= GROUP:
                self.read_small(d)
            return
        with self.lock:
            d.pending += 1
        self.inflight.acquire()
        self.pool.submit(self._file_task, path, node, d)

    def _parent_subtree(self, prev: Node | None) -> Tree | None:
        if prev is None or prev.type != "dir" or prev.subtree is None:
            return None
        try:
            return Tree.parse(self.repo.read_blob(prev.subtree))
        except (IntegrityError, ValueError) as exc:
            self.warn(f"parent snapshot tree unreadable, reading everything again: {exc}")
            return None


#: How long a backup waits for an exclusive lock (a prune) to go, by default.
LOCK_WAIT = 30.0


def backup_paths(
    repo: Repository,
    paths: Sequence[str | os.PathLike[str]],
    *,
    meta: SnapshotMeta | None = None,
    progress: ProgressSink | None = None,
    parent: str | None = None,
    search_parent: bool = True,
    workers: int | None = None,
    excludes: ExcludeOptions | None = None,
    lock_wait: float = LOCK_WAIT,
) -> BackupResult:
    """
    Back up files and directories into a new snapshot.

    Args:
        paths: what to back up; each becomes an entry of the snapshot's root,
            named by its last component.
        meta: what to record in the manifest (host, tags, partition, chain...).
        parent: the snapshot to compare with; by default the newest with the
            same host and paths.
        search_parent: False when *parent* is all there is (None: no parent), so
            that no snapshot is listed (a service job names its partition's).
        workers: reader threads; by default one per core.
        excludes: what to leave out (see ``repo.exclude``); by default
            nothing (the CLI reads ``.safeholdignore`` files unless told not to).
        lock_wait: how long to wait for an exclusive lock (a prune) to go.

    Returns:
        The stored snapshot, and the warnings (unreadable or changing files).

    Raises:
        UsageError: a path does not exist, two paths share a last component, or
            an exclude pattern is invalid.
        RepositoryLocked: an exclusive lock (prune) is held.
    """
    meta = meta or SnapshotMeta()
    progress = progress or NullProgress()
    abs_paths = [os.path.abspath(os.fspath(p)) for p in paths]
    if not abs_paths:
        raise UsageError("nothing to back up: give at least one path")
    names = [os.path.basename(p.rstrip("/")) or "root" for p in abs_paths]
    if len(set(names)) != len(names):
        raise UsageError("two of the paths end in the same name; back them up separately")
    for p in abs_paths:
        if not os.path.lexists(p):
            raise UsageError(f"{p} does not exist")
    # Library callers (the service, the state store) get everything unless they ask.
    excluder = Excluder.from_options(excludes or ExcludeOptions(ignore_files=False))
    host = meta.host or socket.gethostname()
    with RepoLock(repo.storage, exclusive=False, wait=lock_wait):
        # A prune may have run since the index was loaded: dedup must not
        # trust blobs in packs it deleted.
        repo.refresh_index()
        parent_snap = find_parent(repo, abs_paths, host, parent, search=search_parent)
        parent_root = (
            Tree.parse(repo.read_blob(bytes.fromhex(parent_snap.tree))) if parent_snap else None
        )
        n = workers or os.cpu_count() or 2
        writer = BlobWriter(repo, progress=progress)
        run = _Backup(repo, writer, progress, n, excluder)
        if not repo.keys.can_read:
            run.files_cache = FilesCache.open(
                repo.cache_dir, repo.keys.index_key, repo.config.get("id")
            )
        progress.begin("backup", total_bytes=None, total_items=None)
        if not isinstance(progress, NullProgress):  # a second walk, only for an ETA
            scan = threading.Thread(target=scan_totals, args=(abs_paths, progress), daemon=True)
            scan.start()
        try:
            root = _Dir(None, None)
            if parent_snap is not None and parent_root is not None:
                root.prev_id, root.prev_nodes = bytes.fromhex(parent_snap.tree), parent_root.nodes
            roots = {n.name: n for n in parent_root.nodes} if parent_root is not None else None
            for p, name in zip(abs_paths, names, strict=True):
                if run.error is None:
                    run.add_entry(p, name, root, roots, excluder)
            run.finish_dir(root)
            run.done.wait()
            run.pool.shutdown(wait=True)
            if run.error is not None:
                raise run.error
            writer.flush()
        finally:
            run.shutdown()
            writer.close()
            progress.end()
        assert run.root_id is not None
        sizes = SnapshotSizes(
            logical=run.logical,
            stored=writer.stored_bytes,
            new=writer.new_bytes,
            files=run.counts["files"],
        )
        meta = replace(meta, parent=meta.parent or (parent_snap.id if parent_snap else None))
        snap = repo.save_snapshot(
            make_snapshot(
                meta,
                paths=abs_paths,
                tree=run.root_id,
                kind="dir",
                name=None,
                sizes=sizes,
                warnings=run.result_warnings,
            )
        )
        if run.files_cache is not None:
            run.files_cache.commit()
    return BackupResult(
        snap,
        run.result_warnings,
        run.counts["new"],
        run.counts["changed"],
        run.counts["unmodified"],
        run.counts["dirs"],
        run.bytes_read,
        run.trees_reused,
    )


def backup_stream(
    repo: Repository,
    stream: BinaryIO,
    *,
    name: str,
    meta: SnapshotMeta | None = None,
    finish: Callable[[], SnapshotMeta] | None = None,
    progress: ProgressSink | None = None,
    lock_wait: float = LOCK_WAIT,
) -> BackupResult:
    """
    Back up a byte stream (a database dump) as a snapshot holding one file, *name*.

    *finish*, in place of *meta*, gives the metadata once the stream has ended
    (a database tool says where its backup sits only when it is done); it may
    raise to store no snapshot (the data left is unreferenced, for prune).

    Raises:
        UsageError: the name is not a single safe path component.
    """
    from safehold.repo.tree import validate_name

    if not validate_name(name):
        raise UsageError(f"{name!r} is not a valid file name for the stream")
    meta = meta or SnapshotMeta()
    progress = progress or NullProgress()
    now = datetime.now(UTC)
    with RepoLock(repo.storage, exclusive=False, wait=lock_wait):
        repo.refresh_index()
        writer = BlobWriter(repo, progress=progress)
        progress.begin("backup", total_bytes=None, total_items=1)
        content: list[bytes] = []
        size = 0
        try:
            for chunk in make_chunker(repo).cut_stream(stream):
                blob_id, new = writer.save(DATA, chunk.data)
                content.append(blob_id)
                size += chunk.length
                progress.advance(done_bytes=chunk.length, new_bytes=chunk.length if new else 0)
            if finish is not None:
                meta = finish()
            ns = int((meta.time or now).timestamp() * 1e9)
            node = Node(
                name=name,
                type="file",
                mode=stat.S_IFREG | 0o600,
                uid=os.getuid(),
                gid=os.getgid(),
                mtime_ns=ns,
                ctime_ns=ns,
                size=size,
                content=content,
            )
            tree_id, _ = writer.save(TREE, Tree([node]).serialize())
            writer.flush()
        finally:
            writer.close()
            progress.end()
        sizes = SnapshotSizes(
            logical=size, stored=writer.stored_bytes, new=writer.new_bytes, files=1
        )
        snap = repo.save_snapshot(
            make_snapshot(
                meta, paths=[name], tree=tree_id, kind="stdin", name=name, sizes=sizes, warnings=()
            )
        )
    return BackupResult(snap, [], files_new=1, bytes_read=size)
