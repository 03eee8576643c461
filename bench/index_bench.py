"""
Index memory and open time against the number of blobs (`make bench-index`).

For each size (1 M, 10 M, 100 M blobs by default) a repository is prepared, then
each measurement runs in a fresh process, which opens the repository (password
and all) and looks up 100,000 ids (half stored, half not), and reports its peak
RSS (VmHWM) and times:

- ``memory``: the index held in memory, as before the local table (the anchor:
  the same program with ``SAFEHOLD_CACHE_DIR=off``);
- ``table cold``: no local cache yet, so the open reads every index file and
  builds the table;
- ``table warm``: the table is there: the open lists ``index/`` and checks it.

Up to 10 M the repository holds real index files (50,000 blobs each). At 100 M,
writing and reading 15 GB of index files would take hours here, so the table is
written directly (the same ``TableWriter``, ids evenly spread over the id space,
which is what keyed-MAC ids look like) and ``index/`` holds placeholder files
with the names the table lists; only ``table warm`` is measured there, and the
cold build and the in-memory anchor are extrapolated from 1 M and 10 M (linear in
the blob count). Rounds are interleaved; the medians are reported. This measures,
it never asserts.

``--add-files K`` then measures what one new index file costs a repository of
1 M and 10 M blobs whose cache is warm: K times, an index file of
``--add-blobs`` blobs is added (another writer's backup) and a fresh process
opens the repository, once with this code (the stack of tables: the new file
becomes a small table, merged by size) and once with the anchor, the same
program from ``--anchor`` (``git archive HEAD src``, or any older tree), in
alternating order. The anchor of the issue-9 code kept new files in memory,
re-read them at every open, and rewrote the whole table once they passed
100,000 blobs. The median, the largest and the sum of the K opens are reported,
with the tables on disk. The added files are removed afterwards. At 100 M only
this code runs (the anchor has no table there).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Only what every version has: the child runs the anchor's code too.
from safehold.repo import Repository
from safehold.repo.index import write_index_file
from safehold.repo.pack import BlobEntry, PackInfo
from safehold.storage.file import FileStorage

PASSWORD = "index bench"
PER_FILE = 50_000
PER_PACK = 16
LOOKUPS = 100_000


def _packs(blobs: int, rng: random.Random) -> list[PackInfo]:
    out = []
    for p in range(0, blobs, PER_PACK):
        n = min(PER_PACK, blobs - p)
        entries = tuple(
            BlobEntry(rng.randbytes(32), 0, 41 + i * 1_048_604, 1_048_604, 1_048_576, 0)
            for i in range(n)
        )
        out.append(PackInfo(rng.randbytes(32).hex(), 1, rng.randbytes(32), 16 << 20, entries))
    return out


def prepare(root: Path, blobs: int) -> None:
    """A repository with *blobs* blobs, and a file of ids to look up."""
    if (root / "ready").exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    repo = Repository.init(FileStorage(root / "repo"), PASSWORD)
    rng = random.Random(blobs)
    sample: list[bytes] = []
    t0 = time.monotonic()
    if blobs <= 10_000_000:
        for start in range(0, blobs, PER_FILE):
            packs = _packs(min(PER_FILE, blobs - start), rng)
            write_index_file(repo.storage, repo.keys.index_key, packs)
            sample.extend(p.blobs[0].id for p in packs[:: max(1, blobs // PER_PACK // LOOKUPS)])
    else:
        _write_table_directly(root, repo, blobs, rng, sample)
    rng.shuffle(sample)
    sample = sample[: LOOKUPS // 2]
    sample += [rng.randbytes(32) for _ in range(LOOKUPS - len(sample))]
    (root / "lookups.bin").write_bytes(b"".join(sample))
    (root / "ready").write_text(f"{time.monotonic() - t0:.1f} s to prepare\n")


def _write_table_directly(
    root: Path, repo: Repository, blobs: int, rng: random.Random, sample: list[bytes]
) -> None:
    from safehold.repo.index_load import MANIFEST_NAME
    from safehold.repo.index_table import (
        BLOB,
        PACK,
        IndexTable,
        TableWriter,
        cache_key,
        table_file,
        write_manifest,
    )

    repo_id = repo.config["id"]
    cache = root / "cache" / repo_id
    cache.mkdir(parents=True)
    key = cache_key(repo.keys.index_key, repo_id)
    name = rng.randbytes(16)
    writer = TableWriter(cache / table_file(name), key, repo_id, blobs)
    # Ids spread evenly over the id space, as keyed-MAC ids are: a 4-byte
    # prefix that grows with i, then random bytes.
    step = (1 << 32) // blobs
    chunk = 1_000_000
    every = max(1, blobs // LOOKUPS)
    for start in range(0, blobs, chunk):
        n = min(chunk, blobs - start)
        rnd = rng.randbytes(28 * n)
        tails = [
            BLOB.pack(b"", (start + j) // PER_PACK, 0, 41, 1_048_604, 1_048_576, 0)[32:]
            for j in range(0, n, PER_PACK)
        ]
        ids = [
            ((start + j) * step).to_bytes(4, "big") + rnd[28 * j : 28 * j + 28] for j in range(n)
        ]
        sample.extend(ids[::every])
        writer.add_blobs(b"".join(i + tails[j // PER_PACK] for j, i in enumerate(ids)))
    packs = (blobs + PER_PACK - 1) // PER_PACK
    for start in range(0, packs, chunk):
        writer.add_packs(
            b"".join(
                PACK.pack(rng.randbytes(32), 1, rng.randbytes(32), 16 << 20)
                for _ in range(start, min(packs, start + chunk))
            )
        )
    files = []
    index_dir = root / "repo" / "index"
    index_dir.mkdir(exist_ok=True)
    for _ in range(blobs // PER_FILE):
        h = rng.randbytes(32)
        files.append(h)
        (index_dir / h.hex()).write_bytes(b"placeholder: the table holds this file")
    writer.finish(files)
    mac = IndexTable(cache / table_file(name), key, repo_id).header_mac
    write_manifest(cache / MANIFEST_NAME, key, repo_id, [(name, mac)])


def child(root: Path, lookups: int) -> None:
    """One measurement, in its own process: open, look up, report."""
    t0, c0 = time.monotonic(), time.process_time()
    repo = Repository.open(FileStorage(root / "repo"), PASSWORD)
    opened, opened_cpu = time.monotonic() - t0, time.process_time() - c0
    data = (root / "lookups.bin").read_bytes()[: lookups * 32]
    ids = [data[i : i + 32] for i in range(0, len(data), 32)]
    t1, c1 = time.monotonic(), time.process_time()
    hits = sum(1 for i in ids if repo.index.lookup(i) is not None)
    looked, looked_cpu = time.monotonic() - t1, time.process_time() - c1
    tables = getattr(repo.index, "tables", None)
    if tables is None:  # the anchor: one table or none
        old = getattr(repo.index, "table", None)
        tables = [old] if old is not None else []
    status = Path("/proc/self/status").read_text()
    mem = {
        k: int(v.split()[0]) // 1024
        for k, v in (ln.split(":", 1) for ln in status.splitlines())
        if k in ("VmHWM", "VmRSS")
    }
    print(
        json.dumps(
            {
                "open_s": opened,
                "open_cpu_s": opened_cpu,
                "lookup_us": looked / max(1, len(ids)) * 1e6,
                "lookup_cpu_us": looked_cpu / max(1, len(ids)) * 1e6,
                "hits": hits,
                "peak_rss_mb": mem["VmHWM"],
                "rss_mb": mem["VmRSS"],
                "tables": len(tables),
                "table_mb": sum(t.path.stat().st_size for t in tables) / 1e6,
                "memory_blobs": repo.index.memory_blobs,
            }
        )
    )


def measure(
    root: Path, mode: str, anchor: str | None = None, cache: Path | None = None
) -> dict[str, float]:
    env = dict(os.environ)
    cache = cache or root / "cache"
    if anchor:
        env["PYTHONPATH"] = anchor
    if mode == "memory":
        env["SAFEHOLD_CACHE_DIR"] = "off"
    else:
        env["SAFEHOLD_CACHE_DIR"] = str(cache)
        if mode == "table cold":
            shutil.rmtree(cache, ignore_errors=True)
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(root),
            "--lookups",
            str(0 if mode == "add" else LOOKUPS),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1M,10M,100M")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/safehold-index-bench")
    ap.add_argument("--modes", default="memory,table cold,table warm")
    ap.add_argument("--add-files", type=int, default=0, help="index files added one by one")
    ap.add_argument("--add-blobs", type=int, default=5_000, help="blobs in each added file")
    ap.add_argument("--anchor", help="the src directory of the code to compare with")
    ap.add_argument("--merge-base", action="store_true", help="time merging into the base")
    ap.add_argument("--child")
    ap.add_argument("--lookups", type=int, default=LOOKUPS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child), args.lookups)
        return
    sizes = [int(float(s.rstrip("M")) * 1_000_000) for s in args.sizes.split(",")]
    base = Path(args.dir)
    for n in sizes:
        t = time.monotonic()
        prepare(base / str(n), n)
        print(f"prepared {n:,} blobs ({time.monotonic() - t:.0f} s)", flush=True)
    results: dict[tuple[int, str], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for n in sizes:
            # 100 M: the table was written directly; there are no real index
            # files to build it from or to hold in memory.
            modes = [m for m in args.modes.split(",") if m]
            if n > 10_000_000:
                modes = [m for m in modes if m == "table warm"]
            for mode in modes:
                m = measure(base / str(n), mode)
                results.setdefault((n, mode), []).append(m)
                print(f"round {r + 1} {n:>11,} {mode:<10} {m}", flush=True)
    print()
    print(
        "| blobs | index | open (s) | open CPU (s) | lookup (µs) | lookup CPU (µs) | peak RSS (MB) "
        "| RSS / memory anchor |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        anchor = results.get((n, "memory"))
        for mode in ("memory", "table cold", "table warm"):
            ms = results.get((n, mode))
            if not ms:
                continue
            med = {
                k: statistics.median(float(m[k]) for m in ms)
                for k in ("open_s", "open_cpu_s", "lookup_us", "lookup_cpu_us", "peak_rss_mb")
            }
            base_rss = statistics.median(float(m["peak_rss_mb"]) for m in anchor) if anchor else 0
            ratio = f"{med['peak_rss_mb'] / base_rss:.2f}" if base_rss else "n/a"
            print(
                f"| {n:,} | {mode} | {med['open_s']:.2f} | {med['open_cpu_s']:.2f} | "
                f"{med['lookup_us']:.1f} | {med['lookup_cpu_us']:.1f} | "
                f"{med['peak_rss_mb']:.0f} | {ratio} |"
            )
    if args.add_files:
        add_files(base, sizes, args.add_files, args.add_blobs, args.anchor)
    if args.merge_base:
        for n in sizes:
            merge_base(base / str(n))


def merge_base(root: Path) -> None:
    """
    The rare large step: the base merged with newer tables a quarter of its size
    (what happens once new files since the last such merge reach a quarter of the
    repository). Run in this process on the prepared cache; nothing is kept.
    """
    from safehold.repo.index_build import TableBuilder, merge_tables
    from safehold.repo.index_load import MANIFEST_NAME
    from safehold.repo.index_table import IndexTable, cache_key, read_manifest, table_file

    repo = Repository.open(FileStorage(root / "repo"), PASSWORD, load_index=False)
    rid = repo.config["id"]
    key = cache_key(repo.keys.index_key, rid)
    directory = root / "cache" / rid
    [(name, _)] = read_manifest(directory / MANIFEST_NAME, key, rid)
    big = IndexTable(directory / table_file(name), key, rid)
    work = root / "merge-bench"
    shutil.rmtree(work, ignore_errors=True)
    try:
        with TableBuilder(work, first_pack=big.packs) as b:
            rng = random.Random(7)
            for start in range(0, big.blobs // 4, PER_FILE):  # in batches: memory stays flat
                for p in _packs(min(PER_FILE, big.blobs // 4 - start), rng):
                    b.add_pack(p)
            b.write(work / "newer", key, rid)
        newer = IndexTable(work / "newer", key, rid)
        t, c = time.monotonic(), time.process_time()
        merge_tables([big, newer], work / "merged", key, rid)
        wall, cpu = time.monotonic() - t, time.process_time() - c
        status = Path("/proc/self/status").read_text()
        rss = next(
            int(ln.split()[1]) // 1024 for ln in status.splitlines() if ln.startswith("VmHWM")
        )
        print(
            f"| {big.blobs:,} + {newer.blobs:,} | {wall:.1f} | {cpu:.1f} | "
            f"{(work / 'merged').stat().st_size / 1e6:.0f} | {rss} |",
            flush=True,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _add_row(n: int, code: str, ms: list[dict[str, float]]) -> str:
    wall = [float(m["open_s"]) for m in ms]
    cpu = [float(m["open_cpu_s"]) for m in ms]
    return (
        f"| {n:,} | {code} | {statistics.median(wall):.2f} / {statistics.median(cpu):.2f} | "
        f"{max(wall):.2f} / {max(cpu):.2f} | {sum(wall):.1f} / {sum(cpu):.1f} | "
        f"{max(float(m['peak_rss_mb']) for m in ms):.0f} | "
        f"{int(ms[-1]['tables'])} | {ms[-1]['table_mb']:.0f} |"
    )


def add_files(base: Path, sizes: list[int], files: int, blobs: int, anchor: str | None) -> None:
    """What one new index file costs the next open, this code against the anchor."""
    rows = []
    for n in sizes:
        root = base / str(n)
        repo = Repository.open(FileStorage(root / "repo"), PASSWORD, load_index=False)
        variants: dict[str, tuple[str | None, Path]] = {"this code": (None, root / "cache-add")}
        if anchor and n <= 10_000_000:
            variants["anchor"] = (anchor, root / "cache-add-anchor")
        saved = b""
        if n > 10_000_000:  # the table was written directly: add to it, then put it back
            variants = {"this code": (None, root / "cache")}
            saved = next((root / "cache").glob("*/index-v2.shx")).read_bytes()
        t = time.monotonic()
        for code, cache in variants.values():  # warm the caches first (not measured)
            measure(root, "add", code, cache)
        print(f"{n:,}: caches warm ({time.monotonic() - t:.0f} s)", flush=True)
        rng = random.Random(n + 1)
        added: list[str] = []
        opens: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        try:
            for j in range(files):
                added.append(
                    write_index_file(repo.storage, repo.keys.index_key, _packs(blobs, rng))
                )
                order = list(variants) if j % 2 == 0 else list(reversed(variants))
                for v in order:
                    m = measure(root, "add", *variants[v])
                    opens[v].append(m)
                    print(f"{n:>11,} file {j + 1:>3} {v:<9} {m}", flush=True)
        finally:
            for name in added:
                repo.storage.delete(name)
            for _, cache in variants.values():
                if saved:  # the base is untouched; the tables added go at the next update
                    next(cache.glob("*/index-v2.shx")).write_bytes(saved)
                else:
                    shutil.rmtree(cache, ignore_errors=True)
        rows += [_add_row(n, v, ms) for v, ms in opens.items()]
    print()
    print(
        f"One new index file of {blobs:,} blobs, {files} times; each time a fresh process "
        "opens the repository (warm cache):"
    )
    print()
    print(
        "| blobs | code | open, median (s, wall / CPU) | open, largest | all opens "
        "| peak RSS, largest (MB) | tables at the end | cache on disk (MB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
