"""
Index compaction: small index files merged into bounded ones, safely.

Each safety rule of ``repo.index_compact`` has a test: the shared lock (never
beside prune), strict reads (damage is neither merged nor deleted), crashes
and racing compactors lose nothing, readers that held the old files still
find every blob, and held files are never deleted.
"""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from safehold.core.progress import NullProgress
from safehold.core.snapshot import SnapshotMeta
from safehold.repo import Repository, backup_paths, check, restore
from safehold.repo import index_compact as compact_module
from safehold.repo.crypto import open_envelope
from safehold.repo.errors import RepositoryLocked
from safehold.repo.index import Index, read_index_file, write_index_file, write_index_files
from safehold.repo.index_compact import (
    CompactionTrigger,
    compact_index,
    index_file_count,
)
from safehold.repo.index_load import load_index, refresh
from safehold.repo.locks import RepoLock
from safehold.repo.pack import BlobEntry, PackInfo
from safehold.service.engine import RepoEngine
from safehold.storage import LockPolicy, ObjectLocked, Storage
from safehold.storage.memory import MemoryStorage
from tests.conftest import FAST_KDF, PASSWORD, reopen, tree_state
from tests.repo.test_index_load import _source


def _names(storage: Storage) -> set[str]:
    return {i.name for i in storage.list("index/")}


def _small_files(repo: Repository, n: int, seed: int = 0) -> dict[bytes, str]:
    """Write *n* index files of one pack of 3 blobs (a tiny backup's); return blob → pack."""
    rnd = random.Random(seed)
    where: dict[bytes, str] = {}
    for _ in range(n):
        pid = rnd.randbytes(32).hex()
        blobs = tuple(BlobEntry(rnd.randbytes(32), i % 2, i * 100, 100, 200, 1) for i in range(3))
        write_index_file(
            repo.storage, repo.keys.index_key, [PackInfo(pid, 1, rnd.randbytes(32), 300, blobs)]
        )
        where.update({b.id: pid for b in blobs})
    return where


def _blobs(rnd: random.Random, n: int) -> tuple[BlobEntry, ...]:
    return tuple(BlobEntry(rnd.randbytes(32), 0, i * 100, 100, 200, 1) for i in range(n))


def _finds_all(repo: Repository, where: dict[bytes, str]) -> None:
    for blob_id, pid in where.items():
        loc = repo.index.lookup(blob_id)
        assert loc is not None, blob_id.hex()
        assert pid == loc.pack.id


def _supersedes(repo: Repository, name: str) -> list[str]:
    doc: dict[str, Any] = json.loads(open_envelope(repo.storage.get(name), key=repo.keys.index_key))
    return list(doc["supersedes"])


def _memory_repo(**kw: Any) -> Repository:
    return Repository.init(MemoryStorage(**kw), PASSWORD, kdf=FAST_KDF)


# ------------------------------------------------------------------ the merge


def test_small_files_become_one_and_every_backup_restores(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """Twenty backups, twenty-odd index files: one file afterwards, and check and restore agree."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}").write_bytes(os.urandom(3_000))
        backup_paths(repo, [src])
    before = _names(repo.storage)
    assert len(before) >= 20
    result = compact_index(repo)
    after = _names(repo.storage)
    assert set(result.merged) == before
    assert after == set(result.written)
    assert 1 == len(after)
    assert sorted(before) == sorted(_supersedes(repo, result.written[0]))
    fresh = reopen(repo_path)
    assert check(fresh).ok
    restore(fresh, fresh.find_snapshot("latest"), tmp_path / "out")
    assert tree_state(src) == tree_state(tmp_path / "out" / "src")


def test_a_merged_file_holds_every_entry_of_what_it_supersedes() -> None:
    """Entry for entry, packs and blobs, also for a pack two files name (united, not doubled)."""
    repo = _memory_repo()
    where = _small_files(repo, 30)
    old = sorted(_names(repo.storage))
    entries = {
        (p.id, p.gen, p.eph, p.size, b)
        for n in old
        for p in read_index_file(repo.storage, n, repo.keys.index_key)
        for b in p.blobs
    }
    # A pack named again by another file (a racing compaction's duplicate).
    first = read_index_file(repo.storage, old[0], repo.keys.index_key)
    write_index_file(repo.storage, repo.keys.index_key, first)
    result = compact_index(repo)
    assert 31 == len(result.merged)
    merged = [
        p for n in result.written for p in read_index_file(repo.storage, n, repo.keys.index_key)
    ]
    assert entries == {(p.id, p.gen, p.eph, p.size, b) for p in merged for b in p.blobs}
    assert len(merged) == len({p.id for p in merged})  # each pack once
    repo.reload_index()
    _finds_all(repo, where)


def test_a_pack_named_twice_keeps_all_its_blobs_and_a_contradiction_is_not_merged() -> None:
    """Two files naming one pack with different blobs: united. With another size: left alone."""
    repo = _memory_repo()
    rnd = random.Random(7)
    blobs = _blobs(rnd, 4)
    pid, eph = rnd.randbytes(32).hex(), rnd.randbytes(32)
    key = repo.keys.index_key
    write_index_file(repo.storage, key, [PackInfo(pid, 1, eph, 400, blobs[:3])])
    write_index_file(repo.storage, key, [PackInfo(pid, 1, eph, 400, blobs[1:])])
    # Another size for the same pack, in the largest file (merged last: smallest first).
    other = PackInfo(rnd.randbytes(32).hex(), 1, eph, 1, _blobs(rnd, 20))
    odd = write_index_file(repo.storage, key, [PackInfo(pid, 1, eph, 999, blobs[:1]), other])
    result = compact_index(repo)
    assert 2 == len(result.merged)
    assert odd not in result.merged
    assert odd in _names(repo.storage)
    assert any(odd in msg for msg in result.skipped)
    (merged,) = read_index_file(repo.storage, result.written[0], key)
    assert set(blobs) == set(merged.blobs)
    assert (pid, 400) == (merged.id, merged.size)


def test_large_files_are_left_alone_and_so_are_batches_too_small() -> None:
    """Only files under the size bound are merged; fewer than *min_files* of them: nothing."""
    repo = _memory_repo()
    _small_files(repo, 5)
    big = {i.name for i in repo.storage.list("index/") if i.size > 0}
    result = compact_index(repo, small_bytes=1)  # every file counts as large
    assert not result.merged
    assert not result.written
    assert big == _names(repo.storage)
    result = compact_index(repo, min_files=6)
    assert not result.merged
    assert big == _names(repo.storage)


def test_a_batch_bounds_one_run_and_the_rest_is_pending() -> None:
    """40 files, batches of 16: three runs catch up; nothing is lost on the way."""
    repo = _memory_repo()
    where = _small_files(repo, 40)
    first = compact_index(repo, batch=16)
    assert 16 == len(first.merged)
    assert 24 == first.pending
    assert 40 - 16 + 1 == first.files_left == len(_names(repo.storage))
    while compact_index(repo, batch=16).pending:
        pass
    assert compact_index(repo, batch=16).files_left <= 2
    repo.reload_index()
    _finds_all(repo, where)


# ------------------------------------------------------------------ safety


def test_a_damaged_or_vanished_file_is_neither_merged_nor_deleted() -> None:
    """Read strictly: a file that fails verification stays, and is named."""
    repo = _memory_repo()
    storage = repo.storage
    assert isinstance(storage, MemoryStorage)
    where = _small_files(repo, 10)
    victim = sorted(_names(storage))[3]
    raw = bytearray(storage.get(victim))
    raw[-1] ^= 1
    storage.raw()[victim] = bytes(raw)
    result = compact_index(repo)
    assert victim not in result.merged
    assert victim in _names(storage)
    assert any(victim in msg for msg in result.skipped)
    assert 9 == len(result.merged)
    for name in result.written:
        assert victim not in _supersedes(repo, name)
    repo.reload_index(strict=False)
    lost = {b for b, _ in where.items() if repo.index.lookup(b) is None}
    assert 3 == len(lost)  # the damaged file's blobs only, as before compaction


def test_it_runs_under_the_shared_lock_never_beside_prune() -> None:
    """An exclusive lock (prune) stops it; a shared one (a backup) does not; prune waits for it."""
    repo = _memory_repo()
    _small_files(repo, 10)
    before = _names(repo.storage)
    with RepoLock(repo.storage, exclusive=True), pytest.raises(RepositoryLocked):
        compact_index(repo)
    assert before == _names(repo.storage)
    with RepoLock(repo.storage, exclusive=False):
        assert 10 == len(compact_index(repo).merged)
    _small_files(repo, 10, seed=1)
    real = write_index_files
    seen: list[str] = []

    def prune_tries(*args: Any, **kwargs: Any) -> list[str]:
        try:
            RepoLock(repo.storage, exclusive=True).acquire()
        except RepositoryLocked as exc:
            seen.append(str(exc))
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compact_module, "write_index_files", prune_tries)
        compact_index(repo)
    assert seen
    assert "lock" in seen[0]


def test_a_crash_between_writing_and_deleting_loses_nothing() -> None:
    """Killed after the merged file is stored: old and new files are both there; the union holds."""
    repo = _memory_repo()
    where = _small_files(repo, 12)
    before = _names(repo.storage)

    class Killed(BaseException):
        pass

    def killed(*_: Any) -> list[str]:
        raise Killed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compact_module, "_delete", killed)
        with pytest.raises(Killed):
            compact_index(repo)
    after = _names(repo.storage)
    assert before < after
    assert 13 == len(after)
    reader = Repository.open(repo.storage, PASSWORD)
    _finds_all(reader, where)
    # The next compaction merges the leftovers and the duplicate alike.
    assert 13 == len(compact_index(repo).merged)
    assert 1 == len(_names(repo.storage))
    reader.refresh_index()
    _finds_all(reader, where)


def test_two_compactors_racing_both_write_complete_files() -> None:
    """B runs whole while A is between reading and writing: A's deletes find files gone."""
    storage = MemoryStorage()
    a = Repository.init(storage, PASSWORD, kdf=FAST_KDF)
    b = Repository.open(storage, PASSWORD)
    where = _small_files(a, 20)
    real = write_index_files
    inner: list[compact_module.CompactResult] = []
    calls = [0]

    def b_first(*args: Any, **kwargs: Any) -> list[str]:
        calls[0] += 1
        if calls[0] == 1:  # A is about to write: B runs whole now
            inner.append(compact_index(b))
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compact_module, "write_index_files", b_first)
        result_a = compact_index(a)
    result_b = inner[0]
    assert 20 == len(result_a.merged) == len(result_b.merged)
    assert _names(storage) == set(result_a.written) | set(result_b.written)
    for name in _names(storage):  # each alone is complete
        packs = read_index_file(storage, name, a.keys.index_key)
        assert set(where) == {blob.id for p in packs for blob in p.blobs}
    fresh = Repository.open(storage, PASSWORD)
    _finds_all(fresh, where)
    assert 2 == len(compact_index(fresh).merged)
    fresh.reload_index()
    _finds_all(fresh, where)


@pytest.mark.parametrize("tables", [False, True], ids=["memory", "tables"])
def test_a_reader_holding_the_old_files_finds_every_blob_after_a_refresh(
    tmp_path: Path, tables: bool
) -> None:
    """It reloads (held files are gone) and reads only what is there now: the merged file."""
    repo = _memory_repo()
    where = _small_files(repo, 100)
    src = _source(repo, tmp_path / "cache", memory_blobs=100 if tables else 1_000_000)
    index = load_index(src)
    assert bool(index.tables) == tables
    assert 100 == index_file_count(index)
    result = compact_index(repo)
    assert 100 == len(result.merged)
    more = _small_files(repo, 2, seed=9)
    reads: list[str] = []
    real_get = repo.storage.get

    def counting_get(name: str, *args: Any) -> bytes:
        if name.startswith("index/"):
            reads.append(name)
        return real_get(name, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(repo.storage, "get", counting_get)
        index = refresh(src, index)
    repo.index = index
    _finds_all(repo, {**where, **more})
    assert 3 == index_file_count(index)
    assert sorted(reads) == sorted(_names(repo.storage))  # 3 reads, not 102


def test_a_reader_between_listing_and_reading_survives_a_compaction() -> None:
    """A refresh lists, a compaction deletes what it listed, then the refresh reads."""
    storage = MemoryStorage()
    writer = Repository.init(storage, PASSWORD, kdf=FAST_KDF)
    reader = Repository.open(storage, PASSWORD)
    where = _small_files(writer, 20)
    real_list = storage.list

    done: list[object] = []

    def list_then_compact(prefix: str = "") -> Any:
        names = list(real_list(prefix))
        if prefix == "index/" and not done:
            done.append(prefix)
            compact_index(writer)  # between the reader's listing and its reads
        return iter(names)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(storage, "list", list_then_compact)
        reader.refresh_index()
    _finds_all(reader, where)


def test_a_compaction_of_new_files_leaves_a_readers_base_table_alone(tmp_path: Path) -> None:
    """The base table holds no merged file: a refresh rebuilds only the small tables above it."""
    repo = _memory_repo()
    rnd = random.Random(5)
    big = [
        PackInfo(rnd.randbytes(32).hex(), 1, rnd.randbytes(32), 1 << 20, _blobs(rnd, 16))
        for _ in range(125)
    ]
    write_index_file(repo.storage, repo.keys.index_key, big)
    src = _source(repo, tmp_path / "cache", memory_blobs=100)
    index = load_index(src)
    base = index.tables[0].path
    where = _small_files(repo, 20)
    index = refresh(src, index)
    assert base == index.tables[0].path
    assert 2 == len(index.tables)
    result = compact_index(repo, small_bytes=10_000)
    assert 20 == len(result.merged)
    index = refresh(src, index)
    repo.index = index
    _finds_all(repo, where)
    assert base == index.tables[0].path  # not rebuilt


# ------------------------------------------------------------------ held files


def test_held_index_files_are_never_deleted_nor_merged_until_the_hold_ends() -> None:
    """Timed holds: no delete is tried while held; afterwards they are merged, the new file held."""
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    storage = MemoryStorage(clock=lambda: now[0])
    repo = Repository.init(storage, PASSWORD, kdf=FAST_KDF)
    storage.enable_lock(LockPolicy("governance", days=1))
    where = _small_files(repo, 10)
    deletes: list[str] = []
    real_delete = storage.delete

    def recording_delete(name: str) -> None:
        deletes.append(name)
        real_delete(name)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(storage, "delete", recording_delete)
        held = compact_index(repo)
        assert not held.merged
        assert not held.written
        assert 10 == len(held.skipped)
        assert "held" in held.skipped[0]
        assert not [d for d in deletes if d.startswith("index/")]
        now[0] += timedelta(days=2)
        done = compact_index(repo)
    assert 10 == len(done.merged)
    assert storage.hold(done.written[0]) is not None
    repo.reload_index()
    _finds_all(repo, where)


def test_an_append_only_repository_is_not_compacted() -> None:
    """Nothing there can be deleted: merging would only add files."""
    storage = MemoryStorage()
    repo = Repository.init(storage, PASSWORD, kdf=FAST_KDF)
    storage.enable_lock(LockPolicy("append-only"))
    _small_files(repo, 10)
    before = _names(storage)
    result = compact_index(repo)
    assert not result.written
    assert before == _names(storage)
    assert "append-only" in result.skipped[0]


def test_a_refused_delete_is_skipped_and_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Held after all (the hold check missed it): the file stays, superseded and agreeing."""
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    storage = MemoryStorage(clock=lambda: now[0])
    repo = Repository.init(storage, PASSWORD, kdf=FAST_KDF)
    storage.enable_lock(LockPolicy("governance", days=1))
    where = _small_files(repo, 10)
    monkeypatch.setattr(compact_module, "holds_of", lambda *_: {})
    with pytest.raises(ObjectLocked):
        storage.delete(sorted(_names(storage))[0])
    result = compact_index(repo)
    assert 10 == len(result.kept)
    assert not result.merged
    assert 11 == len(_names(storage))
    repo.reload_index()
    _finds_all(repo, where)


# ------------------------------------------------------------------ the trigger


def test_the_trigger_uses_the_count_the_refresh_knows_and_remembers_what_stays() -> None:
    """No listing below the threshold; large files that stay do not make it fire again."""
    repo = _memory_repo()
    trigger = CompactionTrigger(8, jitter=False, min_files=2)
    _small_files(repo, 8)
    repo.reload_index()
    listings: list[str] = []
    real_list = repo.storage.list

    def counting_list(prefix: str = "") -> Any:
        listings.append(prefix)
        return real_list(prefix)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(repo.storage, "list", counting_list)
        assert trigger.after_backup(repo) is None
        assert not listings
    _small_files(repo, 1, seed=1)
    repo.reload_index()
    result = trigger.after_backup(repo)
    assert result is not None
    assert 9 == len(result.merged)
    # Ten files too large to merge: the next compaction waits for 8 more beyond them.
    big = CompactionTrigger(8, jitter=False, min_files=2, small_bytes=1)
    _small_files(repo, 10, seed=2)
    repo.reload_index()
    assert big.after_backup(repo) is not None
    assert big.after_backup(repo) is None
    assert not big.due(repo)


def test_a_failed_compaction_never_fails_the_backup() -> None:
    """Prune holds the lock: the trigger logs, returns None, and waits for more files."""
    repo = _memory_repo()
    _small_files(repo, 5)
    repo.reload_index()
    trigger = CompactionTrigger(2, jitter=False, min_files=2)
    with RepoLock(repo.storage, exclusive=True):
        assert trigger.after_backup(repo) is None
    assert not trigger.due(repo)
    assert 5 == len(_names(repo.storage))


def test_the_engine_keeps_a_shared_repository_small(tmp_path: Path) -> None:
    """Backups through the service's engine: index files stay bounded, every snapshot restores."""
    engine = RepoEngine(PASSWORD, kdf=FAST_KDF)
    engine._compaction = CompactionTrigger(6, jitter=False, min_files=2)
    storage = MemoryStorage()
    src = tmp_path / "src"
    src.mkdir()
    snaps = []
    for i in range(20):
        (src / "f").write_bytes(os.urandom(2_000) + bytes([i]))
        meta = SnapshotMeta(host="h", tags=(f"p{i % 4}",))
        snaps.append(engine.backup_dir(storage, src, meta=meta, progress=NullProgress()))
    assert len(_names(storage)) <= 6 + 2
    repo = Repository.open(storage, PASSWORD)
    assert check(repo).ok
    out = tmp_path / "out"
    restore(repo, repo.find_snapshot(snaps[-1].id), out)
    assert (src / "f").read_bytes() == (out / "src" / "f").read_bytes()


def test_a_large_index_in_memory_waits_for_more_files(tmp_path: Path) -> None:
    """An in-memory index is read again after a compaction: its limit is sqrt(2 * blobs)."""
    trigger = CompactionTrigger(256, jitter=False)
    index = Index()
    rnd = random.Random(3)
    assert 256 == trigger.limit(index)
    for _ in range(50):
        index.add_pack(
            PackInfo(rnd.randbytes(32).hex(), 1, b"k" * 32, 1, _blobs(rnd, 1_000)), filed=True
        )
    assert 316 == trigger.limit(index)  # isqrt(100,000)
    # With tables, a reader rebuilds only the small tables on top: the threshold holds.
    repo = _memory_repo()
    _small_files(repo, 10)
    assert 256 == trigger.limit(load_index(_source(repo, tmp_path / "cache", memory_blobs=10)))
