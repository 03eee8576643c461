"""
Stats: how much the selected snapshots would restore, and what they store.

- **restore size**: the files and bytes a restore of each snapshot writes,
  summed over the snapshots (as ``restic stats --mode restore-size``).
- **raw data**: the distinct blobs (file chunks and trees) the snapshots use,
  their size before compression, and the bytes they take in packs, encrypted
  and compressed (as ``restic stats --mode raw-data``).

A directory tree shared between snapshots is read once: its totals are kept
by tree id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from safehold.core.snapshot import Snapshot
from safehold.repo.errors import IntegrityError
from safehold.repo.repository import Repository
from safehold.repo.tree import ListCache, Tree, node_blobs

__all__ = ["RepoStats", "stats"]


@dataclass
class RepoStats:
    """Totals over the selected snapshots."""

    snapshots: int = 0
    files: int = 0  # files (and other non-directories) a restore writes, summed
    dirs: int = 0
    restore_size: int = 0  # bytes a restore writes, summed over the snapshots
    blobs: int = 0  # distinct blobs, data and trees
    raw_size: int = 0  # their size before compression
    stored_size: int = 0  # what they take in packs: compressed and encrypted

    @property
    def compression_ratio(self) -> float:
        """raw / stored; 0 when nothing is stored."""
        return self.raw_size / self.stored_size if self.stored_size else 0.0


class _Counter:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.result = RepoStats()
        self.trees: dict[bytes, tuple[int, int, int]] = {}
        self.blobs: set[bytes] = set()
        self.load = ListCache(repo.read_blob)  # delta chunk lists' list blobs

    def blob(self, blob_id: bytes) -> None:
        if blob_id in self.blobs:
            return
        self.blobs.add(blob_id)
        entry = self.repo.locate(blob_id).entry
        self.result.blobs += 1
        self.result.raw_size += entry.raw_length
        self.result.stored_size += entry.length

    def tree(self, tree_id: bytes) -> tuple[int, int, int]:
        """Return (files, dirs, bytes) under a tree; count its blobs once."""
        known = self.trees.get(tree_id)
        if known is not None:
            return known
        self.blob(tree_id)
        try:
            nodes = Tree.parse(self.repo.read_blob(tree_id)).nodes
        except ValueError as exc:
            raise IntegrityError(f"tree {tree_id.hex()[:16]} is invalid: {exc}") from exc
        files = dirs = size = 0
        for n in nodes:
            if n.type == "dir":
                dirs += 1
                if n.subtree is not None:
                    f, d, s = self.tree(n.subtree)
                    files, dirs, size = files + f, dirs + d, size + s
                continue
            files += 1
            if n.type == "file":
                size += n.size
                for c in node_blobs(n, self.load):  # its list blob too, if any
                    self.blob(c)
        self.trees[tree_id] = (files, dirs, size)
        return files, dirs, size


def stats(repo: Repository, snapshots: Sequence[Snapshot]) -> RepoStats:
    """
    Count what *snapshots* restore and store.

    Raises:
        IntegrityError: a tree is damaged, or a blob is in no index.
    """
    c = _Counter(repo)
    for snap in snapshots:
        files, dirs, size = c.tree(bytes.fromhex(snap.tree))
        c.result.snapshots += 1
        c.result.files += files
        c.result.dirs += dirs
        c.result.restore_size += size
    return c.result
