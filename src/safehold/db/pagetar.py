"""
Store a tar stream (``pg_basebackup -Ft -D -``) as a snapshot, one blob per page.

The stream is parsed as it arrives: nothing is staged on disk, and memory holds
one read window plus the tree being built. Each member's content is cut at
fixed offsets *within the file* (``chunk_size``: two of PostgreSQL's 8 KiB
pages by default), not within the stream: tar headers shift members by multiples of 512
bytes, which would misalign content-defined or stream-aligned cuts. So a page
that did not change between two backups is the same blob, and a backup after
a few updates stores only the pages they touched (block-level deduplication).

Fixed page cuts reveal nothing the sizes of the packs do not: PostgreSQL's page
size is public, unlike the content-defined boundaries of file backups, which
depend on the repository's secret seed.

The snapshot's root holds one directory, ``root_name``; restoring the snapshot
writes the data directory exactly as the tar described it (modes, owners, times).
"""

from __future__ import annotations

import getpass
import queue
import socket
import stat
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

from safehold.core.progress import NullProgress, ProgressSink
from safehold.core.snapshot import Snapshot, SnapshotMeta, SnapshotSizes
from safehold.db.errors import DbError
from safehold.repo.pack import DATA, TREE
from safehold.repo.repository import Repository
from safehold.repo.tree import Node, Tree, validate_name
from safehold.repo.writer import BlobWriter

__all__ = ["DEFAULT_PAGE", "ReadAhead", "TarIngest", "TarResult", "make_snapshot"]

# Two pages: measured on pgbench -s 70 (docs/benchmark.md), 1,000 random updates
# stored 7.3 MB at 8 KiB, 6.4 MB at 16 KiB and 8.7 MB at 32 KiB (each chunk costs
# 32 bytes in its file's chunk list, rewritten whole), and the full backup is
# faster and smaller at 16 KiB than at 8 KiB.
DEFAULT_PAGE = 16384
_BLOCK = 512
_WINDOW = 1024 * 1024
_MAX_CAPTURE = 16 * 1024 * 1024


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

    def _store_tree(self, d: _Dir) -> bytes:
        nodes = []
        for child in d.children.values():
            if isinstance(child, _Dir):
                child.node.subtree = self._store_tree(child)
                nodes.append(child.node)
            else:
                nodes.append(child)
        tree_id, _ = self.writer.save(TREE, Tree(nodes).serialize())
        return tree_id

    # -- the stream -------------------------------------------------------------

    def _content(self, stream: BinaryIO, size: int, path: str) -> list[bytes]:
        content: list[bytes] = []
        keep = path in self.capture and size <= _MAX_CAPTURE
        kept = bytearray()
        left = size
        page = self.page
        save = self.writer.save
        while left:
            want = min(left, _WINDOW)
            got = _read_exact(stream, self._buf[:want])
            if got < want:
                raise DbError(f"the tar stream ended inside {path}")
            view = self._buf[:got]
            for off in range(0, got, page):
                blob_id, new = save(DATA, view[off : off + page])
                content.append(blob_id)
                if new:
                    self.progress.advance(new_bytes=min(page, got - off))
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

    def run(self, stream: BinaryIO) -> TarResult:
        """Read the whole stream, store every member, and store the trees."""
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
        tree = self._store_tree(_Dir(Node("", "dir"), {self.root.node.name: self.root}))
        return TarResult(
            tree,
            self.logical,
            self.files,
            self.captured,
            self.writer.stored_bytes,
            self.writer.new_bytes,
        )

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
