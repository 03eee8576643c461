"""
What a backup needs beside the walk: its parent snapshot, its manifest, and
the totals that let progress show an ETA.
"""

from __future__ import annotations

import getpass
import os
import socket
import stat
from collections.abc import Sequence
from datetime import UTC, datetime

from safehold.core.progress import ProgressSink
from safehold.core.snapshot import Snapshot, SnapshotMeta, SnapshotSizes
from safehold.repo.errors import SnapshotNotFound
from safehold.repo.repository import Repository

__all__ = ["find_parent", "make_snapshot", "scan_totals"]


def find_parent(
    repo: Repository,
    paths: Sequence[str],
    host: str,
    parent: str | None,
    *,
    search: bool = True,
) -> Snapshot | None:
    """
    The snapshot to compare with: *parent*, else the newest of the same host and paths.

    With *search* False the caller knows the parent (a service job: the
    partition's previous backup, from the catalog), so no snapshot is listed;
    a *parent* that is gone (removed by retention meanwhile) means none.
    """
    if not repo.keys.can_read:
        return None  # a write-only key cannot read the parent; dedup still avoids re-upload
    if not search:
        if parent is None:
            return None
        try:
            return repo.find_snapshot(parent)
        except SnapshotNotFound:
            return None
    if parent is not None:
        return repo.find_snapshot(parent)
    candidates = [
        s
        for s in repo.snapshots()
        if s.host == host and s.paths == tuple(paths) and s.source_kind == "dir"
    ]
    return candidates[-1] if candidates else None


def make_snapshot(
    meta: SnapshotMeta,
    *,
    paths: Sequence[str],
    tree: bytes,
    kind: str,
    name: str | None,
    sizes: SnapshotSizes,
    warnings: Sequence[str],
) -> Snapshot:
    """The manifest of a new backup (its id is set when it is stored)."""
    return Snapshot(
        id="",
        time=meta.time or datetime.now(UTC),
        host=meta.host or socket.gethostname(),
        user=getpass.getuser(),
        paths=tuple(paths),
        tree=tree.hex(),
        source_kind="stdin" if kind == "stdin" else "dir",
        source_name=name,
        tags=tuple(meta.tags),
        partition=meta.partition,
        backup_type=meta.backup_type,
        parent=meta.parent,
        chain_id=meta.chain_id,
        epoch=meta.epoch,
        lsn=meta.lsn,
        sizes=sizes,
        warnings=tuple(warnings),
    )


def scan_totals(paths: Sequence[str], progress: ProgressSink) -> None:
    """Count bytes and entries beside the backup, so progress can show an ETA."""
    total = items = 0
    stack = list(paths)
    while stack:
        p = stack.pop()
        try:
            st = os.lstat(p)
        except OSError:
            continue
        items += 1
        if stat.S_ISREG(st.st_mode):
            total += st.st_size
        elif stat.S_ISDIR(st.st_mode):
            try:
                stack.extend(e.path for e in os.scandir(p))
            except OSError:
                continue
    progress.totals(total_bytes=total, total_items=items)
