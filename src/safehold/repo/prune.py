"""
Forget and prune (``docs/format.md`` § Prune).

``forget`` removes snapshot files only. ``prune`` frees the space that nothing
refers to any more, under an exclusive lock, in an order that leaves a valid
repository at every moment: repack → new complete index → delete old index
files → delete packs.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from safehold.core.progress import NullProgress, ProgressSink
from safehold.repo.errors import IntegrityError, RepoError
from safehold.repo.index import BlobLocation, write_index_file
from safehold.repo.locks import RepoLock
from safehold.repo.pack import PackInfo, pack_name
from safehold.repo.repository import Repository
from safehold.repo.restore import walk
from safehold.repo.writer import BlobWriter
from safehold.storage import StorageError

__all__ = ["PruneResult", "forget", "prune", "used_blobs"]

REPACK_UNUSED = 0.2  # repack a pack when more than this share of it is unused


@dataclass
class PruneResult:
    """What prune did, or would do with ``dry_run``."""

    packs_deleted: int = 0
    packs_repacked: int = 0
    bytes_freed: int = 0
    bytes_repacked: int = 0
    blobs_used: int = 0
    dry_run: bool = False


def forget(repo: Repository, snapshot_ids: Iterable[str]) -> int:
    """Delete the given snapshots' manifests; return how many. Data goes at the next prune."""
    n = 0
    for sid in snapshot_ids:
        repo.storage.delete(f"snapshots/{sid}")
        n += 1
    return n


def used_blobs(repo: Repository) -> set[bytes]:
    """
    Every blob id that a snapshot refers to: trees and file contents.

    Raises:
        IntegrityError: a snapshot or tree cannot be read; pruning on a partial
            view could delete data that is still needed, so callers must stop.
    """
    used: set[bytes] = set()
    snaps = repo.snapshots()
    if repo.damaged_snapshots:
        raise IntegrityError(
            "refusing to prune while snapshots are unreadable: " + "; ".join(repo.damaged_snapshots)
        )
    for snap in snaps:
        root = bytes.fromhex(snap.tree)
        used.add(root)
        for _, node in walk(repo, root):
            if node.subtree is not None:
                used.add(node.subtree)
            used.update(node.content)
    return used


@dataclass
class _Plan:
    result: PruneResult
    delete: list[str] = field(default_factory=list)
    repack: list[tuple[str, list[BlobLocation]]] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)

    @property
    def gone(self) -> set[str]:
        """Ids of the indexed packs that go."""
        return set(self.delete) | {pid for pid, _ in self.repack}


def _plan(repo: Repository, used: set[bytes], dry_run: bool) -> _Plan:
    plan = _Plan(PruneResult(blobs_used=len(used), dry_run=dry_run))
    res = plan.result
    refs = {p.id: p for p in repo.index.packs()}
    for pid, entries in repo.index.blobs_by_pack().items():
        keep = [e for e in entries if e.id in used]
        size = refs[pid].size
        if not keep:
            plan.delete.append(pid)
            res.bytes_freed += size
            continue
        unused = sum(e.length for e in entries if e.id not in used)
        if unused > REPACK_UNUSED * size:
            plan.repack.append((pid, [BlobLocation(refs[pid], e) for e in keep]))
            res.bytes_freed += unused
            res.bytes_repacked += sum(e.length for e in keep)
    indexed = {pack_name(p) for p in refs}
    for info in repo.storage.list("data/"):
        if info.name not in indexed:
            plan.strays.append(info.name)
            res.bytes_freed += info.size
    res.packs_deleted = len(plan.delete) + len(plan.repack) + len(plan.strays)
    res.packs_repacked = len(plan.repack)
    return plan


def _repack(repo: Repository, plan: _Plan, progress: ProgressSink) -> list[str]:
    """Copy the used blobs of sparse packs into new packs; return the index files written."""
    with BlobWriter(repo, progress=progress) as writer:
        for _, locs in plan.repack:
            for loc in locs:
                data = repo.read_blob(loc.entry.id)  # verified: damage is never copied
                writer.save(loc.entry.type, data, loc.entry.id, force=True)
                progress.advance(done_bytes=loc.entry.length)
        writer.flush()
        return list(writer.index_files)


def _publish(repo: Repository, plan: _Plan, written: list[str], progress: ProgressSink) -> None:
    """Write one complete index, delete the old ones, then the packs nothing refers to."""
    gone = plan.gone
    keep_packs = [
        # Unused blobs of kept packs stay indexed, so a later prune still
        # sees the pack's waste and can repack it.
        PackInfo(p.id, p.gen, p.eph, p.size, tuple(entries))
        for pid, entries in repo.index.blobs_by_pack().items()
        if entries and pid not in gone and (p := repo.index.pack(pid)) is not None
    ]
    old_index = [i.name for i in repo.storage.list("index/")]
    new_name = write_index_file(repo.storage, repo.keys.index_key, keep_packs, supersedes=old_index)
    for name in old_index + written:
        if name != new_name:
            repo.storage.delete(name)
    doomed = [pack_name(p) for p in gone] + plan.strays
    with ThreadPoolExecutor(max(2, repo.storage.properties.connections)) as pool:
        for f in [pool.submit(repo.storage.delete, n) for n in doomed]:
            try:
                f.result()
            except StorageError as exc:
                raise RepoError(f"prune could not delete a pack ({exc}); run prune again") from exc
            progress.advance(items=1)


def prune(
    repo: Repository, *, dry_run: bool = False, progress: ProgressSink | None = None
) -> PruneResult:
    """
    Delete and repack packs so that only data some snapshot uses is kept.

    Raises:
        RepositoryLocked: a backup or another prune is running.
        IntegrityError: a snapshot or tree is unreadable, or used data is not
            indexed; nothing is deleted then.
    """
    repo.keys.require_read("prune")
    progress = progress or NullProgress()
    with RepoLock(repo.storage, exclusive=True, wait=10.0):
        repo.reload_index()
        used = used_blobs(repo)
        missing = [b for b in used if not repo.index.has(b)]
        if missing:
            raise IntegrityError(
                f"{len(missing)} blob(s) that snapshots use are not in the index; "
                "run `safehold check` and `safehold repair index` before pruning"
            )
        plan = _plan(repo, used, dry_run)
        if dry_run:
            return plan.result
        progress.begin(
            "prune", total_bytes=plan.result.bytes_repacked, total_items=plan.result.packs_deleted
        )
        written = _repack(repo, plan, progress)
        _publish(repo, plan, written, progress)
        repo.reload_index()
        progress.end()
    return plan.result
