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

from safehold.repo import Repository
from safehold.repo.index import write_index_file
from safehold.repo.index_load import TABLE_NAME
from safehold.repo.index_table import BLOB, PACK, TableWriter, cache_key
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
    repo_id = repo.config["id"]
    cache = root / "cache" / repo_id
    cache.mkdir(parents=True)
    key = cache_key(repo.keys.index_key, repo_id)
    writer = TableWriter(cache / TABLE_NAME, key, repo_id, blobs)
    step = (1 << 256) // blobs
    chunk = 1_000_000
    every = max(1, blobs // LOOKUPS)
    for start in range(0, blobs, chunk):
        ids = [
            ((i * step) + rng.getrandbits(250) % step).to_bytes(32, "big")
            for i in range(start, min(blobs, start + chunk))
        ]
        sample.extend(ids[::every])
        writer.add_blobs(
            b"".join(
                BLOB.pack(b, (start + j) // PER_PACK, 0, 41, 1_048_604, 1_048_576, 0)
                for j, b in enumerate(ids)
            )
        )
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


def child(root: Path) -> None:
    """One measurement, in its own process: open, look up, report."""
    t0, c0 = time.monotonic(), time.process_time()
    repo = Repository.open(FileStorage(root / "repo"), PASSWORD)
    opened, opened_cpu = time.monotonic() - t0, time.process_time() - c0
    data = (root / "lookups.bin").read_bytes()
    ids = [data[i : i + 32] for i in range(0, len(data), 32)]
    t1, c1 = time.monotonic(), time.process_time()
    hits = sum(1 for i in ids if repo.index.lookup(i) is not None)
    looked, looked_cpu = time.monotonic() - t1, time.process_time() - c1
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
                "lookup_us": looked / len(ids) * 1e6,
                "lookup_cpu_us": looked_cpu / len(ids) * 1e6,
                "hits": hits,
                "peak_rss_mb": mem["VmHWM"],
                "rss_mb": mem["VmRSS"],
                "table": repo.index.table is not None,
            }
        )
    )


def measure(root: Path, mode: str) -> dict[str, float]:
    env = dict(os.environ)
    cache = root / "cache"
    if mode == "memory":
        env["SAFEHOLD_CACHE_DIR"] = "off"
    else:
        env["SAFEHOLD_CACHE_DIR"] = str(cache)
        if mode == "table cold":
            shutil.rmtree(cache, ignore_errors=True)
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(root)],
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
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        child(Path(args.child))
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
            modes = ["table warm"] if n > 10_000_000 else ["memory", "table cold", "table warm"]
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


if __name__ == "__main__":
    main()
