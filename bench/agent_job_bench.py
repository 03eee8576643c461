"""
An agent's per-job cost: tiny ``dir:`` backups through ``RepoEngine.backup_dir``
into one shared FileShare (file backend) repository, as the fleet benchmark's
agents run them (``docs/agent-jobs.md``).

P processes of S threads ("slots") each; every slot backs up its own small
directories (one 5-byte file each, all alike, as the fleet's sources), one after
another, each with the directory's previous snapshot as parent, opening the
storage afresh for every job as ``agent.worker`` does. Each run starts from a
copy of one prepared repository (``--seed-files`` tiny backups already in it, so
``index/`` holds that many small files) and a fresh local cache; every slot does
one backup first (key, index cache), then all count backups and process CPU for
``--seconds``. Reported per configuration: backups per second, CPU ms per backup
(all processes' CPU over the window / backups) and the load average at the end,
medians of ``--rounds`` rounds (the configurations interleaved in each round).
The before/after figures (the old per-job open kept behind a switch while they
were taken) are in ``docs/agent-jobs.md``. This measures, it never asserts.

    .venv/bin/python bench/agent_job_bench.py [--configs 1x1 1x4 4x1 4x4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from safehold.core.progress import NullProgress
from safehold.core.snapshot import SnapshotMeta
from safehold.repo import KdfParams
from safehold.service.engine import RepoEngine
from safehold.storage.registry import open_storage

PASSWORD = "agent job bench"
DIRS_PER_SLOT = 8


def _make_dirs(root: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        d = root / f"p{i:05d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "data.txt").write_text("tiny\n")
        out.append(d)
    return out


def _engine() -> RepoEngine:
    return RepoEngine(PASSWORD, kdf=KdfParams(n=2**10))


def prepare(root: Path, seed_files: int) -> Path:
    """A repository holding *seed_files* tiny backups (one small index file each)."""
    repo = root / "template"
    src = _make_dirs(root / "seed", seed_files)
    engine = _engine()
    for d in src:
        storage = open_storage(str(repo))
        try:
            engine.backup_dir(storage, d, meta=SnapshotMeta(), progress=NullProgress())
        finally:
            storage.close()
    return repo


def _process(repo: str, dirs: list[list[str]], seconds: float, start: Any, out: Any) -> None:
    engine = _engine()
    parents: dict[str, str | None] = {}
    counts = [0] * len(dirs)
    errors: list[str] = []
    go = threading.Event()
    stop = threading.Event()
    ready = threading.Barrier(len(dirs) + 1)

    def one(d: str) -> None:
        storage = open_storage(repo)
        try:
            snap = engine.backup_dir(
                storage,
                Path(d),
                meta=SnapshotMeta(),
                progress=NullProgress(),
                parent=parents.get(d),
            )
        finally:
            storage.close()
        parents[d] = snap.id

    def slot(k: int) -> None:
        mine = dirs[k]
        try:
            one(mine[0])  # warm: keys, index cache
        except Exception as exc:
            errors.append(repr(exc))
        ready.wait()
        go.wait()
        i = 1
        while not stop.is_set():
            try:
                one(mine[i % len(mine)])
            except Exception:
                errors.append(traceback.format_exc())
                continue
            i += 1
            counts[k] += 1

    threads = [threading.Thread(target=slot, args=(k,)) for k in range(len(dirs))]
    for t in threads:
        t.start()
    ready.wait()
    start.wait()  # every process warm
    c0, t0 = time.process_time(), time.monotonic()
    go.set()
    time.sleep(seconds)
    n = sum(counts)
    c1, t1 = time.process_time(), time.monotonic()
    stop.set()
    for t in threads:
        t.join()
    out.put({"backups": n, "cpu": c1 - c0, "wall": t1 - t0, "errors": errors[:3]})


def run(root: Path, template: Path, procs: int, slots: int, seconds: float) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(dir=root))
    repo = work / "repo"
    shutil.copytree(template, repo)
    os.environ["SAFEHOLD_CACHE_DIR"] = str(work / "cache")
    alldirs = _make_dirs(work / "src", procs * slots * DIRS_PER_SLOT)
    ctx = mp.get_context("fork")
    start = ctx.Barrier(procs + 1)
    out = ctx.Queue()
    ps = []
    for p in range(procs):
        mine = [
            [
                str(d)
                for d in alldirs[
                    (p * slots + s) * DIRS_PER_SLOT : (p * slots + s + 1) * DIRS_PER_SLOT
                ]
            ]
            for s in range(slots)
        ]
        pr = ctx.Process(target=_process, args=(str(repo), mine, seconds, start, out))
        pr.start()
        ps.append(pr)
    start.wait()
    results = [out.get() for _ in ps]
    for pr in ps:
        pr.join()
    load = os.getloadavg()[0]
    shutil.rmtree(work, ignore_errors=True)
    n = sum(r["backups"] for r in results)
    cpu = sum(r["cpu"] for r in results)
    wall = max(r["wall"] for r in results)
    errs = [e for r in results for e in r["errors"]]
    if errs:
        last = errs[0].strip().splitlines()[-1] if not os.environ.get("AJ_TB") else errs[0]
        print(f"  {len(errs)} failed backups ({procs}x{slots}), e.g. {last}", flush=True)
    return {
        "per_s": n / wall,
        "cpu_ms": 1000 * cpu / max(1, n),
        "load": load,
        "backups": n,
        "errors": len(errs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["1x1", "1x4", "4x1", "4x4"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--seed-files", type=int, default=200)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="agent-job-bench-"))
    try:
        os.environ["SAFEHOLD_CACHE_DIR"] = str(root / "seed-cache")
        template = prepare(root, args.seed_files)
        res: dict[str, list[dict[str, float]]] = {}
        for r in range(args.rounds):
            configs = args.configs if r % 2 == 0 else list(reversed(args.configs))
            for cfg in configs:
                procs, slots = (int(x) for x in cfg.split("x"))
                got = run(root, template, procs, slots, args.seconds)
                res.setdefault(cfg, []).append(got)
                print(
                    f"round {r} {cfg}: {got['per_s']:.1f} backups/s, "
                    f"{got['cpu_ms']:.1f} ms CPU/backup, load {got['load']:.1f}",
                    flush=True,
                )
        print("\nmedians (procs x slots):")
        for cfg in args.configs:
            rs = res[cfg]
            print(
                f"{cfg}: {statistics.median(x['per_s'] for x in rs):.1f} backups/s, "
                f"{statistics.median(x['cpu_ms'] for x in rs):.1f} ms CPU/backup, "
                f"load {statistics.median(x['load'] for x in rs):.1f} ({len(rs)} rounds)"
            )
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
