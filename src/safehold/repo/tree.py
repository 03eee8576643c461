"""
Trees: one directory per blob, as deterministic JSON (``docs/format.md`` § Trees).

Identical directories serialize identically, so they deduplicate. Names are the
file system's bytes decoded with ``surrogateescape``; ``validate_name`` is the
one place that decides whether a name is safe to create on restore.

A file's chunk ids are either inline (``Node.content``) or a *delta chunk list*
(``Node.chunk_list``: a list blob plus a small patch, § Delta chunk lists).
``content_ids`` is the one way to read them and ``node_blobs`` the one way to
list every blob a node needs: a walker that reads ``content`` of a delta node
directly gets ``UnresolvedContent`` raised, never an empty file.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn, SupportsIndex

from safehold.repo.errors import IntegrityError

__all__ = [
    "LIST_MIN",
    "REBASE_SHARE",
    "ChunkList",
    "ListCache",
    "Node",
    "Tree",
    "UnresolvedContent",
    "chunk_list_for",
    "content_ids",
    "decode_list",
    "encode_list",
    "node_blobs",
    "same_content",
    "validate_name",
]

LIST_MIN = 1024
"""Files with at least this many chunks may keep their ids in a list blob (``pagetar`` does)."""
REBASE_SHARE = 0.25
"""A patch longer than this share of its list is not written: a new list blob is."""
_LIST_MAGIC = b"SHCL\x01"
_ID = 32

Load = Callable[[bytes], bytes]
"""Read a blob's verified plaintext by id (``Repository.read_blob``); ``IntegrityError`` if not."""


class UnresolvedContent(RuntimeError):
    """A delta node's ``content`` was read directly: a bug (use ``content_ids``)."""


class _Unresolved(list[bytes]):
    """
    A delta node's ``content``: any use raises, so a walker that forgot
    ``content_ids`` fails loudly instead of treating the file as empty (which,
    in prune, would delete its data).
    """

    def _refuse(self, *_: object) -> NoReturn:
        raise UnresolvedContent("a delta chunk list must be read through tree.content_ids")

    __iter__ = __len__ = __bool__ = __contains__ = __reversed__ = _refuse
    __eq__ = __ne__ = __add__ = __mul__ = copy = index = count = _refuse

    def __getitem__(self, _: SupportsIndex | slice) -> NoReturn:
        self._refuse()

    def __repr__(self) -> str:
        return "<delta chunk list>"


def validate_name(name: str) -> bool:
    """Whether *name* is a single, safe path component."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _id(value: object) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * _ID:
        raise ValueError(f"malformed blob id {value!r:.80}")
    return bytes.fromhex(value)


@dataclass(frozen=True)
class ChunkList:
    """
    A file's chunk ids as a list blob and a patch (``docs/format.md`` § Delta chunk lists).

    The ids are the list blob's first ``length`` ids (padded when the list is
    shorter), with ``patch``'s ``(position, id)`` pairs put over them.
    Positions are increasing and below ``length``; every position past the
    list blob's end must be patched.
    """

    list_id: bytes
    length: int
    patch: tuple[tuple[int, bytes], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON form that a node's ``content`` holds."""
        return {
            "list": self.list_id.hex(),
            "len": self.length,
            "patch": [[pos, bid.hex()] for pos, bid in self.patch],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ChunkList:
        """Parse and validate; ``ValueError`` if malformed."""
        length = d.get("len")
        raw = d.get("patch", [])
        if type(length) is not int or length < 0 or not isinstance(raw, list):
            raise ValueError("malformed chunk list")
        patch: list[tuple[int, bytes]] = []
        last = -1
        for item in raw:
            if not isinstance(item, list) or len(item) != 2 or type(item[0]) is not int:
                raise ValueError("malformed chunk list patch")
            pos = item[0]
            if not last < pos < length:
                raise ValueError(f"chunk list patch position {pos} out of order or range")
            patch.append((pos, _id(item[1])))
            last = pos
        return cls(_id(d.get("list")), length, tuple(patch))


def encode_list(ids: list[bytes]) -> bytes:
    """A list blob's plaintext: ``"SHCL" | version 1 | the ids, 32 bytes each``."""
    return _LIST_MAGIC + b"".join(ids)


def decode_list(data: bytes) -> list[bytes]:
    """The ids of a list blob; ``ValueError`` if it is not one."""
    if not data.startswith(_LIST_MAGIC) or (len(data) - len(_LIST_MAGIC)) % _ID:
        raise ValueError("not a chunk list blob (or of an unknown version)")
    return [data[i : i + _ID] for i in range(len(_LIST_MAGIC), len(data), _ID)]


def content_ids(node: Node, load: Load) -> list[bytes]:
    """
    The chunk ids of a file node, in order, following a delta chunk list.

    The one way to read a file's content ids: inline ones are returned as they
    are (not copied), a delta list is read through *load* (a ``ListCache``
    spares reading a shared list blob again).

    Raises:
        IntegrityError: the list blob is missing, damaged or malformed.
    """
    cl = node.chunk_list
    if cl is None:
        return node.content
    try:
        base = decode_list(load(cl.list_id))
    except ValueError as exc:
        raise IntegrityError(f"chunk list blob {cl.list_id.hex()[:16]}: {exc}") from exc
    ids: list[bytes | None] = list(base[: cl.length])
    if len(ids) < cl.length:
        ids.extend([None] * (cl.length - len(ids)))
    for pos, bid in cl.patch:
        ids[pos] = bid
    out = [i for i in ids if i is not None]
    if len(out) != cl.length:
        raise IntegrityError(
            f"chunk list blob {cl.list_id.hex()[:16]} is shorter than its patch needs"
        )
    return out


def node_blobs(node: Node, load: Load) -> Iterator[bytes]:
    """
    Every blob a node needs: its subtree, its list blob, its chunks.

    What prune keeps and what copy and check follow; see ``content_ids`` for errors.
    """
    if node.subtree is not None:
        yield node.subtree
    if node.chunk_list is not None:
        yield node.chunk_list.list_id
    if node.type == "file":
        yield from content_ids(node, load)


def same_content(a: Node, b: Node, load: Load) -> bool:
    """Whether two file nodes hold the same chunks (without reading a shared list twice)."""
    if a.chunk_list is not None and a.chunk_list == b.chunk_list:
        return True
    return content_ids(a, load) == content_ids(b, load)


def chunk_list_for(
    ids: list[bytes],
    save_list: Callable[[bytes], bytes],
    base: tuple[bytes, list[bytes]] | None = None,
) -> ChunkList:
    """
    Store *ids* as a delta chunk list.

    With *base* (a list blob's id and its ids), the ids become a patch over it,
    unless the patch would hold more than ``REBASE_SHARE`` of the ids: then,
    and without a base, ``save_list`` stores a new list blob (the plaintext of
    ``encode_list``; it returns the blob's id). So a patch is always over a
    list blob, never over another patch: reading takes one blob, whatever the
    history.
    """
    if base is not None:
        base_id, old = base
        limit = int(len(ids) * REBASE_SHARE)
        patch: list[tuple[int, bytes]] = []
        n = len(old)
        for pos, bid in enumerate(ids):
            if pos >= n or old[pos] != bid:
                patch.append((pos, bid))
                if len(patch) > limit:
                    break
        else:
            return ChunkList(base_id, len(ids), tuple(patch))
    return ChunkList(save_list(encode_list(ids)), len(ids))


class ListCache:
    """
    A ``Load`` that keeps the list blobs it read, up to *budget* bytes (newest kept).

    Snapshots of one database share their list blobs, so walkers over many
    snapshots (prune, check, copy) read each once. Thread-safe.
    """

    def __init__(self, read: Load, budget: int = 64 * 1024 * 1024) -> None:
        self._read = read
        self._budget = budget
        self._held = 0
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, blob_id: bytes) -> bytes:
        with self._lock:
            data = self._items.get(blob_id)
            if data is not None:
                self._items.move_to_end(blob_id)
                return data
        data = self._read(blob_id)
        with self._lock:
            if blob_id not in self._items:
                self._items[blob_id] = data
                self._held += len(data)
            while self._held > self._budget and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._held -= len(old)
        return data


@dataclass
class Node:
    """One entry of a directory."""

    name: str
    type: str  # "file" | "dir" | "symlink" | "fifo" | "chardev" | "blockdev" | "socket"
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    dev: int = 0
    size: int = 0
    content: list[bytes] = field(default_factory=list)
    """Inline chunk ids; unreadable (``UnresolvedContent``) when ``chunk_list`` is set."""
    subtree: bytes | None = None
    target: str | None = None
    xattrs: dict[str, bytes] = field(default_factory=dict)
    hardlink: str | None = None
    sparse: bool = False
    rdev: int = 0
    chunk_list: ChunkList | None = None
    """The file's ids as a delta chunk list; read them with ``content_ids``."""

    def set_chunk_list(self, cl: ChunkList) -> None:
        """Make this file's content the delta chunk list *cl* (``content`` becomes unreadable)."""
        self.chunk_list = cl
        self.content = _Unresolved()

    def to_json(self) -> dict[str, Any]:
        """The node's JSON form; empty fields are left out."""
        d: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "mtime_ns": self.mtime_ns,
            "ctime_ns": self.ctime_ns,
            "inode": self.inode,
            "dev": self.dev,
        }
        if self.type == "file":
            d["size"] = self.size
            if self.chunk_list is not None:
                d["content"] = self.chunk_list.to_json()
            else:
                d["content"] = [c.hex() for c in self.content]
        if self.subtree is not None:
            d["subtree"] = self.subtree.hex()
        if self.target is not None:
            d["target"] = self.target
        if self.xattrs:
            d["xattrs"] = {k: v.hex() for k, v in sorted(self.xattrs.items())}
        if self.hardlink:
            d["hardlink"] = self.hardlink
        if self.sparse:
            d["sparse"] = True
        if self.rdev:
            d["rdev"] = self.rdev
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Node:
        """Parse a node; ``KeyError``/``TypeError``/``ValueError`` if malformed."""
        sub = d.get("subtree")
        raw = d.get("content", ())
        node = cls(
            name=str(d["name"]),
            type=str(d["type"]),
            mode=int(d.get("mode", 0)),
            uid=int(d.get("uid", 0)),
            gid=int(d.get("gid", 0)),
            mtime_ns=int(d.get("mtime_ns", 0)),
            ctime_ns=int(d.get("ctime_ns", 0)),
            inode=int(d.get("inode", 0)),
            dev=int(d.get("dev", 0)),
            size=int(d.get("size", 0)),
            content=[] if isinstance(raw, dict) else [bytes.fromhex(c) for c in raw],
            subtree=bytes.fromhex(sub) if sub else None,
            target=d.get("target"),
            xattrs={k: bytes.fromhex(v) for k, v in d.get("xattrs", {}).items()},
            hardlink=d.get("hardlink"),
            sparse=bool(d.get("sparse", False)),
            rdev=int(d.get("rdev", 0)),
        )
        if isinstance(raw, dict):
            if node.type != "file":
                raise ValueError(f"a chunk list on {node.type} {node.name!r}")
            node.set_chunk_list(ChunkList.from_json(raw))
        return node


@dataclass
class Tree:
    """A directory's entries, sorted by name."""

    nodes: list[Node]

    def serialize(self) -> bytes:
        """Deterministic JSON: the same directory always gives the same bytes."""
        nodes = sorted(self.nodes, key=lambda n: n.name)
        # ensure_ascii keeps surrogate-escaped bytes representable in JSON.
        return json.dumps(
            {"nodes": [n.to_json() for n in nodes]}, separators=(",", ":"), sort_keys=True
        ).encode()

    @classmethod
    def parse(cls, data: bytes) -> Tree:
        """Parse a tree blob; ``ValueError`` if it is malformed or has unsafe or duplicate names."""
        try:
            doc = json.loads(data)
            nodes = [Node.from_json(n) for n in doc["nodes"]]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed tree: {exc}") from exc
        seen: set[str] = set()
        for n in nodes:
            if not validate_name(n.name):
                raise ValueError(f"unsafe name {n.name!r} in tree")
            if n.name in seen:
                raise ValueError(f"duplicate name {n.name!r} in tree")
            seen.add(n.name)
        return cls(nodes)
