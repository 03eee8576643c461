"""
A read-only file system view of a repository's snapshots, for ``safehold mount``.

The layout is restic's, simplified::

    /ids/<short id>/<root entries>          every snapshot by its id
    /snapshots/<time>/<root entries>        the same, by time (UTC, ISO 8601)
    /latest -> snapshots/<newest time>      a symlink

This module knows nothing of FUSE: it resolves paths to ``Entry`` values and
reads file ranges; ``cli.mount`` adapts it to the FUSE callbacks. Trees and
decoded chunks are cached (bounded LRU), so listing a directory twice or
reading a file sequentially does not fetch the same blob again. Safe for
concurrent callers.
"""

from __future__ import annotations

import bisect
import hashlib
import stat
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from safehold.core.snapshot import Snapshot
from safehold.repo.errors import IntegrityError
from safehold.repo.repository import Repository
from safehold.repo.tree import ListCache, Node, Tree, content_ids

__all__ = ["Entry", "SnapshotFS"]

_TYPE_BITS = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "fifo": stat.S_IFIFO,
    "chardev": stat.S_IFCHR,
    "blockdev": stat.S_IFBLK,
    "socket": stat.S_IFSOCK,
}


@dataclass(frozen=True)
class Entry:
    """What a path names: a virtual directory, a symlink, or a node of a snapshot."""

    mode: int
    size: int = 0
    mtime_ns: int = 0
    uid: int = 0
    gid: int = 0
    node: Node | None = None
    snapshot: Snapshot | None = None  # for a snapshot's own directory
    target: str | None = None  # for a symlink
    children: tuple[str, ...] | None = None  # for a virtual directory

    @property
    def is_dir(self) -> bool:
        """Whether this is a directory."""
        return stat.S_ISDIR(self.mode)


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[bytes, object] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: bytes) -> object | None:
        with self.lock:
            value = self.items.get(key)
            if value is not None:
                self.items.move_to_end(key)
            return value

    def put(self, key: bytes, value: object) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


def _time_name(s: Snapshot) -> str:
    return s.time.strftime("%Y-%m-%dT%H:%M:%SZ")


class SnapshotFS:
    """
    Resolve paths of the mounted view and read files.

    Args:
        repo: an open repository with a key that may read.
        snapshots: the snapshots to show (oldest first), e.g. those a filter selects.
    """

    def __init__(self, repo: Repository, snapshots: Sequence[Snapshot]) -> None:
        self.repo = repo
        self.by_id: dict[str, Snapshot] = {}
        self.by_time: dict[str, Snapshot] = {}
        for s in snapshots:
            self.by_id[s.short_id if s.short_id not in self.by_id else s.id] = s
            name = _time_name(s)
            n = 1
            while name in self.by_time:  # two snapshots in one second
                n += 1
                name = f"{_time_name(s)}-{n}"
            self.by_time[name] = s
        self._latest = next(reversed(self.by_time)) if self.by_time else None
        self._trees = _LRU(1024)
        self._blobs = _LRU(16)
        self._offsets = _LRU(4096)
        self._lists = ListCache(repo.read_blob, 16 * 1024 * 1024)
        self._resolved = _LRU(16)  # delta chunk lists, resolved
        newest = max((s.time for s in snapshots), default=None)
        self._root_mtime = int(newest.timestamp() * 1e9) if newest else 0

    # -- paths -----------------------------------------------------------------------

    def _virtual(self, names: Sequence[str]) -> Entry:
        return Entry(
            mode=stat.S_IFDIR | 0o555, mtime_ns=self._root_mtime, children=tuple(sorted(names))
        )

    def lookup(self, path: str) -> Entry | None:
        """The entry at *path* (``/``-separated, absolute), or None if there is none."""
        parts = [p for p in path.split("/") if p]
        if not parts:
            return self._virtual(["ids", "snapshots"] + (["latest"] if self._latest else []))
        if len(parts) == 1:
            return self._top(parts[0])
        table = {"ids": self.by_id, "snapshots": self.by_time}.get(parts[0], {})
        snap = table.get(parts[1])
        if snap is None:
            return None
        entry: Entry | None = Entry(
            mode=stat.S_IFDIR | 0o555,
            mtime_ns=int(snap.time.timestamp() * 1e9),
            snapshot=snap,
        )
        for name in parts[2:]:
            entry = self._child(entry, name) if entry is not None else None
        return entry

    def _top(self, name: str) -> Entry | None:
        if name == "latest" and self._latest:
            target = f"snapshots/{self._latest}"
            return Entry(
                mode=stat.S_IFLNK | 0o777,
                size=len(target),
                mtime_ns=self._root_mtime,
                target=target,
            )
        table = {"ids": self.by_id, "snapshots": self.by_time}.get(name)
        return None if table is None else self._virtual(list(table))

    def _tree_of(self, entry: Entry) -> Tree | None:
        if entry.snapshot is not None:
            return self.tree(bytes.fromhex(entry.snapshot.tree))
        if entry.node is not None and entry.node.type == "dir" and entry.node.subtree:
            return self.tree(entry.node.subtree)
        return None

    def _child(self, entry: Entry, name: str) -> Entry | None:
        tree = self._tree_of(entry)
        if tree is None:
            return None
        node = next((n for n in tree.nodes if n.name == name), None)
        return None if node is None else _node_entry(node)

    def listdir(self, entry: Entry) -> list[str]:
        """The names in a directory entry."""
        if entry.children is not None:
            return list(entry.children)
        tree = self._tree_of(entry)
        return sorted(n.name for n in tree.nodes) if tree is not None else []

    # -- data --------------------------------------------------------------------------

    def tree(self, tree_id: bytes) -> Tree:
        """A parsed tree, cached."""
        cached = self._trees.get(tree_id)
        if isinstance(cached, Tree):
            return cached
        try:
            tree = Tree.parse(self.repo.read_blob(tree_id))
        except ValueError as exc:
            raise IntegrityError(f"tree {tree_id.hex()[:16]} is invalid: {exc}") from exc
        self._trees.put(tree_id, tree)
        return tree

    def _ids(self, node: Node) -> list[bytes]:
        """A file node's chunk ids; a delta chunk list is resolved once and cached."""
        if node.chunk_list is None:
            return node.content
        key = hashlib.blake2b(repr(node.chunk_list).encode(), digest_size=16).digest()
        cached = self._resolved.get(key)
        if isinstance(cached, list):
            return cached
        ids = content_ids(node, self._lists)
        self._resolved.put(key, ids)
        return ids

    def _starts(self, node: Node) -> list[int]:
        """Offsets in the file where each of its chunks starts, and its end."""
        key = hashlib.blake2b(b"".join(self._ids(node)), digest_size=16).digest()
        cached = self._offsets.get(key)
        if isinstance(cached, list):
            return cached
        starts = [0]
        for blob in self._ids(node):
            starts.append(starts[-1] + self.repo.locate(blob).entry.raw_length)
        self._offsets.put(key, starts)
        return starts

    def _blob(self, blob_id: bytes) -> bytes:
        cached = self._blobs.get(blob_id)
        if isinstance(cached, bytes):
            return cached
        data = self.repo.read_blob(blob_id)
        self._blobs.put(blob_id, data)
        return data

    def read(self, node: Node, offset: int, size: int) -> bytes:
        """
        Read up to *size* bytes of a file node from *offset*; every chunk is verified.

        Raises:
            IntegrityError: a chunk is damaged or missing.
        """
        if node.type != "file" or size <= 0:
            return b""
        ids = self._ids(node)
        if not ids:
            return b""
        starts = self._starts(node)
        end = min(offset + size, starts[-1])
        out = bytearray()
        i = bisect.bisect_right(starts, offset) - 1
        while 0 <= i < len(ids) and starts[i] < end:
            data = self._blob(ids[i])
            lo = max(offset - starts[i], 0)
            hi = min(end - starts[i], len(data))
            out += data[lo:hi]
            i += 1
        return bytes(out)


def _node_entry(node: Node) -> Entry:
    bits = _TYPE_BITS.get(node.type, stat.S_IFREG)
    size = node.size if node.type == "file" else len(node.target or "")
    return Entry(
        mode=bits | stat.S_IMODE(node.mode),
        size=size,
        mtime_ns=node.mtime_ns,
        uid=node.uid,
        gid=node.gid,
        node=node,
        target=node.target,
    )
