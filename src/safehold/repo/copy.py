"""
Copy snapshots into another repository (``safehold repo copy``): the geo-redundant copy.

Each repository keys its chunk ids with its own secret, so every tree is
rewritten with the destination's ids. Blobs the destination already has are
not uploaded again, and a snapshot copied before (its id is recorded as the
copy's ``original``) is skipped, so a copy can be rerun after any failure.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from safehold.core.progress import NullProgress, ProgressSink
from safehold.core.snapshot import Snapshot
from safehold.repo.errors import IntegrityError
from safehold.repo.locks import RepoLock
from safehold.repo.pack import DATA, TREE
from safehold.repo.repository import Repository
from safehold.repo.tree import ChunkList, ListCache, Tree, chunk_list_for, content_ids
from safehold.repo.writer import BlobWriter

__all__ = ["CopyResult", "copy_snapshots"]


@dataclass
class CopyResult:
    """What a copy did."""

    copied: list[str] = field(default_factory=list)  # new snapshot ids in the destination
    skipped: list[str] = field(default_factory=list)  # source ids already copied
    bytes_uploaded: int = 0


class _Copier:
    def __init__(
        self, src: Repository, dst: Repository, writer: BlobWriter, progress: ProgressSink
    ) -> None:
        self.src, self.dst, self.w, self.progress = src, dst, writer, progress
        self.blobs: dict[bytes, bytes] = {}  # source id -> destination id
        self.load = ListCache(src.read_blob)  # the source's list blobs
        # source list blob -> (its stand-in in the destination, that one's ids)
        self.lists: dict[bytes, tuple[bytes, list[bytes]]] = {}
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max(2, src.storage.properties.connections))

    def blob(self, blob_id: bytes) -> bytes:
        with self.lock:
            done = self.blobs.get(blob_id)
        if done is not None:
            return done
        plain = self.src.read_blob(blob_id)  # verified: damage is never copied
        new_id, _ = self.w.save(DATA, plain)
        self.progress.advance(done_bytes=len(plain))
        with self.lock:
            self.blobs[blob_id] = new_id
        return new_id

    def tree(self, tree_id: bytes) -> bytes:
        with self.lock:
            done = self.blobs.get(tree_id)
        if done is not None:
            return done
        try:
            tree = Tree.parse(self.src.read_blob(tree_id))
        except ValueError as exc:
            raise IntegrityError(f"tree {tree_id.hex()[:16]} is invalid: {exc}") from exc
        files = [n for n in tree.nodes if n.type == "file"]
        ids = [content_ids(n, self.load) for n in files]  # follows delta chunk lists
        # Files of a directory are copied in parallel; reading and uploading overlap.
        for node, content in zip(
            files, self.pool.map(lambda c: [self.blob(b) for b in c], ids), strict=True
        ):
            if node.chunk_list is None:
                node.content = content
            else:
                node.set_chunk_list(self.chunk_list(node.chunk_list.list_id, content))
        for node in tree.nodes:
            if node.subtree is not None:
                node.subtree = self.tree(node.subtree)
            self.progress.advance(items=1)
        new_id, _ = self.w.save(TREE, tree.serialize())
        with self.lock:
            self.blobs[tree_id] = new_id
        return new_id

    def chunk_list(self, src_list: bytes, ids: list[bytes]) -> ChunkList:
        """
        A delta chunk list of destination *ids* for a node over the source list *src_list*.

        The ids a list blob holds differ between repositories, and a source list
        blob may name chunks that prune has removed (those its patches replace),
        so it is not translated: the first node over it stores its own ids as
        the destination's list blob, and later ones are patches over that.
        """
        base = self.lists.get(src_list)
        cl = chunk_list_for(ids, lambda data: self.w.save(TREE, data)[0], base)
        if base is None or cl.list_id != base[0]:
            self.lists[src_list] = (cl.list_id, ids)
        return cl


def copy_snapshots(
    src: Repository,
    dst: Repository,
    *,
    snapshot_ids: Sequence[str] = (),
    progress: ProgressSink | None = None,
) -> CopyResult:
    """
    Copy snapshots (all, or those named) from *src* into *dst*.

    Raises:
        SnapshotNotFound: a named snapshot does not exist in *src*.
        KeyNotAllowed: *src* is opened with a write-only key.
    """
    src.keys.require_read("copying snapshots")
    progress = progress or NullProgress()
    wanted = [src.find_snapshot(s) for s in snapshot_ids] if snapshot_ids else src.snapshots()
    result = CopyResult()
    with RepoLock(dst.storage, exclusive=False, wait=30.0):
        dst.refresh_index()
        done = {s.original for s in dst.snapshots()} if dst.keys.can_read else set()
        todo: list[Snapshot] = []
        for snap in wanted:
            if snap.id in done:
                result.skipped.append(snap.id)
            else:
                todo.append(snap)
        progress.begin("copy", total_bytes=sum(s.sizes.logical for s in todo), total_items=None)
        writer = BlobWriter(dst, progress=progress)
        copier = _Copier(src, dst, writer, progress)
        try:
            roots = [copier.tree(bytes.fromhex(s.tree)) for s in todo]
            writer.flush()
        finally:
            copier.pool.shutdown(wait=True)
            writer.close()
            progress.end()
        # Snapshots last: only once every blob they name is stored and indexed.
        for snap, root in zip(todo, roots, strict=True):
            copy = dst.save_snapshot(replace(snap, id="", tree=root.hex(), original=snap.id))
            result.copied.append(copy.id)
        result.bytes_uploaded = writer.stored_bytes
    return result
