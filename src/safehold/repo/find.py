"""
Find: which snapshots hold files whose name or path matches a pattern.

Patterns are those of excludes (``repo.exclude``): ``*.sql`` matches a name
at any depth, ``/srv/data/**/x`` an absolute path as it was backed up. A
directory tree that several snapshots share is searched once per snapshot;
each snapshot's results carry the paths it was backed up from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from safehold.core.snapshot import Snapshot
from safehold.repo.exclude import pattern_matcher
from safehold.repo.repository import Repository
from safehold.repo.restore import walk
from safehold.repo.tree import Node

__all__ = ["Match", "find"]


@dataclass(frozen=True)
class Match:
    """One match: the snapshot, the path it was backed up from, and its node."""

    snapshot: Snapshot
    path: str
    node: Node


def find(
    repo: Repository,
    snapshots: Sequence[Snapshot],
    patterns: Sequence[str],
    *,
    ignore_case: bool = False,
) -> Iterator[Match]:
    """
    Yield every entry of *snapshots* that one of *patterns* matches, snapshot by snapshot.

    Raises:
        UsageError: a pattern is invalid.
        IntegrityError: a tree is damaged.
    """
    matcher = pattern_matcher(patterns, icase=ignore_case)
    for snap in snapshots:
        for tree_path, node in walk(repo, bytes.fromhex(snap.tree)):
            path = snap.source_path(tree_path)
            name = tree_path.rsplit("/", 1)[-1]
            if matcher.excluded(path, name, node.type == "dir"):
                yield Match(snap, path, node)
