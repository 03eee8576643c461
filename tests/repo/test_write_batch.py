"""
The batched write path: ``BlobWriter.save_many`` and ``maybe_compress_many`` store
exactly what ``save`` and ``maybe_compress`` would, and the small-file prefetch of
a backup reads every file as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from safehold.repo import Repository, backup_paths, restore
from safehold.repo.backup_read import GROUP, Prefetcher
from safehold.repo.compress import NONE, ZSTD, decompress, maybe_compress, maybe_compress_many
from safehold.repo.pack import DATA
from safehold.repo.writer import BlobWriter
from tests.conftest import reopen, tree_state


def _chunks() -> list[bytes]:
    """Pages as a database has them: text, zeros, random, tiny, and repeats."""
    text = b"".join(b"row %06d: status=ok amount=%d\n" % (i, i * 7) for i in range(600))
    out = [text[i : i + 8192] for i in range(0, 16384, 8192)]
    out += [bytes(8192), os.urandom(8192), b"x" * 50, b"", os.urandom(200_000), text * 10]
    out += [out[0], bytes(8192), out[3]]  # repeats within the batch
    return out


def test_maybe_compress_many_matches_one_by_one() -> None:
    chunks = _chunks()
    many = maybe_compress_many(chunks)
    assert len(many) == len(chunks)
    for data, (stored, comp) in zip(chunks, many, strict=True):
        one_stored, one_comp = maybe_compress(data)
        assert comp == one_comp
        assert bytes(stored) == bytes(one_stored)  # the same zstd frame: no format change
        back = decompress(stored, len(data)) if comp == ZSTD else bytes(stored)
        assert back == data
    kinds = {comp for _, comp in many}
    assert kinds == {NONE, ZSTD}


def test_save_many_stores_what_save_would(repo: Repository, repo_path: Path) -> None:
    chunks = _chunks()
    with BlobWriter(repo) as w:
        first = w.save(DATA, chunks[0])  # already pending when the batch comes
        got = w.save_many(DATA, chunks)
        # Enough to fill several of the test repository's 256 KiB packs in one batch.
        big = [os.urandom(40_000) for _ in range(20)]
        got_big = w.save_many(DATA, big)
        w.flush()
    assert [i for i, _ in got] == [repo.blob_id(c) for c in chunks]
    assert got[0] == (first[0], False)
    # New once per distinct content; repeats inside the batch are not stored twice.
    new_ids = [i for i, new in got if new]
    assert len(new_ids) == len(set(new_ids)) == len({bytes(c) for c in chunks}) - 1
    assert all(new for _, new in got_big)
    packs = {repo.index.lookup(i).pack.id for i, _ in got_big}  # type: ignore[union-attr]
    assert len(packs) >= 3
    again = reopen(repo_path)
    for data, (blob_id, _) in zip(chunks + big, got + got_big, strict=True):
        assert again.read_blob(blob_id) == data
    with BlobWriter(again) as w:
        assert all(not new for _, new in w.save_many(DATA, chunks))
        w.flush()
    assert w.new_bytes == 0


def test_backup_with_many_small_files_prefetched(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files: dict[str, bytes] = {}
    for d in range(3):
        for f in range(GROUP + 5):  # more than a group, with subdirectories between
            files[f"d{d}/f{f:03}"] = os.urandom(f % 7 * 300) + b"a" * (f * 37)
            if f == GROUP // 2:
                files[f"d{d}/sub{f}/inner"] = b"inner %d" % d
    files["big"] = os.urandom(600_000)
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    res = backup_paths(repo, [src])
    assert res.files_new == len(files)
    target = tmp_path / "out"
    restore(repo, res.snapshot, target)
    restored = tree_state(target / "src")
    expected = tree_state(src)
    assert restored == expected


def test_prefetcher_skips_what_it_cannot_open(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a" * 5000)
    os.mkfifo(tmp_path / "fifo")  # opened without blocking
    (tmp_path / "link").symlink_to(tmp_path / "a")  # not followed
    p = Prefetcher()
    for name in ("a", "missing", "fifo", "link"):
        p.add(str(tmp_path / name))
    p.close()
    assert p.hinted == 1  # the file only: not the link, and fadvise refuses a FIFO
