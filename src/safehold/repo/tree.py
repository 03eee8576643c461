"""
Trees: one directory per blob, as deterministic JSON (``docs/format.md`` § Trees).

Identical directories serialize identically, so they deduplicate. Names are the
file system's bytes decoded with ``surrogateescape``; ``validate_name`` is the
one place that decides whether a name is safe to create on restore.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Node", "Tree", "validate_name"]


def validate_name(name: str) -> bool:
    """Whether *name* is a single, safe path component."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


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
    subtree: bytes | None = None
    target: str | None = None
    xattrs: dict[str, bytes] = field(default_factory=dict)
    hardlink: str | None = None
    sparse: bool = False
    rdev: int = 0

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
        return cls(
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
            content=[bytes.fromhex(c) for c in d.get("content", ())],
            subtree=bytes.fromhex(sub) if sub else None,
            target=d.get("target"),
            xattrs={k: bytes.fromhex(v) for k, v in d.get("xattrs", {}).items()},
            hardlink=d.get("hardlink"),
            sparse=bool(d.get("sparse", False)),
            rdev=int(d.get("rdev", 0)),
        )


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
