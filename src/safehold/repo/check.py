"""
Check: verify a repository's structure and, optionally, its data.

The structural check reads every key file, keyring and public keyring file,
index file, snapshot and tree, and every pack's header, and compares them
(the config's MAC is checked when the repository is opened). ``read_data``
also reads a share of the packs (or all of them) whole, checks each against
its name and verifies every blob. Damage is reported by file: the pack, index,
snapshot, key or keyring file, and then every snapshot and path whose data is
affected.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from safehold.core.progress import NullProgress, ProgressSink
from safehold.repo.crypto import DecryptError, content_hash
from safehold.repo.errors import IntegrityError
from safehold.repo.index import BlobLocation, Index, PackRef, read_index_file, write_index_files
from safehold.repo.keys import CONFIG_MAC_VERSION
from safehold.repo.locks import list_locks
from safehold.repo.pack import (
    PREFIX_SIZE,
    PackInfo,
    header_length,
    pack_name,
    parse_header,
    parse_prefix,
)
from safehold.repo.repository import Repository
from safehold.repo.restore import walk
from safehold.repo.tree import ListCache, content_ids
from safehold.storage import ObjectNotFound, StorageError

__all__ = ["CheckReport", "check", "load_index_tolerant", "rebuild_index"]


@dataclass
class CheckReport:
    """What ``check`` found. ``ok`` is False if anything is damaged or missing."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    damaged_files: dict[str, list[str]] = field(default_factory=dict)  # snapshot id -> paths
    snapshots: int = 0
    packs: int = 0
    packs_read: int = 0
    blobs: int = 0

    @property
    def ok(self) -> bool:
        """No errors."""
        return not self.errors


def load_index_tolerant(repo: Repository, report: CheckReport) -> Index:
    """Load every readable index file, reporting the damaged ones."""
    index = Index()
    for info in repo.storage.list("index/"):
        try:
            for p in read_index_file(repo.storage, info.name, repo.keys.index_key):
                index.add_pack(p)
            index.files.append(info.name)
        except IntegrityError as exc:
            report.errors.append(str(exc))
    return index


class _Checker:
    def __init__(self, repo: Repository, report: CheckReport, progress: ProgressSink) -> None:
        self.repo = repo
        self.report = report
        self.progress = progress
        self.lock = threading.Lock()
        self.bad_blobs: dict[bytes, str] = {}

    def error(self, msg: str) -> None:
        with self.lock:
            self.report.errors.append(msg)

    def check_header(
        self, pack: PackRef, stored: dict[str, int], entries: list[BlobLocation]
    ) -> None:
        name = pack_name(pack.id)
        size = stored.get(name)
        if size is None:
            self.error(f"pack {name} is missing (the index refers to it)")
            self._mark(entries, f"pack {name} is missing")
            return
        if size != pack.size:
            self.error(f"pack {name} has size {size}, the index says {pack.size}")
            self._mark(entries, f"pack {name} has the wrong size")
            return
        try:
            head = self.repo.storage.get(name, 0, PREFIX_SIZE)
            gen, eph = parse_prefix(head)
            tail = self.repo.storage.get(name, size - 4, 4)
            hlen = header_length(tail)
            if not 0 < hlen <= size - PREFIX_SIZE - 4 or (gen, eph) != (pack.gen, pack.eph):
                raise DecryptError("bad prefix or header length")
            header = self.repo.storage.get(name, size - 4 - hlen, hlen)
            blobs = {e.id: e for e in parse_header(self.repo.pack_key(pack), header)}
        except (DecryptError, StorageError) as exc:
            self.error(f"pack {name} is damaged: its header cannot be read ({exc})")
            self._mark(entries, f"pack {name} is damaged")
            return
        for loc in entries:
            if blobs.get(loc.entry.id) != loc.entry:
                self.error(
                    f"pack {name} does not hold blob {loc.entry.id.hex()[:16]} where the index says"
                )
                self._mark([loc], f"pack {name} disagrees with the index")

    def read_pack(self, pack: PackRef, entries: list[BlobLocation]) -> None:
        name = pack_name(pack.id)
        try:
            data = self.repo.storage.get(name)
        except (ObjectNotFound, StorageError) as exc:
            self.error(f"pack {name} cannot be read: {exc}")
            self._mark(entries, f"pack {name} cannot be read")
            return
        if content_hash(data) != pack.id:
            self.error(f"pack {name} is damaged: its content does not match its name")
        view = memoryview(data)
        for loc in entries:
            e = loc.entry
            try:
                self.repo.decode_blob(loc, view[e.offset : e.offset + e.length])
            except IntegrityError as exc:
                self.error(str(exc))
                self._mark([loc], f"pack {name} is damaged")
        with self.lock:
            self.report.packs_read += 1
        self.progress.advance(done_bytes=len(data), items=1)

    def _mark(self, entries: Iterable[BlobLocation], why: str) -> None:
        with self.lock:
            for loc in entries:
                self.bad_blobs.setdefault(loc.entry.id, why)


def check(
    repo: Repository,
    *,
    read_data: float = 0.0,
    progress: ProgressSink | None = None,
    seed: int | None = None,
) -> CheckReport:
    """
    Check the repository; *read_data* is the share of packs (0 to 1) to read whole.

    Never raises for damage: everything found is in the report.
    """
    repo.keys.require_read("check")
    progress = progress or NullProgress()
    report = CheckReport()
    _check_repo_files(repo, report)
    index = load_index_tolerant(repo, report)
    repo.index = index
    c = _Checker(repo, report, progress)

    # Packs: what the index says against what the storage has.
    stored = {i.name: i.size for i in repo.storage.list("data/")}
    by_pack: dict[str, list[BlobLocation]] = {}
    refs = {p.id: p for p in index.packs()}
    for pid, entries in index.blobs_by_pack().items():
        by_pack[pid] = [BlobLocation(refs[pid], e) for e in entries]
    report.packs = len(refs)
    report.blobs = len(index)
    indexed_names = {pack_name(p) for p in refs}
    for name in sorted(set(stored) - indexed_names):
        report.warnings.append(
            f"pack {name} is not in any index (left by an interrupted backup; prune removes it)"
        )
    progress.begin("check", total_bytes=None, total_items=len(refs))
    workers = max(2, repo.storage.properties.connections)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda pid: c.check_header(refs[pid], stored, by_pack[pid]), list(refs)))
    if read_data > 0:
        chosen = [pid for pid in refs if pack_name(pid) in stored]
        if read_data < 1:
            rng = random.Random(seed)  # noqa: S311 - sampling, not secrecy
            chosen = rng.sample(chosen, max(1, round(len(chosen) * read_data))) if chosen else []
        total = sum(refs[p].size for p in chosen)
        progress.begin("read-data", total_bytes=total, total_items=len(chosen))
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda pid: c.read_pack(refs[pid], by_pack[pid]), chosen))

    _check_snapshots(repo, index, c, report)
    progress.end()
    return report


def _check_snapshots(repo: Repository, index: Index, c: _Checker, report: CheckReport) -> None:
    """Snapshots and trees: everything they refer to must be indexed and sound."""
    snaps = repo.snapshots()
    report.errors.extend(repo.damaged_snapshots)
    report.snapshots = len(snaps)
    load = ListCache(repo.read_blob)
    for snap in snaps:
        damaged: list[str] = []
        root = bytes.fromhex(snap.tree)
        if root in c.bad_blobs:
            damaged.append(f"/ (its tree: {c.bad_blobs[root]})")
        try:
            for path, node in walk(repo, root):
                if node.subtree is not None and node.subtree in c.bad_blobs:
                    damaged.append(f"{path}/ (its tree: {c.bad_blobs[node.subtree]})")
                listed = node.chunk_list.list_id if node.chunk_list is not None else None
                if listed is not None and listed in c.bad_blobs:
                    damaged.append(f"{path} (its chunk list: {c.bad_blobs[listed]})")
                    continue
                try:
                    ids = content_ids(node, load)  # reads and verifies a delta's list blob
                except IntegrityError as exc:
                    damaged.append(f"{path} (its chunk list: {exc})")
                    continue
                missing = [b for b in ids if not index.has(b)]
                bad = [c.bad_blobs[b] for b in ids if b in c.bad_blobs]
                if missing:
                    damaged.append(f"{path} ({len(missing)} blob(s) missing)")
                elif bad:
                    damaged.append(f"{path} ({bad[0]})")
        except IntegrityError as exc:
            damaged.append(f"a tree: {exc}")
        if damaged:
            report.damaged_files[snap.id] = damaged
            report.errors.append(
                f"snapshot {snap.short_id} is damaged: {', '.join(damaged[:10])}"
                + (f" and {len(damaged) - 10} more" if len(damaged) > 10 else "")
            )


def _check_repo_files(repo: Repository, report: CheckReport) -> None:
    """The config, key files, keyrings and locks: every file kind but data, index, snapshots."""
    version = repo.config.get("version")
    if isinstance(version, int) and version < CONFIG_MAC_VERSION and "mac" not in repo.config:
        report.warnings.append(
            f"config is not authenticated (format version {version}): damage to it "
            "cannot be detected"
        )
    store = repo.key_store
    report.errors.extend(store.damaged_key_files())
    report.errors.extend(store.verify_rings(repo.keys))
    for lk in list_locks(repo.storage):
        if lk.damaged:
            report.warnings.append(
                f"lock file {lk.name} is damaged ({lk.damaged}); it is ignored as stale, "
                "and `safehold unlock` removes it"
            )


def rebuild_index(repo: Repository, progress: ProgressSink | None = None) -> tuple[int, list[str]]:
    """
    Rebuild the index from the packs' own headers (``repair index``).

    Writes a new index over every readable pack (in files of at most
    ``index.FILE_MAX_BLOBS`` blobs), then deletes every old index file.
    Returns ``(packs indexed, problems)``.
    """
    repo.keys.require_read("repairing the index")
    progress = progress or NullProgress()
    problems: list[str] = []
    infos: list[PackInfo] = []
    lock = threading.Lock()
    packs = list(repo.storage.list("data/"))
    progress.begin("repair", total_bytes=None, total_items=len(packs))

    def one(name: str, size: int) -> None:
        try:
            gen, eph = parse_prefix(repo.storage.get(name, 0, PREFIX_SIZE))
            hlen = header_length(repo.storage.get(name, size - 4, 4))
            header = repo.storage.get(name, size - 4 - hlen, hlen)
            pid = name.rsplit("/", 1)[1]
            entries = parse_header(repo.pack_key(PackRef(pid, gen, eph, size)), header)
            with lock:
                infos.append(PackInfo(pid, gen, eph, size, tuple(entries)))
        except (DecryptError, StorageError, IntegrityError) as exc:
            with lock:
                problems.append(f"pack {name} is unreadable and was left out: {exc}")
        progress.advance(items=1)

    with ThreadPoolExecutor(max(2, repo.storage.properties.connections)) as pool:
        list(pool.map(lambda i: one(i.name, i.size), packs))
    old = [i.name for i in repo.storage.list("index/")]
    new = set(write_index_files(repo.storage, repo.keys.index_key, infos, supersedes=old))
    for name in old:
        if name not in new:
            repo.storage.delete(name)
    repo.reload_index()
    progress.end()
    return len(infos), problems
