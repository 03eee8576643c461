"""Opening an index: from the local cache and only the files it lacks; damage is not fatal."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from safehold.repo import Repository, backup_paths, restore
from safehold.repo.cache import OpenRepositories
from safehold.repo.errors import IntegrityError
from safehold.repo.index import write_index_file
from safehold.repo.index_load import MANIFEST_NAME, IndexSource, load_index, refresh
from safehold.storage.file import FileStorage
from tests.conftest import FAST_KDF, PASSWORD, reopen
from tests.repo.test_index_table import synthetic_packs


def _source(repo: Repository, cache: Path, memory_blobs: int = 1_000) -> IndexSource:
    return IndexSource(repo.storage, repo.keys.index_key, repo.config["id"], cache, 2, memory_blobs)


def _write(repo: Repository, blobs: int, files: int, seed: int) -> list[str]:
    packs = synthetic_packs(blobs, seed=seed)
    step = -(-len(packs) // files)
    return [
        write_index_file(repo.storage, repo.keys.index_key, packs[i : i + step])
        for i in range(0, len(packs), step)
    ]


def test_a_large_index_goes_to_a_table_and_a_warm_open_reads_no_index_file(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """100k blobs: cold open writes the table; a warm open uses it without reading index files."""
    cache = tmp_path / "cache"
    names = _write(repo, 100_000, 10, seed=3)
    packs = synthetic_packs(100_000, seed=3)
    cold = load_index(_source(repo, cache))
    assert 1 == len(cold.tables)
    assert 0 == cold.memory_blobs
    assert (cache / repo.config["id"] / MANIFEST_NAME).is_file()
    assert 100_000 == len(cold)
    # Scramble every index file's content: a warm open must not need them.
    for name in names:
        (repo_path / name).write_bytes(b"not an index file")
    warm = load_index(_source(repo, cache), strict=True)
    assert [t.header_mac for t in warm.tables] == [t.header_mac for t in cold.tables]
    assert not warm.damaged
    for p in packs[::5]:
        for e in p.blobs:
            loc = warm.lookup(e.id)
            assert loc is not None
            assert loc.pack.id == p.id
            assert loc.entry == e


def test_refresh_adds_new_files_as_a_small_table_and_leaves_the_base_alone(
    repo: Repository, tmp_path: Path
) -> None:
    """New index files go into a table of their own; the base is merged once they outgrow it."""
    cache = tmp_path / "cache"
    _write(repo, 20_000, 4, seed=4)
    index = load_index(_source(repo, cache))
    base = index.tables[0]
    base_stat = base.path.stat()
    _write(repo, 500, 1, seed=5)
    index = refresh(_source(repo, cache), index)
    assert 2 == len(index.tables)
    assert index.tables[0].path == base.path
    assert index.tables[0].header_mac == base.header_mac
    assert 0 == index.memory_blobs
    assert all(index.has(e.id) for p in synthetic_packs(500, seed=5) for e in p.blobs)
    warm = load_index(_source(repo, cache), strict=True)  # another process: reads no file
    assert [t.path for t in warm.tables] == [t.path for t in index.tables]
    _write(repo, 2_000, 2, seed=6)
    index = refresh(_source(repo, cache), index)
    assert 2 == len(index.tables), "the two new tables were merged; 2,500 < 20,000 / 4"
    assert index.tables[0].path.stat().st_ino == base_stat.st_ino, "the base was not rewritten"
    assert 22_500 == len(index)
    for s in (4, 5, 6):
        for p in synthetic_packs(496, seed=s):  # whole packs: a prefix of each set
            for e in p.blobs:
                loc = index.lookup(e.id)
                assert loc is not None
                assert loc.pack.id == p.id
                assert loc.entry == e
    _write(repo, 6_000, 2, seed=11)
    index = refresh(_source(repo, cache), index)
    assert 1 == len(index.tables), "8,500 new blobs passed a quarter of the base"
    assert 28_500 == len(index)
    index.tables[0].verify_all()
    assert all(index.has(e.id) for p in synthetic_packs(6_000, seed=11) for e in p.blobs)


def test_when_files_go_the_table_is_rebuilt(repo: Repository, tmp_path: Path) -> None:
    """After prune or repair replaced the index files, the old table is not trusted."""
    cache = tmp_path / "cache"
    old = _write(repo, 5_000, 2, seed=7)
    first = load_index(_source(repo, cache))
    assert first.tables
    repo.storage.delete(old[0])
    again = refresh(_source(repo, cache), first)
    assert again is not first
    assert again.tables
    gone = synthetic_packs(5_000, seed=7)[0].blobs[0].id
    assert not again.has(gone)
    assert len(again) < 5_000


def test_a_damaged_table_is_rebuilt(repo: Repository, tmp_path: Path) -> None:
    """A flipped header bit: the table is dropped and rebuilt from the repository."""
    cache = tmp_path / "cache"
    _write(repo, 5_000, 2, seed=8)
    first = load_index(_source(repo, cache))
    assert first.tables
    path = first.tables[0].path
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    rebuilt = load_index(_source(repo, cache))
    assert 1 == len(rebuilt.tables)
    assert 5_000 == len(rebuilt)
    rebuilt.tables[0].verify_all()


def test_packs_no_index_file_names_never_reach_the_table(repo: Repository, tmp_path: Path) -> None:
    """A writer's packs whose index file was never written are dropped at the next refresh."""
    cache = tmp_path / "cache"
    _write(repo, 3_000, 1, seed=9)
    index = load_index(_source(repo, cache))
    orphan = synthetic_packs(16, seed=10)[0]
    index.add_pack(orphan)  # stored, but its writer died before its index file
    assert index.unfiled
    assert index.has(orphan.blobs[0].id)
    index = refresh(_source(repo, cache), index)
    assert not index.unfiled
    assert not index.has(orphan.blobs[0].id)


def _tree(root: Path, tag: str) -> Path:
    root.mkdir(parents=True)
    (root / f"{tag}.bin").write_bytes(os.urandom(300_000))
    return root


def test_one_damaged_index_file_fails_only_restores_that_need_it(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """The restore that needs none of its blobs succeeds; the one that does names the file."""
    backup_paths(repo, [_tree(tmp_path / "one", "a")])
    first_files = set((repo_path / "index").iterdir())
    backup_paths(repo, [_tree(tmp_path / "two", "b")])
    for f in first_files:
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 1
        f.write_bytes(bytes(data))
    r = reopen(repo_path)
    assert len(r.index.damaged) == len(first_files)
    one, two = sorted(r.snapshots(), key=lambda s: s.time)
    restore(r, two, tmp_path / "out2")
    assert (tmp_path / "out2" / "two" / "b.bin").read_bytes() == (
        tmp_path / "two" / "b.bin"
    ).read_bytes()
    with pytest.raises(IntegrityError) as err:
        restore(r, one, tmp_path / "out1")
    assert all(f.name in str(err.value) for f in first_files)
    with pytest.raises(IntegrityError, match=next(iter(first_files)).name):
        r.reload_index()  # strict, as prune uses it


def test_open_repositories_keeps_one_open_and_refreshes_it(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """Jobs on the same storage share one open repository; another writer's data is seen."""
    pool = OpenRepositories()
    try:
        first = pool.checkout(FileStorage(repo_path), PASSWORD)
        assert pool.checkout(FileStorage(repo_path), PASSWORD) is first
        backup_paths(reopen(repo_path), [_tree(tmp_path / "x", "x")])
        again = pool.checkout(FileStorage(repo_path), PASSWORD)
        assert again is first
        snap = again.find_snapshot("latest")
        assert again.index.has(bytes.fromhex(snap.tree))
    finally:
        pool.close()


def test_open_repositories_notices_a_new_repository_at_the_same_place(
    repo: Repository, repo_path: Path
) -> None:
    """A repository replaced by another at the same location is opened afresh."""
    pool = OpenRepositories()
    try:
        first = pool.checkout(FileStorage(repo_path), PASSWORD)
        shutil.rmtree(repo_path)
        Repository.init(FileStorage(repo_path), PASSWORD, kdf=FAST_KDF)
        second = pool.checkout(FileStorage(repo_path), PASSWORD)
        assert second is not first
        assert second.config["id"] != first.config["id"]
    finally:
        pool.close()
