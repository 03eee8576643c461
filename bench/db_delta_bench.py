"""
Delta restore against a full restore, and against pgBackRest's ``restore --delta``.

One pgbench cluster (``bench/db_bench.py``'s setup: initdb on a free port, WAL
archived by both tools), one base backup by each tool, then 1,000 random
updates, a checkpoint, and the server stopped: that changed data directory is
what each delta restore starts from (a fresh copy each time, made before the
clock starts). Each round runs, in rotated order:

- safehold, full restore into an empty directory (``pg restore --backup ID``);
- safehold, ``pg restore --delta --backup ID`` over the changed copy;
- safehold's library, ``restore_postgres(..., delta=True)`` with the repository
  already open, as the agent runs it (no command start-up, no key derivation);
- pgBackRest, ``restore --delta --type=immediate`` over the changed copy, then
  the server started;

each timed until the server is out of recovery and takes queries, to the backup's
consistent point. safehold's delta restore reports what it read; pgBackRest's
reads are not counted. It measures; it asserts nothing.

Usage: python bench/db_delta_bench.py [--scale 20] [--rounds 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from db_bench import PASSWORD, Bench, LocalServer, free_port, sql, timed

from safehold.db import BackupId, PostgresSource
from safehold.repo import Repository
from safehold.storage.file import FileStorage


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/safehold-delta-bench"))
    args = ap.parse_args()
    b = Bench(args.work, args.scale, args.rounds, pitr_wal_mb=0)
    b.setup()
    print(f"setup done: {b.notes[-1]}; load {load()}", flush=True)
    timed(b.safehold("pg", "backup", b.pg.url, "--repo", str(b.repo)))
    timed(b.pgbr("--type=full", "--compress-type=zst", "--process-max=2", "backup"))
    out = subprocess.run(
        b.safehold("snapshots", "--repo", str(b.repo), "--json"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    snaps = json.loads(out)
    snap_id = (snaps[-1] if isinstance(snaps, list) else snaps["snapshots"][-1])["id"]
    sql(
        b.pg,
        "DO $$ DECLARE r int; BEGIN FOR i IN 1..1000 LOOP "
        f"r := 1 + floor(random() * {args.scale * 100000})::int; "
        "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = r; "
        "COMMIT; END LOOP; END $$",
    )
    sql(b.pg, "CHECKPOINT")
    sql(b.pg, "SELECT pg_switch_wal()")
    b._wait_archived()
    b.pg.stop()
    changed = b.pg.datadir

    def fresh_copy(name: str) -> Path:
        target = args.work / name
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(["cp", "-a", str(changed), str(target)], check=True)
        subprocess.run(["sync"], check=True)
        return target

    read: list[tuple[int, int, int, int]] = []

    def sh_full(i: int) -> float:
        target = args.work / f"full{i}"
        subprocess.run(["sync"], check=True)
        secs = b._sh_restore(target, "--backup", snap_id)
        b._last_server.stop("immediate")
        return secs

    def sh_delta(i: int) -> float:
        target = fresh_copy(f"sdelta{i}")
        port = free_port()
        secs, _, stdout = timed(
            b.safehold(
                "pg",
                "restore",
                str(target),
                "--repo",
                str(b.repo),
                "--port",
                str(port),
                "--backup",
                snap_id,
                "--delta",
            )
        )
        pattern = (
            r"(\d+)\s+of\s+(\d+)\s+chunks\s+fetched,\s+([\d,]+)\s+bytes\s+read\s+of\s+([\d,]+)"
        )
        m = re.search(pattern, stdout)
        if m:
            read.append(tuple(int(g.replace(",", "")) for g in m.groups()))  # type: ignore[arg-type]
        LocalServer(target, port, b.bindir).stop("immediate")
        return secs

    def br_delta(i: int) -> float:
        target = fresh_copy(f"bdelta{i}")
        t = time.perf_counter()
        subprocess.run(
            b.pgbr(
                f"--pg1-path={target}",
                "restore",
                "--delta",
                "--type=immediate",
                "--target-action=promote",
                "--process-max=2",
            ),
            check=True,
            capture_output=True,
        )
        srv = LocalServer(target, free_port(), b.bindir)
        srv.append_config(f"port = {srv.port}", "archive_mode = off")
        srv.start(wait=False)
        srv.wait_ready()
        secs = time.perf_counter() - t
        srv.stop("immediate")
        return secs

    lib_repo = Repository.open(FileStorage(b.repo), PASSWORD)

    def lib_delta(i: int) -> float:
        target = fresh_copy(f"ldelta{i}")
        t = time.perf_counter()
        out = PostgresSource("").restore(
            lib_repo, target, to=BackupId(snap_id), delta=True, port=free_port()
        )
        secs = time.perf_counter() - t
        assert out.server is not None
        out.server.stop("immediate")
        return secs

    tools = {
        "safehold full": sh_full,
        "safehold --delta": sh_delta,
        "safehold delta, library": lib_delta,
        "pgBackRest --delta": br_delta,
    }
    times: dict[str, list[float]] = {k: [] for k in tools}
    loads: list[str] = []
    names = list(tools)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            secs = tools[name](r)
            times[name].append(secs)
            loads.append(load())
            print(f"round {r + 1}: {name} {secs:.2f} s (load {loads[-1]})", flush=True)
    anchor = statistics.median(times["safehold full"])
    print(f"\npgbench -s {args.scale}; {args.rounds} rounds; loads {', '.join(loads)}")
    for name, v in times.items():
        med = statistics.median(v)
        print(
            f"{name:20s} median {med:.2f} s (spread {max(v) / min(v):.2f}×), "
            f"{anchor / med:.2f}× the full restore's speed"
        )
    if read:
        c, n, got, full = read[-1]
        print(f"safehold --delta read {got:,} of {full:,} bytes ({c} of {n} chunks)")


if __name__ == "__main__":
    main()
