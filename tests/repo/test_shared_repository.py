"""
An engine keeps a repository open across jobs (docs/format.md § Keeping a
repository open (agents)): concurrent jobs share one index and one lock file,
and see what other processes change.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from safehold.core.progress import NullProgress
from safehold.core.snapshot import Snapshot, SnapshotMeta
from safehold.repo import Repository, backup_paths
from safehold.repo.check import check
from safehold.repo.errors import RepositoryLocked
from safehold.repo.index import Index
from safehold.repo.index_compact import compact_index
from safehold.repo.locks import RepoLock, list_locks
from safehold.repo.pack import BlobEntry, PackInfo
from safehold.repo.shared import JobIndex
from safehold.service.engine import RepoEngine
from safehold.storage.file import FileStorage
from safehold.testing import tree_bytes
from tests.conftest import FAST_KDF, PASSWORD, reopen


def _engine() -> RepoEngine:
    return RepoEngine(PASSWORD, kdf=FAST_KDF)


def _source(root: Path, n: int, seed: int) -> Path:
    """A small directory: a file shared by every source, and files of its own."""
    root.mkdir(parents=True)
    (root / "common.txt").write_bytes(b"the same in every source\n" * 100)
    for i in range(n):
        (root / f"f{i}.bin").write_bytes(os.urandom(1000 + 97 * i) + bytes([seed]) * 3000)
    return root


def _backup(engine: RepoEngine, repo_path: Path, src: Path, parent: str | None = None) -> Snapshot:
    storage = FileStorage(repo_path)  # a storage per job, as agent.worker opens them
    try:
        return engine.backup_dir(
            storage, src, meta=SnapshotMeta(), progress=NullProgress(), parent=parent
        )
    finally:
        storage.close()


def _restored(repo_path: Path, snap: Snapshot, target: Path) -> dict[str, bytes]:
    """Restore with a fresh engine (a fresh open: key, index) and return the bytes."""
    storage = FileStorage(repo_path)
    try:
        _engine().restore_dir(storage, snap.id, target, progress=NullProgress())
    finally:
        storage.close()
    return tree_bytes(target / Path(snap.paths[0]).name)


def test_concurrent_slots_each_store_complete_restorable_snapshots(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """Four slots of one engine back up at once, three rounds each; every snapshot restores."""
    engine = _engine()
    sources = [_source(tmp_path / f"src{k}", 4, k) for k in range(4)]
    made: list[tuple[Path, Snapshot]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def slot(k: int) -> None:
        parent = None
        try:
            start.wait()
            for r in range(3):
                (sources[k] / f"round{r}.txt").write_bytes(os.urandom(5000))
                snap = _backup(engine, repo_path, sources[k], parent)
                made.append((sources[k], snap))
                parent = snap.id
                expected = tree_bytes(sources[k])
                got = _restored(repo_path, snap, tmp_path / f"restore-{k}-{r}")
                assert got == expected
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=slot, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(made) == 12
    report = check(reopen(repo_path))  # every snapshot's blobs are in an index file
    assert report.ok, report.errors
    assert report.snapshots == 12
    assert not list_locks(FileStorage(repo_path))  # the joined lock file is gone


def test_a_job_never_dedups_against_another_jobs_unfiled_pack() -> None:
    """A pack one job stored but has not filed is invisible to another job's index."""
    shared = Index()
    a, b = JobIndex(lambda: shared), JobIndex(lambda: shared)
    blob = BlobEntry(b"\x01" * 32, 0, 0, 10, 10, 0)
    a.add_pack(PackInfo("aa" * 32, 1, b"\x00" * 32, 10, (blob,)))
    assert a.has(blob.id)
    assert not b.has(blob.id)
    assert b.lookup(blob.id) is None
    filed = BlobEntry(b"\x02" * 32, 0, 0, 10, 10, 0)
    shared.add_pack(PackInfo("bb" * 32, 1, b"\x00" * 32, 10, (filed,)), filed=True)
    assert a.has(filed.id)
    assert b.has(filed.id)


def test_another_writers_backup_and_compaction_are_seen(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """New index files and a compaction by another writer: the kept index follows."""
    engine = _engine()
    first = _backup(engine, repo_path, _source(tmp_path / "mine", 3, 1))
    # Another process: 20 backups (20 small index files), then a compaction.
    other = reopen(repo_path)
    theirs = []
    for i in range(20):
        src = _source(tmp_path / f"theirs{i}", 2, 50 + i)
        theirs.append((src, backup_paths(other, [src]).snapshot))
    # The kept index has not seen them; a restore of theirs refreshes it.
    src, snap = theirs[-1]
    assert _restore_with(engine, repo_path, snap, tmp_path / "r1") == tree_bytes(src)
    done = compact_index(reopen(repo_path), min_files=2)
    assert len(done.merged) >= 20
    # The files the kept index held are gone: it reloads, and new backups dedup
    # and restore correctly through it.
    again = _backup(engine, repo_path, tmp_path / "mine", first.id)
    assert _restore_with(engine, repo_path, again, tmp_path / "r2") == tree_bytes(tmp_path / "mine")
    for src, snap in theirs[::7]:
        assert _restore_with(engine, repo_path, snap, tmp_path / f"r-{snap.id[:8]}") == (
            tree_bytes(src)
        )
    assert check(reopen(repo_path)).ok


def _restore_with(
    engine: RepoEngine, repo_path: Path, snap: Snapshot, target: Path
) -> dict[str, bytes]:
    storage = FileStorage(repo_path)
    try:
        engine.restore_dir(storage, snap.id, target, progress=NullProgress())
    finally:
        storage.close()
    return tree_bytes(target / Path(snap.paths[0]).name)


def test_a_key_rotation_by_another_process_reopens_the_keys(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """After another process rotates the key, the engine's next job uses the new generation."""
    engine = _engine()
    src = _source(tmp_path / "src", 3, 7)
    _backup(engine, repo_path, src)
    other = Repository.open(FileStorage(repo_path), PASSWORD, load_index=False)
    gen = other.key_store.rotate(other.keys)
    (src / "new.bin").write_bytes(os.urandom(20_000))
    snap = _backup(engine, repo_path, src)
    fresh = reopen(repo_path)
    assert max(fresh.keys.generations) == gen
    # Data written after the rotation is under the new generation, and restores.
    tree = bytes.fromhex(snap.tree)
    assert fresh.locate(tree).pack.gen == gen
    assert _restored(repo_path, snap, tmp_path / "out") == tree_bytes(src)


def test_a_new_repository_at_the_same_place_is_opened_afresh(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """The location now holds another repository (new id): nothing kept is used."""
    engine = _engine()
    src = _source(tmp_path / "src", 2, 3)
    _backup(engine, repo_path, src)
    for entry in sorted(repo_path.rglob("*"), reverse=True):
        entry.rmdir() if entry.is_dir() else entry.unlink()
    Repository.init(FileStorage(repo_path), PASSWORD, kdf=FAST_KDF)
    snap = _backup(engine, repo_path, src)
    assert _restored(repo_path, snap, tmp_path / "out") == tree_bytes(src)
    assert check(reopen(repo_path)).ok


def test_shared_locks_of_one_process_are_one_file(repo_path: Path, repo: Repository) -> None:
    """Slots join the process's shared lock; it blocks prune until the last one goes."""
    first = RepoLock(FileStorage(repo_path), exclusive=False)
    second = RepoLock(FileStorage(repo_path), exclusive=False)
    first.acquire()
    second.acquire()
    assert len(list_locks(FileStorage(repo_path))) == 1
    first.release()
    assert len(list_locks(FileStorage(repo_path))) == 1  # the second still holds it
    with pytest.raises(RepositoryLocked):
        RepoLock(FileStorage(repo_path), exclusive=True).acquire()
    second.release()
    assert not list_locks(FileStorage(repo_path))
    with RepoLock(FileStorage(repo_path), exclusive=True):
        pass


def test_jobs_reuse_the_kept_keys_and_index(
    repo: Repository, repo_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Later jobs derive no key and load no index again: only new index files are read."""
    from safehold.repo import index_load, keys, shared

    engine = _engine()
    src = _source(tmp_path / "src", 2, 9)
    first = _backup(engine, repo_path, src)
    opens: list[int] = []
    loads: list[int] = []
    real_open, real_load = keys.KeyStore.open, index_load.load_index
    monkeypatch.setattr(
        keys.KeyStore, "open", lambda self, pw: opens.append(1) or real_open(self, pw)
    )
    for module in (index_load, shared):
        monkeypatch.setattr(
            module, "load_index", lambda *a, **k: loads.append(1) or real_load(*a, **k)
        )
    parent = first.id
    for i in range(3):
        (src / f"n{i}").write_bytes(os.urandom(3000))
        parent = _backup(engine, repo_path, src, parent).id
    assert opens == []
    assert loads == []
