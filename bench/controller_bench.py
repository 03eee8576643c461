"""
The controllers' CPU per job on the agents' path alone (issue 8).

Two replicas on PostgreSQL at 127.0.0.1:5432 (as ``fleet_bench.py`` starts them),
N partitions each with one queued on-demand backup, drained by T threads that
claim and report over HTTP with no data work (each report a made-up snapshot).
Prints both controllers' CPU per job and the jobs a second. ``--mode cc`` reports
with ``$/CompleteAndClaim`` (one request a job), ``--mode plain`` with ``$/Claim``
then ``$/Complete`` (what older agents send); run it from an older checkout with
``PYTHONPATH=<its src>`` and ``--mode plain`` for an A/B against older code.

    .venv/bin/python bench/controller_bench.py --partitions 1000 --threads 8 --mode cc
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet_bench import APPS, HEADERS, Fleet, V, database, policy, register, sql


def _outcome(item: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    snap = {"Id": secrets.token_hex(32), "Time": now, "Size": 5}
    return {"State": "Success", "Attempt": item["Attempt"], "Snapshot": snap}


def agent(url: str, name: str, mode: str, done: list[int]) -> None:
    """Claim and report until nothing is left."""
    incarnation = uuid.uuid4().hex
    base = f"{url}/safehold/agents/{name}"
    with httpx.Client(headers=HEADERS, timeout=60) as c:
        item: dict[str, Any] | None = None
        while True:
            if item is None:
                r = c.post(f"{base}/$/Claim", json={"Incarnation": incarnation})
                if r.status_code == 204:
                    return
                item = r.json()
            job = f"{base}/jobs/{item['JobId']}"
            if mode == "cc":
                r = c.post(
                    f"{job}/$/CompleteAndClaim",
                    json={"Outcome": _outcome(item), "Claim": {"Incarnation": incarnation}},
                )
                r.raise_for_status()
                item = None if r.status_code == 204 else r.json()
            else:
                c.post(f"{job}/$/Complete", json=_outcome(item)).raise_for_status()
                item = None
            done.append(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--mode", choices=["cc", "plain"], default="cc")
    args = ap.parse_args()
    n = args.partitions
    with tempfile.TemporaryDirectory() as tmp, database(n) as catalog:
        work = Path(tmp)
        src = work / "src"
        src.mkdir()
        (src / "data.txt").write_text("tiny\n")
        fleet = Fleet(work, catalog)
        fleet.start()
        try:
            ids, _ = register(fleet, n, f"dir:{src}", 50)
            doc = policy(work / "store")
            doc["Schedule"]["Interval"] = "PT24H"  # no scheduled jobs in the window
            fleet.call("POST", "/BackupRestore/BackupPolicies/$/Create", json=doc)
            for a in range(APPS):
                fleet.call(
                    "POST",
                    f"/Applications/Fleet{a}/$/EnableBackup",
                    json={"BackupPolicyName": "fleet"},
                )
            time.sleep(3)

            def request(i: int) -> None:
                url = fleet.urls[i % 2] + f"/Partitions/{ids[i]}/$/Backup"
                httpx.post(url, params=V, headers=HEADERS, json={}, timeout=60)

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(request, range(n)))
            queued = sql(catalog, "SELECT count(*) FROM jobs WHERE state = 'Accepted'")[0][0]
            time.sleep(2)
            done: list[int] = []
            cpu0, t0 = fleet.cpu(), time.monotonic()
            threads = [
                threading.Thread(
                    target=agent, args=(fleet.urls[k % 2], f"bench-{k}", args.mode, done)
                )
                for k in range(args.threads)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            cpu, wall = fleet.cpu() - cpu0, time.monotonic() - t0
            print(
                f"mode={args.mode} partitions={n} queued={queued} done={len(done)}"
                f" cpu/job={cpu * 1000 / max(1, len(done)):.2f} ms"
                f" jobs/s={len(done) / wall:.0f}"
            )
        finally:
            fleet.stop()


if __name__ == "__main__":
    main()
