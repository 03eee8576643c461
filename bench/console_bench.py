"""
How long the console's pages take on the server at 10,000 partitions.

A controller on a SQLite catalog (the default) with 10,000 registered
partitions (100 applications x 10 services x 10), a policy enabled on every
application and one service suspended in each, and a day of hourly backup jobs
(240,000 finished jobs); each page is fetched from a live
server several times and the median is printed. The overview's health comes from
the app's shared ``FleetView`` (computed at most once a second): "cold" waits for
it to expire before each round, "warm" does not. It measures, it never asserts.

    .venv/bin/python bench/console_bench.py [--partitions 10000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx

from safehold.bootstrap import Settings, build_controller
from safehold.core.policy import EntityRef
from safehold.core.snapshot import Epoch
from safehold.service import protection
from safehold.service.model import JobRecord, PartitionRecord
from safehold.testing import serve_in_thread


def _populate(ctx: object, n: int, store: Path, jobs_per_partition: int) -> str:
    from safehold.service.context import ServiceContext

    assert isinstance(ctx, ServiceContext)
    now = ctx.clock()
    first = ""
    with ctx.uow() as uow:
        for i in range(n):
            a, s = i // 100, (i // 10) % 10
            pid = str(uuid.UUID(int=i + 1))
            first = first or pid
            uow.partitions.save(
                PartitionRecord(
                    partition_id=pid,
                    application=f"fabric:/App{a:03d}",
                    service=f"fabric:/App{a:03d}/Svc{s}",
                    source="dir:/srv/data",
                    restore_to=None,
                    agent=None,
                    epoch=Epoch(),
                    lsn=0,
                    last_scheduled_at=None,
                    created_at=now,
                )
            )
        uow.commit()
    protection.create_policy(
        ctx,
        {
            "Name": "hourly",
            "AutoRestoreOnDataLoss": False,
            "MaxIncrementalBackups": 3,
            "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT1H"},
            "Storage": {"StorageKind": "FileShare", "Path": str(store)},
        },
    )
    for a in range(n // 100):
        protection.enable_backup(ctx, EntityRef("Application", f"fabric:/App{a:03d}"), "hourly")
        protection.suspend_backup(ctx, EntityRef("Service", f"fabric:/App{a:03d}/Svc9"))
    # A day of hourly backups: the jobs the 24-hour chart counts (one in 50 failed).
    with ctx.uow() as uow:
        for h in range(jobs_per_partition):
            at = now - timedelta(hours=h, minutes=5)
            uow.jobs.insert_many(
                [
                    JobRecord(
                        id=str(uuid.uuid4()),
                        partition_id=str(uuid.UUID(int=i + 1)),
                        kind="backup",
                        state="Failure" if i % 50 == 0 else "Success",
                        scheduled=True,
                        created_at=at,
                        deadline=at + timedelta(minutes=10),
                        params={},
                        started_at=at,
                        finished_at=at + timedelta(minutes=1),
                    )
                    for i in range(n)
                ]
            )
        uow.commit()
    return first


def main() -> None:
    """Build the fleet, then time each page."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--partitions", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=24, help="finished jobs per partition")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="safehold-console-bench-"))
    os.environ.setdefault("SAFEHOLD_PASSWORD", "bench")
    os.environ.setdefault("SAFEHOLD_SECRET_KEY", base64.urlsafe_b64encode(b"b" * 32).decode())
    controller = build_controller(
        Settings(data_dir=tmp / "data", tokens={"bench-admin": "admin"}, tick_seconds=3600)
    )
    started = time.perf_counter()
    first = _populate(controller.ctx, args.partitions, tmp / "store", args.jobs)
    controller.app.state.console_activity_ttl = 0  # time the chart's query, not its 30 s cache
    took = time.perf_counter() - started
    print(f"populated {args.partitions} partitions and their jobs in {took:.1f} s")
    pages = {
        "overview, cold": "/console/",
        "overview, warm": "/console/",
        "tree, first page": "/console/tree",
        "tree, page 150": "/console/tree?page=150",
        "tree, filtered": "/console/tree?q=App042/Svc3",
        "24 h chart": "/console/activity",
        "policies": "/console/policies",
        "partition": f"/console/partitions/{first}",
    }
    with serve_in_thread(controller.app, lifespan="off") as url, httpx.Client(base_url=url) as h:
        assert h.post("/console/login", data={"token": "bench-admin"}).status_code == 303
        for name, path in pages.items():
            times = []
            for _ in range(args.rounds):
                if name.endswith("cold"):
                    time.sleep(1.1)  # past the shared FleetView's 1 s cache: computed anew
                else:
                    h.get(path)  # the same page just before: the cache is warm
                t0 = time.perf_counter()
                r = h.get(path)
                times.append(time.perf_counter() - t0)
                assert r.status_code == 200, (path, r.status_code)
            print(
                f"{name:18} median {statistics.median(times) * 1000:7.1f} ms"
                f"   min {min(times) * 1000:7.1f} ms   ({args.rounds} rounds)"
            )
    controller.close()


if __name__ == "__main__":
    main()
