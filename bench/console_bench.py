"""
How long the console's pages take on the server at 10,000 partitions.

A controller on a SQLite catalog (the default) with 10,000 registered
partitions (100 applications x 10 services x 10), a policy enabled on every
application and one service suspended in each, a day of hourly backup jobs
(240,000 finished jobs), each partition's last good backup (one in 20 of them
late) and a drill state for one in 10. Each page is fetched from a live server;
rounds are interleaved (every page once per round) and medians are printed.

- **cold overview**: the first overview of a fresh process. Before each round
  the app forgets its shared ``FleetView``, the console's recovery points and
  its fleet warmer (after the previous computation has finished), so the page
  meets an empty cache, as after a restart.
- **warm**: every other page, fetched once just before it is timed.
- **anchor**: in the same rounds, the old cold path, the fleet's health
  computed synchronously (``views.overview`` with ``health.partition_health``),
  which the first overview used to wait for; and ``/console/login``, the
  framework's floor. Each page is reported as a ratio to the anchor too.

It measures, it never asserts.

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
from typing import Any

import httpx

from safehold.bootstrap import Settings, build_controller
from safehold.core.policy import EntityRef
from safehold.core.snapshot import Epoch
from safehold.service import health, policies, protection, views
from safehold.service.health import FleetView
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
    policies.create_policy(
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
    # Last good backups: 20 minutes ago, 3 hours ago for one in 20 (late), never for one in 100.
    from safehold.service.drill_records import DrillState

    with ctx.uow() as uow:
        for i in range(n):
            if i % 100 == 99:
                continue
            pid = str(uuid.UUID(int=i + 1))
            ago = timedelta(hours=3) if i % 20 == 7 else timedelta(minutes=20)
            uow.partitions.record_backup_outcome(
                pid, state="Success", failure=None, good_at=now - ago
            )
            if i % 10 == 3:
                uow.drills.save_state(
                    DrillState(pid, last_state="Success", rto_seconds=42.0 + i % 7)
                )
        uow.commit()
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


def _forget_fleet(app: Any) -> None:
    """Make the next overview meet empty caches, as the first one after a restart."""
    warmer = getattr(app.state, "console_fleet_warmer", None)
    pending = getattr(warmer, "_pending", None)
    if pending is not None:
        pending.result(timeout=120)  # let the previous computation end: no overlap
    app.state.fleet = FleetView()
    for name in ("console_fleet_warmer", "console_rpo"):
        if hasattr(app.state, name):
            delattr(app.state, name)


def main() -> None:
    """Build the fleet, then time each page, interleaved over rounds."""
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
    ctx = controller.ctx
    app = controller.app
    started = time.perf_counter()
    first = _populate(ctx, args.partitions, tmp / "store", args.jobs)
    app.state.console_activity_ttl = 0  # time the chart's query, not its 30 s cache
    took = time.perf_counter() - started
    print(f"populated {args.partitions} partitions and their jobs in {took:.1f} s")
    pages = {
        "overview, cold": "/console/",
        "overview, warm": "/console/",
        "health section": "/console/health",
        "recovery points, p1": "/console/recovery",
        "recovery, late, p5": "/console/recovery?late=true&page=5",
        "tree, first page": "/console/tree",
        "tree, page 150": "/console/tree?page=150",
        "tree, filtered": "/console/tree?q=App042/Svc3",
        "drills": "/console/drills",
        "configuration": "/console/config",
        "policies": "/console/policies",
        "partition": f"/console/partitions/{first}",
        "24 h chart": "/console/activity",
        "login (floor)": "/console/login",
    }
    times: dict[str, list[float]] = {name: [] for name in [*pages, ANCHOR]}
    stand_ins = 0
    with serve_in_thread(app, lifespan="off") as url, httpx.Client(base_url=url) as h:
        assert h.post("/console/login", data={"token": "bench-admin"}).status_code == 303
        for _ in range(args.rounds):
            # The anchor: the fleet's health computed synchronously, as the old cold path did.
            t0 = time.perf_counter()
            views.overview(ctx, health.partition_health(ctx))
            times[ANCHOR].append(time.perf_counter() - t0)
            for name, path in pages.items():
                if name.endswith("cold"):
                    _forget_fleet(app)
                else:
                    h.get(path)  # the same page just before: its caches are warm
                t0 = time.perf_counter()
                r = h.get(path)
                times[name].append(time.perf_counter() - t0)
                assert r.status_code == 200, (path, r.status_code)
                if name.endswith("cold") and "being computed" in r.text:
                    stand_ins += 1
    anchor = statistics.median(times[ANCHOR])
    load = os.getloadavg()[0]
    print(f"{args.rounds} interleaved rounds; load average {load:.1f}; medians (min), ms")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(
            f"{name:36} {med * 1000:8.1f} ({min(ts) * 1000:7.1f})   "
            f"{med / anchor:5.2f}x the anchor   {'ok' if med <= 0.3 else 'OVER'} 300 ms"
        )
    print(f"cold overviews that showed the stand-in counts: {stand_ins} of {args.rounds}")
    controller.close()


ANCHOR = "anchor: fleet health computed now"


if __name__ == "__main__":
    main()
