"""
The recovery point of PostgreSQL WAL archiving, measured: what a killed primary loses.

For each way WAL leaves the server, in one run, interleaved and in rotated order
per round:

- ``archive_command`` (the anchor): safehold's hook, ``archive_timeout = 5s``;
- ``pg_receivewal``: safehold's ``WalReceiver`` streaming, asynchronous;
- ``pg_receivewal --synchronous`` with ``synchronous_standby_names`` naming it.

each round makes a cluster (``initdb`` on a free port), takes a base backup,
runs a writer that commits one row at a time (its id and the client's clock at
acknowledgement) for a random 2-4 s, kills the primary (``pg_ctl stop -m
immediate``), lets the archiver finish what it holds, restores the latest state
from the repository alone, and reads the newest row it holds. The **RPO** is
the time between the last acknowledged commit and the newest recovered one;
**lost** counts the acknowledged commits that did not come back. It also reports
the writer's commit rate (what synchronous costs). Medians over rounds; ratios
against the anchor. It asserts nothing.

Usage: python bench/db_rpo_bench.py [--rounds 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

from safehold.db import Latest, LocalServer, PostgresSource, WalArchive, free_port, stanza_for
from safehold.db.receivewal import APPLICATION_NAME, WalReceiver
from safehold.db.server import find_bindir
from safehold.db.spool import spool_pending
from safehold.repo import KdfParams, Repository
from safehold.storage.file import FileStorage

PASSWORD = "rpo-bench-password"
SRC = Path(__file__).resolve().parents[1] / "src"
MODES = ("archive_command", "receivewal", "receivewal-sync")


def python_argv() -> list[str]:
    """The interpreter the postgres OS user can run, with safehold importable."""
    probe = ["runuser", "-u", "postgres", "--", sys.executable, "-c", "pass"]
    ok = subprocess.run(probe, capture_output=True, check=False).returncode == 0
    if os.geteuid() != 0 or ok:
        return [sys.executable]
    site = sysconfig.get_paths()["purelib"]
    return ["env", f"PYTHONPATH={site}:{SRC}", "/usr/bin/python3"]


def one_round(mode: str, work: Path) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix=f"rpo-{mode}-", dir=work))
    root.chmod(0o755)
    repo_path, spool = root / "repo", root / "spool"
    Repository.init(FileStorage(repo_path), PASSWORD, kdf=KdfParams(n=1024)).close()
    pw = root / "password"
    pw.write_text(PASSWORD)
    spool.mkdir()
    subprocess.run(["chown", "-R", "postgres:postgres", str(root)], check=True)
    hook = " ".join(
        [*python_argv(), "-m", "safehold.db.hook", "push", "%p", "--spool", str(spool),
         "--repo", str(repo_path), "--password-file", str(pw)]
    )  # fmt: skip
    settings = ["wal_level = replica", "fsync = on", "shared_buffers = 16MB"]
    if mode == "archive_command":
        settings += ["archive_mode = on", f"archive_command = '{hook}'", "archive_timeout = 5"]
    if mode == "receivewal-sync":
        settings.append(f"synchronous_standby_names = '{APPLICATION_NAME}'")
    pg = LocalServer(root / "pg", free_port(), find_bindir())
    pg.initdb(*settings)
    pg.start()
    with pg.connect() as c:
        sysid = c.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
    stanza = stanza_for(int(sysid))

    def open_archive() -> WalArchive:
        return WalArchive(Repository.open(FileStorage(repo_path), PASSWORD), stanza)

    rx = None
    if mode.startswith("receivewal"):
        rx = WalReceiver(pg.url, root / "rx", open_archive, synchronous=mode.endswith("sync"))
        rx.start()
    acked: list[tuple[int, float]] = []
    try:
        with pg.connect() as c:
            c.execute("CREATE TABLE t (id int PRIMARY KEY)")
        with Repository.open(FileStorage(repo_path), PASSWORD) as repo:
            PostgresSource(pg.url, wal_timeout=300).backup(repo)
        stop = threading.Event()

        def writer() -> None:
            with pg.connect() as c:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        c.execute("INSERT INTO t VALUES (%s)", (i,))
                    except Exception:
                        return
                    acked.append((i, time.time()))

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(random.uniform(2.0, 4.0))
        pg.stop("immediate")  # killed mid-stream; the writer's next commit fails
        stop.set()
        t.join()
        if rx is not None:
            deadline = time.monotonic() + 60
            while rx.running and time.monotonic() < deadline:
                time.sleep(0.05)
            rx.stop()
        deadline = time.monotonic() + 120
        while spool_pending(spool / stanza) and time.monotonic() < deadline:
            time.sleep(0.1)  # the hook's pusher drains what was acknowledged
        with Repository.open(FileStorage(repo_path), PASSWORD) as repo:
            out = PostgresSource(pg.url).restore(repo, root / "restored", to=Latest())
        assert out.server is not None
        with out.server.connect() as c:
            newest = c.execute("SELECT coalesce(max(id), 0) FROM t").fetchone()[0]
        out.server.stop("immediate")
        last_id, last_at = acked[-1]
        got_at = dict(acked).get(newest, acked[0][1] - 0.0)
        writes = len(acked) / max(1e-9, acked[-1][1] - acked[0][1])
        return {
            "rpo": max(0.0, last_at - got_at) if newest < last_id else 0.0,
            "lost": float(max(0, last_id - newest)),  # a commit in flight may come back too
            "tps": writes,
        }
    finally:
        if rx is not None and rx.running:
            rx.stop()
        for d in (root / "pg", root / "restored"):
            LocalServer(d, 0, find_bindir()).stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp"))
    args = ap.parse_args()
    results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for r in range(args.rounds):
        order = MODES[r % 3 :] + MODES[: r % 3]
        for mode in order:
            res = one_round(mode, args.work)
            results[mode].append(res)
            print(f"round {r + 1} {mode}: {res}", flush=True)
    load = os.getloadavg()[0]
    anchor = {k: statistics.median(x[k] for x in results[MODES[0]]) for k in ("rpo", "lost", "tps")}
    print(f"\n| {args.rounds} rounds, load {load:.1f} | RPO (median) | lost commits | commits/s |")
    print("|---|---|---|---|")
    for mode in MODES:
        med = {k: statistics.median(x[k] for x in results[mode]) for k in ("rpo", "lost", "tps")}
        worst = max(x["rpo"] for x in results[mode])
        print(
            f"| {mode} | {med['rpo']:.3f} s (worst {worst:.3f} s) | {med['lost']:.0f} "
            f"| {med['tps']:.0f} ({med['tps'] / anchor['tps']:.2f}×) |"
        )


if __name__ == "__main__":
    main()
