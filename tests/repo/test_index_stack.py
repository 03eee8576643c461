"""The local index as a stack of tables: new files without a rewrite, merges, damage, crashes."""

from __future__ import annotations

import bisect
import random
import shutil
import struct
import threading
from pathlib import Path

import pytest

from safehold.repo import Repository
from safehold.repo.index import Index
from safehold.repo.index_build import TableBuilder, merge_tables
from safehold.repo.index_load import MANIFEST_NAME, MERGE_FACTOR, load_index, refresh
from safehold.repo.index_table import (
    BLOB,
    IndexTable,
    TableWriter,
    cache_key,
    read_manifest,
    write_manifest,
)
from safehold.repo.pack import BlobEntry, PackInfo
from tests.repo.test_index_load import _source, _write
from tests.repo.test_index_table import KEY, REPO_ID, synthetic_packs


def _table(tmp_path: Path, name: str, packs: list[PackInfo], first_pack: int) -> IndexTable:
    path = tmp_path / name
    with TableBuilder(tmp_path, first_pack=first_pack) as b:
        for p in packs:
            b.add_pack(p)
        b.add_file("index/" + name.encode().hex().ljust(64, "0"))
        b.write(path, KEY, REPO_ID)
    return IndexTable(path, KEY, REPO_ID)


def _blobs(packs: list[PackInfo]) -> dict[bytes, tuple[str, BlobEntry]]:
    return {e.id: (p.id, e) for p in packs for e in p.blobs}


def test_merged_tables_keep_pack_numbers_and_hold_each_blob_once(tmp_path: Path) -> None:
    """A merge of neighbours equals the stack it replaces, lookup for lookup."""
    a_packs = synthetic_packs(3_000, seed=21)
    b_packs = synthetic_packs(400, seed=22)
    shared = a_packs[3].blobs[0]  # the same blob stored again in a later pack
    b_packs.append(PackInfo("ee" * 32, 1, b"e" * 32, 1 << 20, (shared,)))
    a = _table(tmp_path, "a", a_packs, 0)
    b = _table(tmp_path, "b", b_packs, a.packs)
    c = _table(tmp_path, "c", synthetic_packs(100, seed=23), a.packs + b.packs)
    merge_tables([a, b, c], tmp_path / "m", KEY, REPO_ID)
    m = IndexTable(tmp_path / "m", KEY, REPO_ID)
    m.verify_all()
    assert m.first_pack == 0
    assert m.packs == a.packs + b.packs + c.packs
    assert m.blobs == a.blobs + b.blobs + c.blobs - 1
    assert m.files == 3
    ids = [rec[0] for chunk in m.blob_chunks(777) for rec in BLOB.iter_unpack(chunk)]
    assert ids == sorted(set(ids))
    stack, merged = Index([a, b, c]), Index([m])
    want = _blobs([*a_packs, *b_packs[:-1], *synthetic_packs(100, seed=23)])
    for blob_id, (pack_id, entry) in want.items():
        for index in (stack, merged):
            loc = index.lookup(blob_id)
            assert loc is not None
            assert loc.pack.id == pack_id
            assert loc.entry == entry
    for index in (stack, merged):
        by_pack = index.blobs_by_pack()
        listed = [e.id for es in by_pack.values() for e in es]
        assert sorted(listed) == sorted(set(listed)) == sorted(want)
        assert sorted(index.ids()) == sorted(want)
    with pytest.raises(ValueError, match="neighbouring"):
        merge_tables([a, c], tmp_path / "x", KEY, REPO_ID)


def test_many_small_additions_keep_few_tables_and_never_rewrite_the_base_early(
    repo: Repository, tmp_path: Path
) -> None:
    """Each new file is a small table; merges keep each table MERGE_FACTOR times the rest."""
    cache = tmp_path / "cache"
    _write(repo, 8_000, 2, seed=30)
    index = load_index(_source(repo, cache))
    base_ino = index.tables[0].path.stat().st_ino
    for seed in range(31, 51):
        _write(repo, 64, 1, seed=seed)
        index = refresh(_source(repo, cache), index)
        w = [t.blobs + t.packs + t.files for t in index.tables]
        assert all(w[i] >= MERGE_FACTOR * sum(w[i + 1 :]) for i in range(len(w) - 1)), w
        assert len(index.tables) <= 6
    assert index.tables[0].path.stat().st_ino == base_ino
    assert 8_000 + 20 * 64 == len(index)
    for seed in (30, 31, 40, 50):
        assert all(index.has(e.id) for p in synthetic_packs(64, seed=seed) for e in p.blobs)
    # A new process sees the same stack and reads no index file.
    again = load_index(_source(repo, cache), strict=True)
    assert [t.header_mac for t in again.tables] == [t.header_mac for t in index.tables]


def test_a_file_gone_from_a_newer_table_drops_its_entries(repo: Repository, tmp_path: Path) -> None:
    """Files gone from newer tables: only those tables are rebuilt; the base stays."""
    cache = tmp_path / "cache"
    _write(repo, 5_000, 2, seed=60)
    index = load_index(_source(repo, cache))
    base = index.tables[0]
    base_ino = base.path.stat().st_ino
    [late] = _write(repo, 200, 1, seed=61)
    [later] = _write(repo, 160, 1, seed=62)
    index = refresh(_source(repo, cache), index)
    assert len(index.tables) == 2
    repo.storage.delete(late)
    index = refresh(_source(repo, cache), index)
    assert len(index.tables) == 2
    assert index.tables[0].path.stat().st_ino == base_ino
    assert len(index) == 5_160
    assert not any(index.has(e.id) for p in synthetic_packs(200, seed=61) for e in p.blobs)
    assert all(index.has(e.id) for p in synthetic_packs(160, seed=62) for e in p.blobs)
    repo.storage.delete(later)
    index = refresh(_source(repo, cache), index)
    assert len(index.tables) == 1
    assert index.tables[0].path.stat().st_ino == base_ino
    assert len(index) == 5_000
    again = load_index(_source(repo, cache), strict=True)
    assert [t.header_mac for t in again.tables] == [base.header_mac]
    names = {p.name for p in (cache / repo.config["id"]).iterdir()}
    assert names == {MANIFEST_NAME, base.path.name, "index.lock"}


def test_a_file_gone_from_the_base_rebuilds_everything(repo: Repository, tmp_path: Path) -> None:
    """Prune and repair replace every index file: the base goes, and the cache is rebuilt."""
    cache = tmp_path / "cache"
    old = _write(repo, 5_000, 2, seed=63)
    index = load_index(_source(repo, cache))
    _write(repo, 100, 1, seed=64)
    index = refresh(_source(repo, cache), index)
    base = index.tables[0]
    repo.storage.delete(old[1])
    index = refresh(_source(repo, cache), index)
    assert len(index.tables) == 1
    assert index.tables[0].path != base.path
    assert not any(index.has(e.id) for p in synthetic_packs(5_000, seed=63)[-20:] for e in p.blobs)
    assert all(index.has(e.id) for p in synthetic_packs(100, seed=64) for e in p.blobs)


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["manifest", "newer table", "swapped table", "foreign"])
def test_a_damaged_or_foreign_cache_is_rebuilt(
    repo: Repository, tmp_path: Path, damage: str
) -> None:
    """A manifest or table that does not verify is deleted and rebuilt, never trusted."""
    cache = tmp_path / "cache"
    _write(repo, 5_000, 2, seed=70)
    index = load_index(_source(repo, cache))
    _write(repo, 300, 1, seed=71)
    index = refresh(_source(repo, cache), index)
    directory = cache / repo.config["id"]
    base, newer = index.tables
    if damage == "manifest":
        _flip(directory / MANIFEST_NAME, 40)
    elif damage == "newer table":
        _flip(newer.path, 100)
    elif damage == "swapped table":
        # An older, valid table of this repository put where the manifest names another.
        shutil.copyfile(base.path, newer.path)
    else:
        other = cache_key(b"x" * 32, repo.config["id"])
        src = _source(repo, cache)
        entries = read_manifest(directory / MANIFEST_NAME, src.key, repo.config["id"])
        write_manifest(directory / MANIFEST_NAME, other, repo.config["id"], entries)
    rebuilt = load_index(_source(repo, cache))
    assert 1 == len(rebuilt.tables)
    assert 5_300 == len(rebuilt)
    rebuilt.tables[0].verify_all()
    names = {p.name for p in directory.iterdir()}
    assert names == {MANIFEST_NAME, rebuilt.tables[0].path.name, "index.lock"}


def test_leftovers_of_a_crash_and_an_old_cache_are_ignored_and_removed(
    repo: Repository, tmp_path: Path
) -> None:
    """A table no manifest names, temporary files and a version 1 cache are never read."""
    cache = tmp_path / "cache"
    _write(repo, 5_000, 2, seed=80)
    directory = cache / repo.config["id"]
    directory.mkdir(parents=True)
    (directory / "index-v1.shx").write_bytes(b"an old cache")
    (directory / ("index-v2-" + "00" * 16 + ".shx")).write_bytes(b"crashed before the manifest")
    (directory / "index-v2.shx.tmp-0123").write_bytes(b"half a manifest")
    (directory / "build-x").mkdir()
    index = load_index(_source(repo, cache))
    assert 5_000 == len(index)
    names = {p.name for p in directory.iterdir()}
    assert names == {MANIFEST_NAME, index.tables[0].path.name, "index.lock"}


def test_concurrent_openers_agree_on_one_stack(repo: Repository, tmp_path: Path) -> None:
    """Updates take the cache's lock: threads opening at once leave one valid stack."""
    cache = tmp_path / "cache"
    _write(repo, 4_000, 2, seed=90)
    load_index(_source(repo, cache))
    _write(repo, 100, 1, seed=91)
    results: list[Index] = []
    threads = [
        threading.Thread(target=lambda: results.append(load_index(_source(repo, cache))))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    final = load_index(_source(repo, cache), strict=True)
    assert 2 == len(final.tables)
    for r in results:
        assert 4_100 == len(r)
        assert all(r.has(e.id) for p in synthetic_packs(100, seed=91) for e in p.blobs)
    for t in final.tables:
        t.verify_all()


@pytest.mark.parametrize(
    ("blobs", "expected", "chunk"), [(3_000, 3_000, 777), (20_000, 30_000_000, 5)]
)
def test_the_fanout_counts_the_ids_below_each_prefix(
    tmp_path: Path, blobs: int, expected: int, chunk: int
) -> None:
    """Every fanout entry, found by bisection per entry, equals a count over the ids."""
    rng = random.Random(blobs)
    ids = sorted(rng.randbytes(32) for _ in range(blobs))
    records = b"".join(BLOB.pack(i, 0, 0, 0, 0, 0, 0) for i in ids)
    writer = TableWriter(tmp_path / "t", KEY, REPO_ID, expected)
    step = chunk * BLOB.size
    for off in range(0, len(records), step):
        writer.add_blobs(records[off : off + step])
    writer.finish([])
    table = IndexTable(tmp_path / "t", KEY, REPO_ID)
    k = table.bits
    entries = (1 << k) + 1
    fanout = struct.unpack(f"<{entries}Q", table.fanout_bytes())
    prefixes = [int.from_bytes(i, "big") >> (256 - k) for i in ids]
    assert list(fanout) == [bisect.bisect_left(prefixes, p) for p in range(entries)]
