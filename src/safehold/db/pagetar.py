"""
Store a tar stream (``pg_basebackup -Ft -D -``) as a snapshot, one blob per page.

The stream is parsed as it arrives: nothing is staged on disk, and memory holds
a few read windows plus the tree being built. Each 1 MiB window's pages are
hashed as it is read; the new ones are then compressed (on zstd's own threads,
without the GIL) and encrypted by a page thread while the next window is read
(``BlobWriter.reserve_many`` / ``store_many``; docs/bench-write-path.md).
Each member's content is cut at
fixed offsets *within the file* (``chunk_size``: two of PostgreSQL's 8 KiB
pages by default, one for index files), not within the stream: tar headers
shift members by multiples of 512 bytes, which would misalign content-defined
or stream-aligned cuts. So a page that did not change between two backups is
the same blob, and a backup after a few updates stores only the pages they
touched (block-level deduplication).

A file of ``LIST_MIN`` chunks or more keeps its chunk ids as a *delta chunk
list* (``docs/format.md`` § Delta chunk lists): a patch over the list blob of
the same file in the parent snapshot (the newest snapshot of the same cluster,
found by the ``pg-sysid`` tag and ``global/pg_control``), or a new list blob
when the patch would hold more than ``REBASE_SHARE`` of the ids or there is no
parent (a write-only key cannot read one). So a backup after a few updates
writes a few KB of list, not a 32-byte id per chunk of every changed file.

Fixed page cuts reveal nothing the sizes of the packs do not: PostgreSQL's page
size is public, unlike the content-defined boundaries of file backups, which
depend on the repository's secret seed.

The snapshot's root holds one directory, ``root_name``; restoring the snapshot
writes the data directory exactly as the tar described it (modes, owners, times).
"""

from __future__ import annotations

import contextlib
import getpass
import queue
import socket
import stat
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

from safehold.core.errors import SafeholdError
from safehold.core.progress import NullProgress, ProgressSink
from safehold.core.snapshot import Snapshot, SnapshotMeta, SnapshotSizes
from safehold.db.errors import DbError
from safehold.repo.pack import DATA, TREE
from safehold.repo.repository import Repository
from safehold.repo.tree import LIST_MIN, Node, Tree, chunk_list_for, decode_list, validate_name
from safehold.repo.writer import BlobWriter

__all__ = ["DEFAULT_PAGE", "ReadAhead", "TarIngest", "TarResult", "make_snapshot"]

# Two pages for tables: per-chunk zstd compresses heap pages better in pairs, so
# the full backup of pgbench -s 70 is 81 MB at 16 KiB and 111 MB at 8 KiB, and
# faster; but index pages, which an update touches one at a time and which
# compress little, cost twice as much in pairs (docs/databases.md, § Block-level
# deduplication). So files whose first page is an index page are cut at 8 KiB.
DEFAULT_PAGE = 16384
_PG_PAGE = 8192
_PG_LAYOUT = _PG_PAGE | 4  # pd_pagesize_version: 8 KiB pages, layout version 4
_BLOCK = 512
_WINDOW = 1024 * 1024
_MAX_CAPTURE = 16 * 1024 * 1024
#: Windows being stored by the page thread while the next is read and hashed.
_AHEAD = 2


@dataclass
class _Dir:
    node: Node
    children: dict[str, Node | _Dir] = field(default_factory=dict)


@dataclass
class TarResult:
    """What the tar held: the root tree id, sizes, and the captured small files."""

    tree: bytes
    logical: int
    files: int
    captured: dict[str, bytes]
    stored: int
    new: int


def _octal(field_: bytes) -> int:
    if field_ and field_[0] & 0x80:  # GNU base-256 for sizes past 8 GiB
        n = field_[0] & 0x7F
        for b in field_[1:]:
            n = (n << 8) | b
        return n
    text = field_.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


class ReadAhead:
    """
    Read a pipe ahead in a thread, so the producer (``pg_basebackup``) keeps
    writing while pages are hashed and compressed: a pipe holds 64 KiB, so
    without this the two would mostly take turns. Holds at most *depth* blocks.
    """

    def __init__(self, stream: BinaryIO, *, block: int = _WINDOW, depth: int = 8) -> None:
        self._stream = stream
        self._block = block
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(depth)
        self._cur = memoryview(b"")
        self._done = False
        self._thread = threading.Thread(target=self._fill, name="safehold-readahead", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while True:
                data = self._stream.read(self._block)
                if not data:
                    break
                self._queue.put(data)
        except BaseException as exc:  # handed to the reader, which raises it
            self._queue.put(exc)
            return
        self._queue.put(None)

    def readinto(self, out: memoryview) -> int:
        """Fill *out* from the read-ahead blocks; 0 only at the end of the stream."""
        while not self._cur:
            if self._done:
                return 0
            item = self._queue.get()
            if item is None:
                self._done = True
                return 0
            if isinstance(item, BaseException):
                raise item
            self._cur = memoryview(item)
        n = min(len(out), len(self._cur))
        out[:n] = self._cur[:n]
        self._cur = self._cur[n:]
        return n

    def close(self) -> None:
        """Stop reading: drain what the thread holds so it can finish."""
        self._done = True
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                continue


def _read_exact(stream: BinaryIO, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


class TarIngest:
    """
    Parse a tar stream and store its files page by page through one ``BlobWriter``.

    ``capture`` names members whose bytes the caller needs back (``backup_label``,
    ``backup_manifest``, ``global/pg_control``): they are stored like the others
    and also returned in ``TarResult.captured``.

    ``parent_tree`` is the root tree of the snapshot whose list blobs large
    files are patched over; None with ``auto_parent`` chooses the newest
    snapshot of the same cluster (same root name, and ``pg-sysid`` tag when
    ``global/pg_control`` is captured). Any parent is correct; a related one
    makes patches small.
    """

    def __init__(
        self,
        repo: Repository,
        writer: BlobWriter,
        *,
        root_name: str,
        chunk_size: int = DEFAULT_PAGE,
        capture: tuple[str, ...] = (),
        progress: ProgressSink | None = None,
        parent_tree: bytes | None = None,
        auto_parent: bool = True,
    ) -> None:
        if chunk_size < 512 or _WINDOW % chunk_size:
            raise DbError(f"chunk size {chunk_size} must divide 1 MiB and be at least 512")
        self.repo = repo
        self.writer = writer
        self.page = chunk_size
        self.capture = capture
        self.progress = progress or NullProgress()
        now = int(datetime.now(UTC).timestamp() * 1e9)
        self.root = _Dir(Node(root_name, "dir", mode=stat.S_IFDIR | 0o700, mtime_ns=now))
        self.logical = 0
        self.files = 0
        self.captured: dict[str, bytes] = {}
        self._buf = memoryview(bytearray(_WINDOW))
        # Windows rotate: one being read, up to _AHEAD being stored meanwhile.
        self._windows = [memoryview(bytearray(_WINDOW)) for _ in range(_AHEAD + 1)]
        self._turn = 0
        self._storing: deque[Future[None]] = deque()
        self._using: list[Future[None] | None] = [None] * len(self._windows)
        self._pages: ThreadPoolExecutor | None = None
        self._parent = parent_tree
        self._find_parent = parent_tree is None and auto_parent
        self._parent_dirs: dict[tuple[str, ...], dict[str, Node] | None] = {}

    # -- the tree ---------------------------------------------------------------

    def _dir(self, parts: list[str]) -> _Dir:
        d = self.root
        for p in parts:
            child = d.children.get(p)
            if not isinstance(child, _Dir):
                child = _Dir(Node(p, "dir", mode=stat.S_IFDIR | 0o700))
                d.children[p] = child
            d = child
        return d

    def _place(self, path: str, node: Node) -> None:
        parts = [p for p in path.strip("/").split("/") if p not in ("", ".")]
        if not parts or not all(validate_name(p) and p != ".." for p in parts):
            raise DbError(f"the tar stream holds an unsafe path {path!r}")
        parent = self._dir(parts[:-1])
        node.name = parts[-1]
        if node.type == "dir":
            existing = parent.children.get(node.name)
            if isinstance(existing, _Dir):
                existing.node = node
            else:
                parent.children[node.name] = _Dir(node)
        else:
            parent.children[node.name] = node

    def _store_tree(self, d: _Dir, path: tuple[str, ...] = ()) -> bytes:
        nodes = []
        for name, child in d.children.items():
            if isinstance(child, _Dir):
                child.node.subtree = self._store_tree(child, (*path, name))
                nodes.append(child.node)
            else:
                if child.type == "file" and len(child.content) >= LIST_MIN:
                    base = self._base((*path, name))
                    child.set_chunk_list(chunk_list_for(child.content, self._save_list, base))
                nodes.append(child)
        tree_id, _ = self.writer.save(TREE, Tree(nodes).serialize())
        return tree_id

    def _save_list(self, data: bytes) -> bytes:
        blob_id, _ = self.writer.save(TREE, data)
        return blob_id

    # -- the parent's list blobs ------------------------------------------------

    def _base(self, path: tuple[str, ...]) -> tuple[bytes, list[bytes]] | None:
        """The list blob (id and ids) of the file at *path* in the parent, if it has one."""
        entries = self._parent_entries(path[:-1])
        prev = entries.get(path[-1]) if entries else None
        if prev is None or prev.type != "file" or prev.chunk_list is None:
            return None
        list_id = prev.chunk_list.list_id
        if not self.repo.index.has(list_id):
            return None  # referred to only if indexed, as the writer's deduplication does
        try:
            return list_id, decode_list(self.repo.read_blob(list_id))
        except (SafeholdError, ValueError):
            return None  # a new list blob is written instead

    def _parent_entries(self, path: tuple[str, ...]) -> dict[str, Node] | None:
        if path in self._parent_dirs:
            return self._parent_dirs[path]
        tree_id: bytes | None
        if path:
            up = self._parent_entries(path[:-1])
            node = up.get(path[-1]) if up else None
            tree_id = node.subtree if node is not None and node.type == "dir" else None
        else:
            tree_id = self._parent_root()
        entries = None
        if tree_id is not None:
            try:
                entries = {n.name: n for n in Tree.parse(self.repo.read_blob(tree_id)).nodes}
            except (SafeholdError, ValueError):
                entries = None  # the parent is damaged: new list blobs below it
        self._parent_dirs[path] = entries
        return entries

    def _parent_root(self) -> bytes | None:
        if not self._find_parent:
            return self._parent
        self._find_parent = False
        if not self.repo.keys.can_read:
            return None
        root = self.root.node.name
        try:
            snaps = [s for s in self.repo.snapshots() if s.paths == (root,)]
        except (SafeholdError, OSError):
            return None
        control = self.captured.get("global/pg_control", b"")
        if len(control) >= 8:
            tag = f"pg-sysid={int.from_bytes(control[:8], 'little')}"
            snaps = [s for s in snaps if tag in s.tags]
        if snaps:
            self._parent = bytes.fromhex(max(snaps, key=lambda s: s.time).tree)
        return self._parent

    # -- the stream -------------------------------------------------------------

    def _content(self, stream: BinaryIO, size: int, path: str) -> list[bytes]:
        content: list[bytes] = []
        keep = path in self.capture and size <= _MAX_CAPTURE
        kept = bytearray()
        left = size
        page = self.page
        reserve = self.writer.reserve_many
        while left:
            want = min(left, _WINDOW)
            window = self._next_window()
            got = _read_exact(stream, window[:want])
            if got < want:
                raise DbError(f"the tar stream ended inside {path}")
            view = window[:got]
            if left == size:
                page = self._cut(view, size)
            # The window's pages as one batch: hashed here, then compressed (on
            # zstd's threads, without the GIL) and encrypted by the page thread
            # while this one reads and hashes the next window.
            pages = [view[off : off + page] for off in range(0, got, page)]
            saved, todo = reserve(pages)
            if todo:
                self._store(pages, saved, todo)
            fresh = 0
            for off, (blob_id, new) in zip(range(0, got, page), saved, strict=True):
                content.append(blob_id)
                if new:
                    fresh += min(page, got - off)
            if fresh:
                self.progress.advance(new_bytes=fresh)
            if keep:
                kept += view
            left -= got
            self.progress.advance(done_bytes=got)
        if keep:
            self.captured[path] = bytes(kept)
        pad = -size % _BLOCK
        if pad and _read_exact(stream, self._buf[:pad]) < pad:
            raise DbError(f"the tar stream ended after {path}")
        return content

    def _next_window(self) -> memoryview:
        """The next window, once the batch stored from it (if any) is in a pack."""
        self._turn = (self._turn + 1) % len(self._windows)
        fut = self._using[self._turn]
        if fut is not None:
            self._using[self._turn] = None
            fut.result()  # raises what storing it raised
        return self._windows[self._turn]

    def _store(
        self, pages: list[memoryview], saved: list[tuple[bytes, bool]], todo: list[int]
    ) -> None:
        """Store the reserved pages of the current window in the page thread."""
        if self._pages is None:
            self._pages = ThreadPoolExecutor(1, thread_name_prefix="safehold-pages")
        fut = self._pages.submit(self.writer.store_many, DATA, pages, saved, todo)
        self._using[self._turn] = fut
        self._storing.append(fut)
        while self._storing and self._storing[0].done():
            self._storing.popleft().result()

    def _stored(self) -> None:
        """Wait until every batch is in a pack; raise the first error."""
        try:
            while self._storing:
                self._storing.popleft().result()
        finally:
            for fut in self._storing:
                fut.cancel()
                with contextlib.suppress(BaseException):
                    fut.result()
            self._storing.clear()
            self._using = [None] * len(self._windows)
            if self._pages is not None:
                self._pages.shutdown(wait=True)
                self._pages = None

    def _cut(self, first: memoryview, size: int) -> int:
        """
        The chunk size for a file that starts with *first*: one PostgreSQL page
        for an index (its first page has a special space, as every index access
        method's does, and a heap's does not), ``chunk_size`` otherwise. The
        first page of a relation keeps its kind, so a file is always cut alike.
        """
        if self.page <= _PG_PAGE or size < _PG_PAGE or size % _PG_PAGE:
            return self.page
        h = bytes(first[12:20])  # pd_lower, pd_upper, pd_special, pd_pagesize_version
        lower, upper, special, layout = (
            int.from_bytes(h[i : i + 2], "little") for i in (0, 2, 4, 6)
        )
        if layout == _PG_LAYOUT and 24 <= lower <= upper <= special < _PG_PAGE:
            return _PG_PAGE
        return self.page

    def run(self, stream: BinaryIO) -> TarResult:
        """Read the whole stream, store every member, and store the trees."""
        try:
            tree = self._run(stream)
        finally:
            self._stored()
        return TarResult(
            tree,
            self.logical,
            self.files,
            self.captured,
            self.writer.stored_bytes,
            self.writer.new_bytes,
        )

    def _run(self, stream: BinaryIO) -> bytes:
        header = memoryview(bytearray(_BLOCK))
        long_name: str | None = None
        while True:
            if _read_exact(stream, header) < _BLOCK:
                raise DbError("the tar stream ended without its end marker")
            h = bytes(header)
            if not any(h):
                break  # end of archive (a second zero block may follow; not needed)
            size = _octal(h[124:136])
            kind = h[156:157]
            name = h[0:100].split(b"\0", 1)[0]
            prefix = h[345:500].split(b"\0", 1)[0] if h[257:262] == b"ustar" else b""
            path = (prefix + b"/" + name if prefix else name).decode("utf-8", "surrogateescape")
            if kind == b"L":  # GNU long name: the next member's name is the content
                raw = self._raw(stream, size)
                long_name = raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                continue
            if kind in (b"x", b"g"):  # pax headers: PostgreSQL writes none; skip them
                self._raw(stream, size)
                continue
            if long_name is not None:
                path, long_name = long_name, None
            self._member(stream, h, kind, path, size)
        self._drain(stream)
        self._stored()  # every page in a pack before the trees that name them
        return self._store_tree(_Dir(Node("", "dir"), {self.root.node.name: self.root}))

    def _raw(self, stream: BinaryIO, size: int) -> bytes:
        out = bytearray(size + (-size % _BLOCK))
        if _read_exact(stream, memoryview(out)) < len(out):
            raise DbError("the tar stream ended inside a header")
        return bytes(out[:size])

    def _member(self, stream: BinaryIO, h: bytes, kind: bytes, path: str, size: int) -> None:
        mode = _octal(h[100:108]) & 0o7777
        node = Node(
            name="",
            type="file",
            uid=_octal(h[108:116]),
            gid=_octal(h[116:124]),
            mtime_ns=_octal(h[136:148]) * 1_000_000_000,
        )
        if kind in (b"0", b"\0", b"7"):
            node.mode = stat.S_IFREG | mode
            node.size = size
            node.content = self._content(stream, size, path.strip("/"))
            self.logical += size
            self.files += 1
        elif kind == b"5":
            node.type, node.mode = "dir", stat.S_IFDIR | mode
        elif kind == b"2":
            node.type, node.mode = "symlink", stat.S_IFLNK | 0o777
            node.target = h[157:257].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        else:
            raise DbError(f"the tar stream holds {path!r} of unsupported type {kind!r}")
        self._place(path, node)
        self.progress.advance(items=1)

    def _drain(self, stream: BinaryIO) -> None:
        while _read_exact(stream, self._buf) == len(self._buf):
            pass


def make_snapshot(
    meta: SnapshotMeta, *, tree: bytes, root_name: str, sizes: SnapshotSizes
) -> Snapshot:
    """The manifest of a snapshot made from a tar stream (a directory snapshot)."""
    return Snapshot(
        id="",
        time=meta.time or datetime.now(UTC),
        host=meta.host or socket.gethostname(),
        user=getpass.getuser(),
        paths=(root_name,),
        tree=tree.hex(),
        source_kind="dir",
        tags=tuple(meta.tags),
        partition=meta.partition,
        backup_type=meta.backup_type,
        parent=meta.parent,
        chain_id=meta.chain_id,
        epoch=meta.epoch,
        lsn=meta.lsn,
        sizes=sizes,
    )
