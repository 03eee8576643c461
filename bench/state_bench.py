"""
The state store benchmark, against plain ``sqlite3`` in the same run.

Two parts:

1. **Throughput, interleaved with the anchor.** The workload is a bank ledger:
   100,000 accounts in one dictionary (a JSON object per account); each
   transaction reads two random accounts and writes both (a transfer). The anchor
   is plain ``sqlite3`` on the same disk: one connection, WAL, the same table
   shape, JSON encoded and decoded the same way, ``BEGIN IMMEDIATE``, two
   ``SELECT``, two ``UPDATE``, ``COMMIT``. For each round and each synchronous
   level (NORMAL, FULL) it runs, one after another on fresh files: plain
   SQLite; the store with ``--writers`` tasks; the store with one task; the
   store with ``--writers`` tasks while another takes backups back to back
   (every fifth full). Reported: medians over the rounds, the ratios
   store/SQLite (and the range of each round's ratio to its own SQLite run) and
   with-backups/idle. CPU per transaction counts the store's process and its
   backup process (``RepositoryTarget`` stores backups from a child process;
   ``median_backup_process_cpu_us_per_tx`` in the JSON is the child's share).
2. **Sizes** (``--keys``, 0 to skip): a store of that many keys gets a full
   backup; 1% of the keys then change in 100 transactions, and an incremental
   follows. Both backups' sizes are reported as produced and as stored.

``--profile`` runs the store's workload once under cProfile instead and prints
where the time goes. It measures; it asserts nothing. Usage:

    python bench/state_bench.py [--seconds 5] [--rounds 3] [--writers 4] [--keys 0]
                                [--json bench/out/state.json] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from safehold.repo import Repository
from safehold.state import BackupOption, Durability, RepositoryTarget, RestoreContext, StateStore
from safehold.storage.file import FileStorage

PASSWORD = "bench-password"
ACCOUNTS = 100_000


def _account(i: int) -> dict[str, Any]:
    return {"owner": f"customer-{i:06d}", "balance": 1000, "currency": "EUR"}


# -- the anchor: plain sqlite3 -------------------------------------------------------------


def _plain(path: Path, sync: str, seconds: float) -> dict[str, Any]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {sync}")
    conn.execute("CREATE TABLE acct (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO acct VALUES (?, ?)",
        ((f"acct-{i:06d}", json.dumps(_account(i))) for i in range(ACCOUNTS)),
    )
    conn.execute("COMMIT")
    rng = random.Random(1)
    n = 0
    cpu = time.process_time()
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        a, b = rng.sample(range(ACCOUNTS), 2)
        ka, kb = f"acct-{a:06d}", f"acct-{b:06d}"
        conn.execute("BEGIN IMMEDIATE")
        va = json.loads(conn.execute("SELECT value FROM acct WHERE key = ?", (ka,)).fetchone()[0])
        vb = json.loads(conn.execute("SELECT value FROM acct WHERE key = ?", (kb,)).fetchone()[0])
        va["balance"] -= 1
        vb["balance"] += 1
        conn.execute("UPDATE acct SET value = ? WHERE key = ?", (json.dumps(va), ka))
        conn.execute("UPDATE acct SET value = ? WHERE key = ?", (json.dumps(vb), kb))
        conn.execute("COMMIT")
        n += 1
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    conn.close()
    return {"tx_per_s": n / elapsed, "cpu_us_per_tx": cpu / n * 1e6}


# -- the store -------------------------------------------------------------------------------


async def _load(store: StateStore, keys: int, batch: int = 10_000) -> None:
    d = store.dictionary("accounts")
    for start in range(0, keys, batch):
        async with store.transaction() as tx:
            for i in range(start, min(keys, start + batch)):
                await d.set(tx, f"acct-{i:06d}", _account(i))


async def _store(
    work: Path,
    durability: Durability,
    seconds: float,
    writers: int,
    backups: bool,
    profile: cProfile.Profile | None = None,
) -> dict[str, Any]:
    repo = Repository.init(FileStorage(work / "repo"), PASSWORD)
    target = RepositoryTarget(repo)
    async with StateStore.open(
        work / "store", partition="bench", target=target, durability=durability
    ) as store:
        await _load(store, ACCOUNTS)
        await store.backup(BackupOption.FULL)
        d = store.dictionary("accounts")
        stop = asyncio.Event()
        commits = 0
        taken = {"full": 0, "incremental": 0}
        rng = random.Random(1)

        async def writer() -> None:
            nonlocal commits
            while not stop.is_set():
                a, b = rng.sample(range(ACCOUNTS), 2)
                ka, kb = f"acct-{a:06d}", f"acct-{b:06d}"
                async with store.transaction() as tx:
                    va = await d.get(tx, ka)
                    vb = await d.get(tx, kb)
                    assert va is not None
                    assert vb is not None
                    va["balance"] -= 1
                    vb["balance"] += 1
                    await d.set(tx, ka, va)
                    await d.set(tx, kb, vb)
                commits += 1

        async def backer() -> None:
            n = 0
            while not stop.is_set():
                option = BackupOption.FULL if n % 5 == 4 else BackupOption.INCREMENTAL
                await store.backup(option)
                taken[option.value] += 1
                n += 1

        tasks = [asyncio.create_task(writer()) for _ in range(writers)]
        if backups:
            tasks.append(asyncio.create_task(backer()))
        if profile is not None:
            profile.enable()
        cpu = time.process_time()
        child = _child_cpu(target)
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        child = _child_cpu(target) - child
        if profile is not None:
            profile.disable()
    target.close()
    shutil.rmtree(work / "repo")
    shutil.rmtree(work / "store")
    return {
        "tx_per_s": commits / elapsed,
        # the store's process and its backup process together
        "cpu_us_per_tx": (cpu + child) / max(commits, 1) * 1e6,
        "backup_process_cpu_us_per_tx": child / max(commits, 1) * 1e6,
        "backups": taken,
    }


def _child_cpu(target: RepositoryTarget) -> float:
    """CPU seconds of the target's backup process so far (0 without one; Linux /proc)."""
    child = getattr(target, "_child", None)
    proc = getattr(child, "_proc", None)
    if proc is None:
        return 0.0
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _throughput(work: Path, seconds: float, rounds: int, writers: int) -> dict[str, Any]:
    configs = ("sqlite", f"store x{writers}", "store x1", f"store x{writers} + backups")
    out: dict[str, Any] = {}
    levels: tuple[tuple[str, Durability], ...] = (("NORMAL", "normal"), ("FULL", "full"))
    for sync, durability in levels:
        runs: dict[str, list[float]] = {c: [] for c in configs}
        cpus: dict[str, list[float]] = {c: [] for c in configs}
        child: dict[str, list[float]] = {c: [] for c in configs}
        backups: list[dict[str, int]] = []
        for r in range(rounds):
            order = configs if r % 2 == 0 else tuple(reversed(configs))
            for c in order:
                res: dict[str, Any]
                if c == "sqlite":
                    res = _plain(work / f"plain-{r}.db", sync, seconds)
                    for p in work.glob(f"plain-{r}.db*"):
                        p.unlink()
                else:
                    n = writers if c != "store x1" else 1
                    res = await _store(work, durability, seconds, n, "backups" in c)
                    if "backups" in c:
                        backups.append(res["backups"])
                runs[c].append(res["tx_per_s"])
                cpus[c].append(res["cpu_us_per_tx"])
                child[c].append(res.get("backup_process_cpu_us_per_tx", 0.0))
                print(
                    f"  {sync:6} round {r + 1} {c:22} {runs[c][-1]:>9.0f} tx/s "
                    f"{cpus[c][-1]:>7.1f} CPU us/tx",
                    flush=True,
                )
        med = {c: statistics.median(v) for c, v in runs.items()}
        cpu = {c: statistics.median(v) for c, v in cpus.items()}
        base = med["sqlite"]
        idle = med[f"store x{writers}"]
        out[sync] = {
            "median_tx_per_s": {c: round(v, 1) for c, v in med.items()},
            "runs": {c: [round(x, 1) for x in v] for c, v in runs.items()},
            "ratio_to_sqlite": {c: round(v / base, 3) for c, v in med.items()},
            # each round's ratio to that round's SQLite, lowest and highest: the spread
            "round_ratio_range": {
                c: [
                    round(min(x / y for x, y in zip(v, runs["sqlite"], strict=True)), 3),
                    round(max(x / y for x, y in zip(v, runs["sqlite"], strict=True)), 3),
                ]
                for c, v in runs.items()
            },
            "median_cpu_us_per_tx": {c: round(v, 1) for c, v in cpu.items()},
            # of which the backup process's (``RepositoryTarget`` stores backups from a child)
            "median_backup_process_cpu_us_per_tx": {
                c: round(statistics.median(v), 1) for c, v in child.items()
            },
            # tx per CPU-second against SQLite's: what the ratio is when CPU is not shared
            "cpu_ratio_to_sqlite": {c: round(cpu["sqlite"] / v, 3) for c, v in cpu.items()},
            "backup_cost": round(1 - med[f"store x{writers} + backups"] / idle, 3),
            "backups_taken": backups,
        }
    return out


async def _sizes(work: Path, keys: int) -> dict[str, Any]:
    repo = Repository.init(FileStorage(work / "repo"), PASSWORD)
    out: dict[str, Any] = {"keys": keys}

    async def hook(ctx: RestoreContext) -> bool:
        await ctx.restore_latest()
        return True

    async with StateStore.open(
        work / "store",
        partition="bench",
        target=RepositoryTarget(repo),
        durability="normal",
        on_data_loss=hook,
    ) as store:
        await _load(store, keys)
        t = time.perf_counter()
        full = await store.backup(BackupOption.FULL)
        out["full_seconds"] = round(time.perf_counter() - t, 2)
        rng = random.Random(2)
        changed = rng.sample(range(keys), keys // 100)
        d = store.dictionary("accounts")
        for start in range(0, len(changed), 100):
            async with store.transaction() as tx:
                for i in changed[start : start + 100]:
                    await d.set(tx, f"acct-{i:06d}", {**_account(i), "balance": 7})
        t = time.perf_counter()
        inc = await store.backup(BackupOption.INCREMENTAL)
        out["incremental_seconds"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        await store.induce_data_loss()
        out["drill_seconds"] = round(time.perf_counter() - t, 2)
    for name, info in (("full", full), ("incremental", inc)):
        out[name] = {"logical_bytes": info.size, "stored_bytes": info.snapshot.sizes.stored}
    shutil.rmtree(work / "repo")
    shutil.rmtree(work / "store")
    return out


async def _profile(work: Path, seconds: float, writers: int) -> None:
    prof = cProfile.Profile()
    res = await _store(work, "normal", seconds, writers, False, prof)
    print(f"store x{writers} at NORMAL under cProfile: {res['tx_per_s']:.0f} tx/s")
    pstats.Stats(prof).sort_stats("tottime").print_stats(30)


async def main() -> None:
    """Run the parts asked for and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--keys", type=int, default=0, help="size part: store size (0: skip)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--dir", type=Path, help="where to work (default: a temp dir on local disk)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="state-bench-", dir=args.dir))
    try:
        if args.profile:
            await _profile(work, args.seconds, args.writers)
            return
        results: dict[str, Any] = {
            "throughput": await _throughput(work, args.seconds, args.rounds, args.writers)
        }
        print(
            "\nmedians: tx/s and ratio to plain sqlite3 at the same synchronous level; "
            "CPU time per tx and its ratio (SQLite's CPU/tx over the store's)"
        )
        for sync, r in results["throughput"].items():
            for c, v in r["median_tx_per_s"].items():
                lo, hi = r["round_ratio_range"][c]
                print(
                    f"  {sync:6} {c:22} {v:>9.0f} tx/s  {r['ratio_to_sqlite'][c]:.2f}x "
                    f"(rounds {lo:.2f}-{hi:.2f})  {r['median_cpu_us_per_tx'][c]:>7.1f} CPU us/tx  "
                    f"{r['cpu_ratio_to_sqlite'][c]:.2f}x"
                )
            print(f"  {sync:6} back-to-back backups cost {r['backup_cost']:.0%} of throughput")
        if args.keys:
            s = await _sizes(work, args.keys)
            results["sizes"] = s
            print(f"\n{args.keys} keys, 1% changed: {s}")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
