"""
Diff: what changed between two snapshots, as ``restic diff`` shows it.

Both trees are walked side by side; a directory whose tree id is the same in
both snapshots is identical and not entered, so a diff between two backups of
a large, mostly unchanged tree reads only the changed directories.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from safehold.core.snapshot import Snapshot
from safehold.repo.errors import IntegrityError
from safehold.repo.repository import Repository
from safehold.repo.tree import ListCache, Node, Tree, same_content

__all__ = ["Change", "DiffResult", "diff_snapshots"]

ChangeKind = Literal["+", "-", "M", "T", "U"]
"""``+`` added, ``-`` removed, ``M`` content changed, ``T`` type changed, ``U`` metadata only."""


@dataclass(frozen=True)
class Change:
    """One changed entry; *path* is its path in the trees (no leading ``/``)."""

    kind: ChangeKind
    path: str
    type: str
    size_before: int
    size_after: int


@dataclass
class DiffResult:
    """Every change, in path order, and totals."""

    changes: list[Change] = field(default_factory=list)
    added_files: int = 0
    removed_files: int = 0
    changed_files: int = 0
    added_dirs: int = 0
    removed_dirs: int = 0
    bytes_added: int = 0  # sizes of added files, and growth of changed ones
    bytes_removed: int = 0


def _children(repo: Repository, tree_id: bytes | None, where: str) -> dict[str, Node]:
    """The entries of a directory's tree; none for a non-directory (no tree)."""
    if tree_id is None:
        return {}
    try:
        return {n.name: n for n in Tree.parse(repo.read_blob(tree_id)).nodes}
    except ValueError as exc:
        raise IntegrityError(f"tree {tree_id.hex()[:16]} under /{where} is invalid: {exc}") from exc


def _all(repo: Repository, node: Node, path: str) -> Iterator[tuple[str, Node]]:
    yield path, node
    if node.type == "dir":
        for name, child in sorted(_children(repo, node.subtree, path).items()):
            yield from _all(repo, child, f"{path}/{name}")


def _metadata(n: Node) -> tuple[object, ...]:
    return (n.mode, n.uid, n.gid, n.mtime_ns, n.target, n.xattrs)


class _Differ:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.result = DiffResult()
        self.load = ListCache(repo.read_blob)  # delta chunk lists' list blobs

    def gone(self, kind: ChangeKind, path: str, node: Node) -> None:
        for p, n in _all(self.repo, node, path):
            size = n.size if n.type == "file" else 0
            if kind == "+":
                self.result.changes.append(Change("+", p, n.type, 0, size))
                self.result.added_files += n.type != "dir"
                self.result.added_dirs += n.type == "dir"
                self.result.bytes_added += size
            else:
                self.result.changes.append(Change("-", p, n.type, size, 0))
                self.result.removed_files += n.type != "dir"
                self.result.removed_dirs += n.type == "dir"
                self.result.bytes_removed += size

    def tree(self, a: bytes | None, b: bytes | None, prefix: str) -> None:
        if a == b:
            return  # identical trees: nothing below differs
        left = _children(self.repo, a, prefix)
        right = _children(self.repo, b, prefix)
        for name in sorted(left.keys() | right.keys()):
            path = f"{prefix}/{name}" if prefix else name
            x, y = left.get(name), right.get(name)
            if x is None and y is not None:
                self.gone("+", path, y)
            elif y is None and x is not None:
                self.gone("-", path, x)
            elif x is not None and y is not None:
                self.entry(path, x, y)

    def entry(self, path: str, x: Node, y: Node) -> None:
        r = self.result
        if x.type != y.type:
            r.changes.append(Change("T", path, y.type, x.size, y.size))
            r.changed_files += 1
            # What was below the old entry is gone; what is below the new one is new.
            for name, child in sorted(_children(self.repo, x.subtree, path).items()):
                self.gone("-", f"{path}/{name}", child)
            for name, child in sorted(_children(self.repo, y.subtree, path).items()):
                self.gone("+", f"{path}/{name}", child)
            return
        if x.type == "dir":
            if _metadata(x) != _metadata(y):
                r.changes.append(Change("U", path, "dir", 0, 0))
            self.tree(x.subtree, y.subtree, path)
            return
        if x.size != y.size or not same_content(x, y, self.load):
            r.changes.append(Change("M", path, y.type, x.size, y.size))
            r.changed_files += 1
            r.bytes_added += max(0, y.size - x.size)
            r.bytes_removed += max(0, x.size - y.size)
        elif _metadata(x) != _metadata(y):
            r.changes.append(Change("U", path, y.type, x.size, y.size))


def diff_snapshots(repo: Repository, a: Snapshot, b: Snapshot) -> DiffResult:
    """
    Compare snapshot *a* (before) with *b* (after).

    Paths are tree paths; ``Snapshot.source_path`` turns them into the
    absolute paths that were backed up.

    Raises:
        IntegrityError: a tree of either snapshot is damaged.
    """
    d = _Differ(repo)
    d.tree(bytes.fromhex(a.tree), bytes.fromhex(b.tree), "")
    d.result.changes.sort(key=lambda c: (c.path, "-+TMU".index(c.kind)))
    return d.result
