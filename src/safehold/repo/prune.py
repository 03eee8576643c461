"""
Forget and prune (``docs/format.md`` § Prune).

``forget`` removes snapshot files only. ``prune`` frees the space that nothing
refers to any more, under an exclusive lock, in an order that leaves a valid
repository at every moment: repack → new complete index → delete old index
files → delete packs.

On a storage that holds what it writes (``repo.holds``), neither ever tries
to delete a held object: held snapshots, packs and index files are kept and
reported with their hold's end, packs that a held index file lists are kept
too, and prune moves the holds of everything the snapshots need to the
newest snapshot's hold (``docs/format.md`` § Immutable repositories).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from safehold.core.progress import NullProgress, ProgressSink
from safehold.repo.errors import IntegrityError, RepoError
from safehold.repo.holds import extend_holds, holds_of, lock_of, snapshot_holds
from safehold.repo.index import BlobLocation, read_index_file, write_index_files
from safehold.repo.locks import RepoLock
from safehold.repo.pack import PackInfo, pack_name
from safehold.repo.repository import Repository
from safehold.repo.restore import walk
from safehold.repo.tree import ListCache, node_blobs
from safehold.repo.writer import BlobWriter
from safehold.storage import LOCK_POLICY_NAME, Hold, StorageError

__all__ = ["ForgetResult", "PruneResult", "forget", "forget_held", "prune", "used_blobs"]

_log = logging.getLogger(__name__)

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
    held: list[Hold] = field(default_factory=list)
    """Packs and index files that would go but are held; kept, with the hold's end."""
    holds_extended: int = 0
    """Objects whose hold was moved to the newest snapshot's (timed lock policies)."""


@dataclass
class ForgetResult:
    """Which snapshots ``forget_held`` removed, and which it kept because they are held."""

    removed: list[str] = field(default_factory=list)
    held: list[Hold] = field(default_factory=list)


def forget_held(repo: Repository, snapshot_ids: Iterable[str]) -> ForgetResult:
    """
    Delete the given snapshots' manifests, except held ones. Data goes at the next prune.

    A held snapshot is not touched (no delete is even tried); it is reported
    with its hold, and a later ``forget`` removes it once the hold has ended.
    """
    ids = list(snapshot_ids)
    holds = snapshot_holds(repo, ids)
    result = ForgetResult(held=[holds[sid] for sid in ids if sid in holds])
    for sid in ids:
        if sid not in holds:
            repo.storage.delete(f"snapshots/{sid}")
            result.removed.append(sid)
    for hold in result.held:
        _log.warning("forget: kept %s", hold.describe())
    return result


def forget(repo: Repository, snapshot_ids: Iterable[str]) -> int:
    """Delete the given snapshots' manifests, except held ones; return how many went."""
    return len(forget_held(repo, snapshot_ids).removed)


def used_blobs(repo: Repository) -> set[bytes]:
    """
    Every blob id that a snapshot refers to: trees, chunk list blobs and file contents.

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
    load = ListCache(repo.read_blob)
    for snap in snaps:
        root = bytes.fromhex(snap.tree)
        used.add(root)
        for _, node in walk(repo, root):
            used.update(node_blobs(node, load))  # follows delta chunk lists
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


def _respect_holds(repo: Repository, plan: _Plan) -> set[str]:
    """
    Take held packs out of the plan (and packs that a held index file lists).

    Returns the old index files that are held: they stay, so every pack
    they list stays too (a kept index file must never name a deleted pack).
    """
    if lock_of(repo) is None:
        return set()
    res = plan.result
    old_index = [i.name for i in repo.storage.list("index/")]
    held_index = holds_of(repo, old_index)
    pinned: dict[str, Hold] = {}
    for name, index_hold in held_index.items():
        for p in read_index_file(repo.storage, name, repo.keys.index_key):
            pinned.setdefault(p.id, index_hold)
    refs = {p.id: p for p in repo.index.packs()}
    candidates = [pack_name(pid) for pid in plan.gone] + plan.strays
    holds = holds_of(repo, candidates)
    for pid in [*plan.gone, *(s.rsplit("/", 1)[-1] for s in plan.strays)]:
        name = pack_name(pid)
        if name not in holds and pid not in pinned:
            continue
        hold = holds.get(name)
        if hold is None:
            by_index = pinned[pid]
            hold = Hold(name, f"listed in held {by_index.name}", by_index.until)
        res.held.append(hold)
        if pid in plan.delete:
            plan.delete.remove(pid)
            res.bytes_freed -= refs[pid].size
        elif name in plan.strays:
            plan.strays.remove(name)
            res.bytes_freed -= next(i.size for i in repo.storage.list(name))
        else:
            locs = next(locs for p, locs in plan.repack if p == pid)
            plan.repack = [(p, ls) for p, ls in plan.repack if p != pid]
            kept = sum(loc.entry.length for loc in locs)
            res.bytes_freed -= _unused(repo, pid, kept)
            res.bytes_repacked -= kept
    res.held.extend(held_index.values())
    res.packs_deleted = len(plan.delete) + len(plan.repack) + len(plan.strays)
    res.packs_repacked = len(plan.repack)
    return set(held_index)


def _unused(repo: Repository, pack_id: str, kept: int) -> int:
    """The bytes of *pack_id* that no snapshot uses, as ``_plan`` counted them."""
    entries = repo.index.blobs_by_pack().get(pack_id, [])
    return sum(e.length for e in entries) - kept


def _extend(repo: Repository) -> int:
    """
    Hold everything the held snapshots need until the newest snapshot's hold ends.

    A pack written long ago and reused by today's snapshot would otherwise
    lose its hold before that snapshot does.
    """
    lock = lock_of(repo)
    if lock is None or lock[1].mode == "append-only":
        return 0
    holds = holds_of(repo, [i.name for i in repo.storage.list("snapshots/")])
    ends = [h.until for h in holds.values() if h.until is not None]
    if not ends:
        return 0
    names = [pack_name(p.id) for p in repo.index.packs()]
    for prefix in ("index/", "keys/", "keyring/", "pubring/"):
        names.extend(i.name for i in repo.storage.list(prefix))
    names += ["config", LOCK_POLICY_NAME]
    return extend_holds(repo, names, max(ends))


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


def _publish(
    repo: Repository,
    plan: _Plan,
    written: list[str],
    progress: ProgressSink,
    held_index: set[str],
) -> None:
    """Write a complete index (in bounded files), delete the old ones, then the unused packs."""
    gone = plan.gone
    keep_packs = [
        # Unused blobs of kept packs stay indexed, so a later prune still
        # sees the pack's waste and can repack it.
        PackInfo(p.id, p.gen, p.eph, p.size, tuple(entries))
        for pid, entries in repo.index.blobs_by_pack().items()
        if entries and pid not in gone and (p := repo.index.pack(pid)) is not None
    ]
    old_index = [i.name for i in repo.storage.list("index/")]
    new = set(
        write_index_files(repo.storage, repo.keys.index_key, keep_packs, supersedes=old_index)
    )
    # Held index files stay; the new index supersedes them and agrees with them.
    held = held_index | set(holds_of(repo, written))
    for name in old_index + written:
        if name not in new and name not in held:
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
        held_index = _respect_holds(repo, plan)
        if dry_run:
            return plan.result
        progress.begin(
            "prune", total_bytes=plan.result.bytes_repacked, total_items=plan.result.packs_deleted
        )
        written = _repack(repo, plan, progress)
        _publish(repo, plan, written, progress, held_index)
        repo.reload_index()
        plan.result.holds_extended = _extend(repo)
        progress.end()
    return plan.result
