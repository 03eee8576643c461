"""
The state store benchmark: transactions per second with backups running, and the size
of an incremental backup after 1% of a 1-million-key store changed, against a full one.

Two parts, each on a fresh store and a fresh repository on local disk:

1. **Throughput.** Writer tasks commit small transactions (one key set in a
   100,000-key dictionary) for a fixed time, first alone, then while another task
   takes backups back to back (every fifth full, the others incremental). Run for
   both durability settings.
2. **Sizes.** A store of 1,000,000 keys (about 70-byte JSON values) gets a full
   backup; then 1% of the keys (10,000, chosen at random) get new values in 100
   transactions, and an incremental backup follows. Both backups' sizes are
   reported as produced (logical) and as the engine stored them (new bytes, after
   dedup, compression and encryption).

It measures; it asserts nothing. Usage:

    python bench/state_bench.py [--seconds 10] [--keys 1000000] [--json bench/out/state.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from safehold.repo import Repository
from safehold.state import BackupOption, Durability, RepositoryTarget, RestoreContext, StateStore
from safehold.storage.file import FileStorage

PASSWORD = "bench-password"


def _value(i: int, rev: int = 0) -> dict[str, Any]:
    return {"sku": f"SKU-{i % 9973:05d}", "qty": i % 17, "rev": rev, "note": "n" * 24}


async def _load(store: StateStore, keys: int, batch: int = 10_000) -> None:
    d = store.dictionary("orders")
    for start in range(0, keys, batch):
        async with store.transaction() as tx:
            for i in range(start, min(keys, start + batch)):
                await d.set(tx, f"order-{i:07d}", _value(i))


async def _throughput(
    work: Path, durability: Durability, seconds: float, with_backups: bool
) -> dict[str, Any]:
    repo = Repository.init(FileStorage(work / "repo"), PASSWORD)
    target = RepositoryTarget(repo)
    async with StateStore.open(
        work / "store", partition="bench", target=target, durability=durability
    ) as store:
        await _load(store, 100_000)
        await store.backup(BackupOption.FULL)
        d = store.dictionary("orders")
        stop = asyncio.Event()
        commits = 0
        backups = {"full": 0, "incremental": 0}
        rng = random.Random(1)

        async def writer() -> None:
            nonlocal commits
            while not stop.is_set():
                i = rng.randrange(100_000)
                async with store.transaction() as tx:
                    await d.set(tx, f"order-{i:07d}", _value(i, rev=commits))
                commits += 1

        async def backer() -> None:
            n = 0
            while not stop.is_set():
                option = BackupOption.FULL if n % 5 == 4 else BackupOption.INCREMENTAL
                await store.backup(option)
                backups[option.value] += 1
                n += 1

        tasks = [asyncio.create_task(writer()) for _ in range(4)]
        if with_backups:
            tasks.append(asyncio.create_task(backer()))
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    shutil.rmtree(work / "repo")
    shutil.rmtree(work / "store")
    return {
        "durability": durability,
        "backups_running": with_backups,
        "tx_per_s": round(commits / elapsed, 1),
        "commits": commits,
        "seconds": round(elapsed, 2),
        "backups": backups,
    }


async def _sizes(work: Path, keys: int) -> dict[str, Any]:
    repo = Repository.init(FileStorage(work / "repo"), PASSWORD)
    target = RepositoryTarget(repo)
    out: dict[str, Any] = {"keys": keys}

    async def hook(ctx: RestoreContext) -> bool:
        await ctx.restore_latest()
        return True

    async with StateStore.open(
        work / "store", partition="bench", target=target, durability="normal", on_data_loss=hook
    ) as store:
        t = time.perf_counter()
        await _load(store, keys)
        out["load_seconds"] = round(time.perf_counter() - t, 1)
        out["database_bytes"] = (work / "store" / "state-1.db").stat().st_size
        t = time.perf_counter()
        full = await store.backup(BackupOption.FULL)
        out["full_seconds"] = round(time.perf_counter() - t, 2)
        rng = random.Random(2)
        changed = rng.sample(range(keys), keys // 100)
        d = store.dictionary("orders")
        for start in range(0, len(changed), 100):
            async with store.transaction() as tx:
                for i in changed[start : start + 100]:
                    await d.set(tx, f"order-{i:07d}", _value(i, rev=1))
        t = time.perf_counter()
        inc = await store.backup(BackupOption.INCREMENTAL)
        out["incremental_seconds"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        report = await store.induce_data_loss()
        out["drill_seconds"] = round(time.perf_counter() - t, 2)
        assert report.restore is not None  # the hook restored the chain
        out["restored_lsn"] = report.restore.lsn
    for name, info in (("full", full), ("incremental", inc)):
        out[name] = {
            "logical_bytes": info.size,
            "new_bytes": info.snapshot.sizes.new,
            "stored_bytes": info.snapshot.sizes.stored,
            "lsn": info.lsn,
        }
    out["incremental_over_full_logical"] = round(inc.size / full.size, 5)
    out["incremental_over_full_stored"] = round(
        inc.snapshot.sizes.stored / full.snapshot.sizes.stored, 5
    )
    shutil.rmtree(work / "repo")
    shutil.rmtree(work / "store")
    return out


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


async def main() -> None:
    """Run both parts and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--dir", type=Path, help="where to work (default: a temp dir on local disk)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="state-bench-", dir=args.dir))
    try:
        results: dict[str, Any] = {"throughput": []}
        modes: tuple[Durability, ...] = ("full", "normal")
        for durability in modes:
            for with_backups in (False, True):
                r = await _throughput(work, durability, args.seconds, with_backups)
                results["throughput"].append(r)
                print(
                    f"durability={durability:6} backups={'on ' if with_backups else 'off'} "
                    f"{r['tx_per_s']:>9.1f} tx/s  ({r['commits']} commits in {r['seconds']} s; "
                    f"backups {r['backups']})",
                    flush=True,
                )
        s = await _sizes(work, args.keys)
        results["sizes"] = s
        f, i = s["full"], s["incremental"]
        db, secs = _mb(s["database_bytes"]), s["load_seconds"]
        print(f"\n{s['keys']} keys: database {db}, loaded in {secs} s")
        for label, b, secs in (
            ("full backup", f, s["full_seconds"]),
            ("incremental (1%)", i, s["incremental_seconds"]),
        ):
            print(
                f"{label:17} {_mb(b['logical_bytes'])} logical, {_mb(b['new_bytes'])} new, "
                f"{_mb(b['stored_bytes'])} stored (compressed, encrypted), {secs} s"
            )
        print(
            f"incremental / full: {s['incremental_over_full_logical']:.2%} logical, "
            f"{s['incremental_over_full_stored']:.2%} stored"
        )
        print(
            f"drill (induce a loss, hook restores the chain): {s['drill_seconds']} s, "
            f"back to LSN {s['restored_lsn']}"
        )
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
