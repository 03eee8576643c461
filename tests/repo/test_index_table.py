"""The local index table: sorted, keyed, checked; built in bounded memory."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from safehold.repo.index import Index
from safehold.repo.index_build import TableBuilder
from safehold.repo.index_table import BLOB, IndexTable, TableDamaged, cache_key
from safehold.repo.pack import BlobEntry, PackInfo

REPO_ID = "0123456789abcdef0123456789abcdef"
KEY = cache_key(b"k" * 32, REPO_ID)


def synthetic_packs(blobs: int, per_pack: int = 16, seed: int = 1) -> list[PackInfo]:
    """Packs of random blob ids, as a backup would index them."""
    rng = random.Random(seed)
    packs = []
    for p in range(0, blobs, per_pack):
        entries = tuple(
            BlobEntry(rng.randbytes(32), i % 2, 41 + i * 1000, 1000, 2000 + i, i % 2)
            for i in range(min(per_pack, blobs - p))
        )
        packs.append(
            PackInfo(rng.randbytes(32).hex(), 1 + p % 3, rng.randbytes(32), 16 << 20, entries)
        )
    return packs


def build(tmp_path: Path, packs: list[PackInfo], **kw: int) -> IndexTable:
    path = tmp_path / REPO_ID / "index-v2-test.shx"
    with TableBuilder(path.parent, **kw) as b:
        for p in packs:
            b.add_pack(p)
        b.add_file("index/" + "ab" * 32)
        b.write(path, KEY, REPO_ID)
    assert [f.name for f in path.parent.iterdir()] == [path.name], "spill files are removed"
    return IndexTable(path, KEY, REPO_ID)


@pytest.mark.parametrize(("blobs", "sort_max"), [(100_000, 1_000_000), (20_000, 50)])
def test_every_blob_is_found_with_its_pack(tmp_path: Path, blobs: int, sort_max: int) -> None:
    """Each blob is found where it was put; ids not stored are not found (sort_max 50: split)."""
    packs = synthetic_packs(blobs)
    table = build(tmp_path, packs, sort_max=sort_max)
    index = Index([table])
    assert blobs == len(index) == table.blobs
    for p in packs[::7]:
        for e in p.blobs:
            loc = index.lookup(e.id)
            assert loc is not None
            assert (loc.pack.id, loc.pack.gen, loc.pack.eph, loc.pack.size) == (
                p.id,
                p.gen,
                p.eph,
                p.size,
            )
            assert loc.entry == e
    rng = random.Random(7)
    assert not any(index.has(rng.randbytes(32)) for _ in range(10_000))
    assert ["index/" + "ab" * 32] == sorted(index.file_names())
    table.verify_all()


def test_records_are_sorted_unique_and_grouped_by_pack(tmp_path: Path) -> None:
    """A blob stored in two packs is held once; blobs_by_pack and packs see the table."""
    packs = synthetic_packs(5_000)
    dup = packs[3].blobs[0]
    extra = PackInfo("ee" * 32, 1, b"\x01" * 32, 999, (dup,))
    table = build(tmp_path, [*packs, extra])
    ids = [rec[0] for chunk in table.blob_chunks(1000) for rec in BLOB.iter_unpack(chunk)]
    assert ids == sorted(set(ids))
    assert len(ids) == 5_000
    index = Index([table])
    grouped = index.blobs_by_pack()
    assert len(index.packs()) == len(packs) + 1
    assert sum(len(v) for v in grouped.values()) == 5_000
    assert index.pack(packs[10].id) is not None
    assert index.pack("ff" * 32) is None
    assert set(index.ids()) == set(ids)


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 1]))


def test_damaged_header_or_wrong_key_or_repository_is_refused(tmp_path: Path) -> None:
    """A table verifies only with its key and repository id, and an intact header."""
    table = build(tmp_path, synthetic_packs(2_000))
    path = table.path
    with pytest.raises(TableDamaged):
        IndexTable(path, cache_key(b"x" * 32, REPO_ID), REPO_ID)
    with pytest.raises(TableDamaged):
        IndexTable(path, KEY, "f" * 32)
    _flip(path, 40)
    with pytest.raises(TableDamaged, match=str(path)):
        IndexTable(path, KEY, REPO_ID)


def test_a_damaged_block_fails_the_read_and_the_table_is_dropped(tmp_path: Path) -> None:
    """A flipped bit in the records is caught on first read; the file is deleted for a rebuild."""
    packs = synthetic_packs(20_000)
    table = build(tmp_path, packs)
    _flip(table.path, 4096 + 30_000)
    index = Index([IndexTable(table.path, KEY, REPO_ID)])
    ids = [e.id for p in packs for e in p.blobs]
    with pytest.raises(TableDamaged, match="does not verify"):
        list(map(index.lookup, ids))
    assert not table.path.exists()


def test_a_truncated_table_is_refused(tmp_path: Path) -> None:
    """A table cut short (a crash while copying it) is refused at open."""
    table = build(tmp_path, synthetic_packs(2_000))
    size = table.path.stat().st_size
    os.truncate(table.path, size - 100)
    with pytest.raises(TableDamaged):
        IndexTable(table.path, KEY, REPO_ID)
