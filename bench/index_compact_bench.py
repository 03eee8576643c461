"""
Per-backup index refresh cost with many small index files, before and after
index compaction (``docs/format.md`` § Index compaction).

A fleet repository gets one small index file per backup (here: one pack of 3
blobs, ~350 bytes, what a tiny backup writes). For each count (5,000 and
20,000 by default) a repository is prepared on the file backend, then copied:
the anchor keeps its files, the copy is compacted (``compact_index`` until no
small file is pending, the runs timed). A kept-open reader of each (as an
agent's) has loaded its index; then, for ``--rounds`` rounds, one new small
index file is written to each ("a backup") and each reader's
``refresh_index()`` is timed, anchor and compacted in alternating order. The
medians and their ratio are reported, with:

- ``reload``: the compacted reader's first refresh after the compaction (its
  held files are gone, so it loads the index again: a one-off per reader and
  compaction);
- ``steady compaction``: a compaction of 256 new small files plus the merged
  file, what one backup in about 256 pays once the repository is compact,
  and the reader's refresh after it (``then reload``): what every reader
  pays once per compaction in steady state.

``--base-blobs`` adds full index files (50,000 blobs each) first, so that the
index is large enough to live in the local table cache rather than in memory;
``0`` keeps it all in memory. This measures, it never asserts.

    .venv/bin/python bench/index_compact_bench.py [--counts 5000 20000] [--base-blobs 0 200000]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from safehold.repo import KdfParams, Repository
from safehold.repo.index import FILE_MAX_BLOBS, write_index_file
from safehold.repo.index_compact import compact_index, index_file_count
from safehold.repo.pack import BlobEntry, PackInfo
from safehold.storage.file import FileStorage
from safehold.storage.memory import MemoryStorage

PASSWORD = "index compact bench"


def _pack(rnd: random.Random, blobs: int) -> PackInfo:
    entries = tuple(
        BlobEntry(rnd.randbytes(32), i % 2, i * 1000, 1000, 2000, 1) for i in range(blobs)
    )
    return PackInfo(rnd.randbytes(32).hex(), 1, rnd.randbytes(32), blobs * 1000, entries)


def _fill(root: Path, key: bytes, small: int, base_blobs: int, seed: int) -> None:
    """Write the index files straight to disk (no fsync each: preparation only)."""
    rnd = random.Random(seed)
    mem = MemoryStorage()
    left = base_blobs
    while left > 0:
        n = min(left, FILE_MAX_BLOBS)
        write_index_file(mem, key, [_pack(rnd, 16) for _ in range(n // 16)])
        left -= n
    for _ in range(small):
        write_index_file(mem, key, [_pack(rnd, 3)])
    (root / "index").mkdir(exist_ok=True)
    for info in mem.list("index/"):
        (root / info.name).write_bytes(mem.get(info.name))


def _open(root: Path, cache: Path) -> Repository:
    repo = Repository.open(FileStorage(root), PASSWORD, load_index=False)
    repo.cache_dir = cache  # each copy its own cache: both have the same repository id
    repo.reload_index(strict=False)
    return repo


def _timed_refresh(repo: Repository, rnd: random.Random) -> float:
    write_index_file(repo.storage, repo.keys.index_key, [_pack(rnd, 3)])  # "a backup"
    t = time.perf_counter()
    repo.refresh_index()
    return time.perf_counter() - t


def run(work: Path, count: int, base_blobs: int, rounds: int) -> None:
    anchor_dir, compact_dir = work / "anchor", work / "compact"
    repo = Repository.init(FileStorage(anchor_dir), PASSWORD, kdf=KdfParams(n=1024, r=8, p=1))
    _fill(anchor_dir, repo.keys.index_key, count, base_blobs, seed=count)
    shutil.copytree(anchor_dir, compact_dir)
    anchor = _open(anchor_dir, work / "cache-anchor")
    comp = _open(compact_dir, work / "cache-compact")
    files_before = index_file_count(comp.index)

    t = time.perf_counter()
    runs, merged = 0, 0
    while True:
        res = compact_index(comp)
        runs, merged = runs + 1, merged + len(res.merged)
        if not res.pending:
            break
    compact_s = time.perf_counter() - t
    t = time.perf_counter()
    comp.refresh_index()
    reload_s = time.perf_counter() - t
    files_after = index_file_count(comp.index)

    rnd = random.Random(1)
    times: dict[str, list[float]] = {"anchor": [], "compact": []}
    for i in range(rounds):
        order = [("anchor", anchor), ("compact", comp)]
        for name, r in order if i % 2 == 0 else reversed(order):
            times[name].append(_timed_refresh(r, rnd))
    a, c = statistics.median(times["anchor"]), statistics.median(times["compact"])

    for _ in range(256):
        write_index_file(comp.storage, comp.keys.index_key, [_pack(rnd, 3)])
    t = time.perf_counter()
    steady = compact_index(comp)
    steady_s = time.perf_counter() - t
    t = time.perf_counter()
    comp.refresh_index()
    steady_reload_s = time.perf_counter() - t

    kind = "tables" if comp.index.tables else "memory"
    print(
        f"{count:>6} small files, base {base_blobs:>7} blobs ({kind}): "
        f"refresh median anchor {a * 1e3:7.2f} ms, compacted {c * 1e3:6.2f} ms, "
        f"ratio {a / c:5.1f}x | files {files_before} -> {files_after}; "
        f"compaction {compact_s:5.2f} s in {runs} runs ({merged} merged); "
        f"reload {reload_s * 1e3:7.1f} ms; steady compaction {steady_s * 1e3:5.1f} ms "
        f"({len(steady.merged)} files), then reload {steady_reload_s * 1e3:7.1f} ms"
    )
    anchor.close()
    comp.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[5_000, 20_000])
    ap.add_argument("--base-blobs", type=int, nargs="+", default=[0, 200_000])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir)")
    args = ap.parse_args()
    os.environ.setdefault("SAFEHOLD_CACHE_DIR", "off")
    for base in args.base_blobs:
        for count in args.counts:
            with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                run(Path(tmp), count, base, args.rounds)


if __name__ == "__main__":
    main()
