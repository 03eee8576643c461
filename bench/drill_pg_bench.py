"""
What a drill of a ``postgres:`` partition costs over a plain restore of the same base backup.

A throw-away cluster (``initdb`` on a free port, WAL archived by the real
``archive_command``) gets a table of about SIZE MiB and one base backup. Then,
interleaved for ROUNDS rounds:

- ``restore``: ``PostgresSource.restore`` of the backup to its consistent point
  (``BackupId``), started until it answers, then stopped and removed;
- ``drill``: ``agent.drill.run_drill`` of the same backup into a scratch
  instance with one SQL validator (``SELECT count(*)`` of the table, which reads
  it whole), then stopped and the sandbox removed.

Prints the medians, the ratio to ``restore``, the drill's own measured RTO, and
how it splits: the scratch restore (files, start, recovery, ready) and the validator.
It measures; it asserts nothing. Run it as root (PostgreSQL runs as ``postgres``).

    .venv/bin/python bench/drill_pg_bench.py [--size-mib 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.db.conftest import FAST_KDF, PASSWORD, make_env
from tests.db.helpers import sql

from safehold.agent.drill import run_drill
from safehold.core.progress import NullProgress
from safehold.core.snapshot import format_time
from safehold.core.work import WorkItem
from safehold.db import BackupId, PostgresSource
from safehold.service.engine import RepoEngine
from safehold.storage.file import FileStorage

ROW_BYTES = 240


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows = args.size_mib * (1 << 20) // ROW_BYTES
    with make_env() as env:
        pg = env.make_cluster()
        sql(pg, "CREATE TABLE t (id bigint, v text)")
        fill = f"SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, {rows}) g"
        sql(pg, f"INSERT INTO t {fill}")
        size = sql(pg, "SELECT pg_database_size('postgres')")[0][0]
        t0 = time.monotonic()
        with env.open_repo() as repo:
            snap = PostgresSource(pg.url).backup(repo).snapshot
        print(f"database {size / 2**20:.0f} MiB, {rows} rows; backup {time.monotonic() - t0:.1f} s")
        engine = RepoEngine(PASSWORD, kdf=FAST_KDF)
        now = datetime.now(UTC)
        times: dict[str, list[float]] = {"restore": [], "drill": []}
        rtos: list[float] = []
        parts: dict[str, list[float]] = {"scratch restore": [], "validator": []}
        for r in range(args.rounds):
            target = env.root / f"restore-{r}"
            t0 = time.monotonic()
            with env.open_repo() as repo:
                PostgresSource(pg.url).restore(
                    repo, target, to=BackupId(snap.id), keep_running=False
                )
            shutil.rmtree(target)
            times["restore"].append(time.monotonic() - t0)
            item = WorkItem(
                JobId=f"j{r}",
                Kind="drill",
                Deadline=format_time(now + timedelta(hours=1)),
                Partition={
                    "PartitionId": "p",
                    "ApplicationName": "fabric:/B",
                    "ServiceName": "fabric:/B/Db",
                    "Source": f"postgres:{pg.url}",
                },
                Params={
                    "drill_id": f"d{r}",
                    "snapshot_id": snap.id,
                    "backup_time": format_time(now),
                    "sandbox_dir": str(env.root / "sandboxes"),
                    "validators": [
                        {
                            "Kind": "Sql",
                            "Query": "SELECT count(*) FROM t",
                            "Expect": {"Scalar": rows},
                            "TimeoutSeconds": 3600,
                        }
                    ],
                },
            )
            storage = FileStorage(env.repo_path)
            t0 = time.monotonic()
            out = run_drill(item, engine, storage, NullProgress(), lambda: now)
            times["drill"].append(time.monotonic() - t0)
            storage.close()
            assert out.State == "Success", out.Error
            rtos.append(float(out.Result["RtoSeconds"]))
            parts["scratch restore"].append(float(out.Result["RestoreSeconds"]))
            parts["validator"].append(float(out.Result["Validators"][0]["Seconds"]))
            print(
                f"round {r + 1}: restore {times['restore'][-1]:.2f} s, "
                f"drill {times['drill'][-1]:.2f} s (RTO {rtos[-1]:.2f} s)",
                flush=True,
            )
        base = statistics.median(times["restore"])
        print(f"load average {os.getloadavg()[0]:.1f}")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"{name:8s} median {med:.2f} s  ratio {med / base:.2f}")
        print(f"drill RTO median {statistics.median(rtos):.2f} s")
        for name, ts in parts.items():
            print(f"  of which {name}: median {statistics.median(ts):.2f} s")


if __name__ == "__main__":
    main()
