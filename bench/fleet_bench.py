"""
The fleet benchmark: two controller replicas and four agents on one PostgreSQL catalog.

For each fleet size N (``--partitions 100,1000,10000``) it creates a fresh
database at 127.0.0.1:5432, starts two ``safehold serve --catalog postgresql://…
--no-embedded-agent`` replicas and four ``safehold agent --controller URL1,URL2``
processes, registers N partitions with a tiny ``dir:`` source (POST
/safehold/partitions from 16 threads, spread over both replicas) under 10
applications, and then measures, per round (``--rounds``):

1. *tiny-job overhead*, before any schedule: 20 on-demand backups one after the
   other, created→finished from the jobs' own times (and the agent's share,
   started→finished);
2. *scheduled load*, with a PT1M policy enabled on the 10 applications, agents
   with 1 slot each for ``--window`` seconds: the leader's scheduler rounds
   (``safehold_scheduler_last_tick_seconds`` sampled, each new round once),
   completed backups per minute, the controllers' CPU seconds (``/proc/PID/stat``)
   per completed job, and the p50/p99 latency of five reads with 20 concurrent
   clients;
3. the same load with the agents restarted with 4 slots each: throughput and CPU.

With ``--profile`` the leader is sampled by py-spy during phase 2 of the largest
N. Results go to ``--out`` (JSON) and a Markdown table on stdout. It measures; it
asserts nothing. Usage:

    python bench/fleet_bench.py [--partitions 100,1000,10000] [--rounds 1] [--window 60]
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
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.agent.procs import (
    ADMIN,
    Proc,
    cpu_seconds,
    start_agent,
    start_replica,
    wait_leader,
)

PG = "postgresql://postgres@127.0.0.1:5432"
APPS = 10
AGENTS = 4
CLIENTS = 20
E2E_JOBS = 20
READS_PER_CLIENT = 10
#: Agents long-poll their claims (the default ``--claim-wait 20``); after an empty
#: one they claim again within a second.
POLL = ["--poll", "1"]
HEADERS = {"Authorization": f"Bearer {ADMIN}"}
V = {"api-version": "6.4"}


def pct(xs: list[float], p: float) -> float:
    """The *p*-th percentile (nearest rank) of *xs*, or NaN."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


@contextmanager
def database(n: int) -> Iterator[str]:
    """A fresh database, dropped afterwards."""
    name = f"safehold_fleet_{os.getpid()}_{n}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG}/{name}"
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(query, args).fetchall())


class Fleet:
    """Two replicas and four agents for one fleet size."""

    def __init__(self, work: Path, catalog: str) -> None:
        self.work = work
        self.catalog = catalog
        self.key = work / "secret.key"
        self.controllers: list[Proc] = []
        self.urls: list[str] = []
        self.agents: list[Proc] = []
        self.http = httpx.Client(headers=HEADERS, timeout=60)

    def start(self) -> None:
        extra = ["--no-embedded-agent", "--tick-seconds", "1", "--agent-timeout", "60"]
        # serve's default spread, over the test harness's 0 (SF's first backup at once).
        extra += ["--schedule-spread", "1"]
        for i in range(2):
            proc, url = start_replica(self.work / f"ctl{i}", self.catalog, self.key, extra=extra)
            self.controllers.append(proc)
            self.urls.append(url)

    def start_agents(self, slots: int) -> None:
        for a in self.agents:
            a.stop()
        self.agents = [
            start_agent(
                self.urls, f"agent-{i}", self.work / f"agent-{i}.log", slots=slots, extra=POLL
            )
            for i in range(AGENTS)
        ]

    def stop(self) -> None:
        for p in [*self.agents, *self.controllers]:
            p.stop()
        self.http.close()

    def call(self, method: str, path: str, url: str | None = None, **kw: Any) -> httpx.Response:
        r = self.http.request(method, (url or self.urls[0]) + path, params=V, **kw)
        r.raise_for_status()
        return r

    def leader(self) -> tuple[str, Proc]:
        url = wait_leader(self.urls, 60)
        return url, self.controllers[self.urls.index(url)]

    def cpu(self) -> float:
        return sum(cpu_seconds(p.popen.pid) for p in self.controllers)


def register(fleet: Fleet, n: int, source: str, api_count: int) -> tuple[list[str], float]:
    """
    Register *n* partitions over APPS applications; return their ids and the API's rate.

    The first *api_count* go through POST /safehold/partitions (16 threads, both
    replicas), which is timed; the rest are copied from one of them in one INSERT
    (registration is not what this benchmark measures, and on a loaded machine
    10,000 POSTs take longer than the whole run should).
    """
    ids = [str(uuid.UUID(int=(7 << 120) + i)) for i in range(n)]
    first = min(n, api_count)

    def one(i: int) -> None:
        app = f"fabric:/Fleet{i % APPS}"
        body = {
            "ApplicationName": app,
            "ServiceName": f"{app}/Svc",
            "PartitionId": ids[i],
            "Source": source,
        }
        with httpx.Client(headers=HEADERS, timeout=60) as c:
            c.post(fleet.urls[i % 2] + "/safehold/partitions", json=body).raise_for_status()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(first)))
    rate = first / (time.perf_counter() - t0)
    if n > first:
        with psycopg.connect(fleet.catalog) as conn:
            cols = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = 'partitions' ORDER BY ordinal_position"
                )
            ]
            rest = range(first, n)
            picks = {
                "partition_id": "v.pid",
                "application": "v.app",
                "service": "v.app || '/Svc'",
            }
            select = ", ".join(picks.get(c, f"t.{c}") for c in cols)
            conn.execute(
                f"INSERT INTO partitions ({', '.join(cols)}) SELECT {select}"
                " FROM unnest(%s::text[], %s::text[]) AS v(pid, app),"
                " (SELECT * FROM partitions WHERE partition_id = %s) AS t",
                ([ids[i] for i in rest], [f"fabric:/Fleet{i % APPS}" for i in rest], ids[0]),
            )
    return ids, rate


def policy(store: Path) -> dict[str, Any]:
    return {
        "Name": "fleet",
        "AutoRestoreOnDataLoss": False,
        "MaxIncrementalBackups": 10,
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT1M"},
        "Storage": {"StorageKind": "FileShare", "Path": str(store)},
        "RetentionPolicy": {
            "RetentionPolicyType": "Basic",
            "RetentionDuration": "P1D",
            "MinimumNumberOfBackups": 2,
        },
    }


def tiny_jobs(fleet: Fleet, ids: list[str], store: Path) -> dict[str, float]:
    """E2E_JOBS on-demand backups in turn; created→finished and started→finished from the jobs."""
    storage = {"BackupStorage": {"StorageKind": "FileShare", "Path": str(store)}}
    picked = random.sample(ids, E2E_JOBS)
    client_ms: list[float] = []
    for pid in picked:
        t0 = time.perf_counter()
        fleet.call("POST", f"/Partitions/{pid}/$/Backup", json=storage)
        while True:
            info = fleet.call("GET", f"/Partitions/{pid}/$/GetBackupProgress").json()
            if info.get("BackupState") in ("Success", "Failure", "Timeout"):
                break
            time.sleep(0.02)
        client_ms.append((time.perf_counter() - t0) * 1000)
    rows = sql(
        fleet.catalog,
        "SELECT EXTRACT(EPOCH FROM finished_at - created_at) * 1000,"
        " EXTRACT(EPOCH FROM finished_at - started_at) * 1000, state"
        " FROM jobs WHERE partition_id = ANY(%s) AND NOT scheduled",
        picked,
    )
    e2e = [float(r[0]) for r in rows if r[2] == "Success"]
    agent = [float(r[1]) for r in rows if r[2] == "Success"]
    return {
        "ok": len(e2e),
        "e2e_p50_ms": statistics.median(e2e) if e2e else float("nan"),
        "e2e_p99_ms": pct(e2e, 99),
        "agent_p50_ms": statistics.median(agent) if agent else float("nan"),
        "client_p50_ms": statistics.median(client_ms),
    }


class TickSampler:
    """
    The rounds every replica ran during a phase, from its tick histogram.

    ``safehold_scheduler_tick_seconds`` is read from both replicas when the phase
    starts and when it ends (as Prometheus would scrape it, not several times a
    second, which would load the controllers); a percentile is the upper bound
    of the bucket it falls in.
    """

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.ticks: list[float] = []  # one entry per round: its bucket's upper bound

    def _buckets(self) -> dict[float, float]:
        total: dict[float, float] = {}
        with httpx.Client(headers=HEADERS, timeout=60) as c:
            for url in self.fleet.urls:
                try:
                    text = c.get(url + "/metrics").text
                except httpx.HTTPError:
                    continue
                for line in text.splitlines():
                    if line.startswith("safehold_scheduler_tick_seconds_bucket{"):
                        le = line.split('le="', 1)[1].split('"', 1)[0]
                        bound = float("inf") if le == "+Inf" else float(le)
                        total[bound] = total.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
        return total

    def __enter__(self) -> TickSampler:
        self._start = self._buckets()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._buckets()
        below = 0.0
        for bound in sorted(end):
            n = end[bound] - self._start.get(bound, 0.0) - below  # cumulative → this bucket
            self.ticks += [bound] * int(n)
            below += n


def reads(fleet: Fleet, ids_with_backups: list[str]) -> dict[str, dict[str, float]]:
    """p50/p99 of five reads, CLIENTS concurrent clients, READS_PER_CLIENT each, both replicas."""
    targets: dict[str, Callable[[], str]] = {
        "health": lambda: "/safehold/health",
        "health_summary": lambda: "/safehold/health/summary",
        "metrics": lambda: "/metrics",
        "GetBackups": lambda: f"/Partitions/{random.choice(ids_with_backups)}/$/GetBackups",
        "GetBackupProgress": lambda: (
            f"/Partitions/{random.choice(ids_with_backups)}/$/GetBackupProgress"
        ),
    }
    # Query parameters go in *params* only: httpx replaces a URL's query with them.
    params = {"health": {**V, "MaxResults": "100"}}
    out: dict[str, dict[str, float]] = {}
    for name, path in targets.items():
        query = params.get(name, V)
        times: list[float] = []
        errors = 0

        def client(
            k: int,
            path: Callable[[], str] = path,
            times: list[float] = times,
            query: dict[str, str] = query,
        ) -> None:
            nonlocal errors
            url = fleet.urls[k % 2]
            with httpx.Client(headers=HEADERS, timeout=60) as c:
                for _ in range(READS_PER_CLIENT):
                    t0 = time.perf_counter()
                    r = c.get(url + path(), params=query)
                    times.append((time.perf_counter() - t0) * 1000)
                    errors += r.status_code >= 400

        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(client, range(CLIENTS)))
        out[name] = {"p50_ms": pct(times, 50), "p99_ms": pct(times, 99), "errors": errors}
    return out


def done_between(catalog: str, t0: float, t1: float) -> int:
    rows = sql(
        catalog,
        "SELECT count(*) FROM jobs WHERE state = 'Success' AND kind = 'backup'"
        " AND finished_at >= to_timestamp(%s) AND finished_at < to_timestamp(%s)",
        t0,
        t1,
    )
    return int(rows[0][0])


def load(fleet: Fleet, window: float, *, with_reads: bool, profile: Path | None) -> dict[str, Any]:
    """Run the scheduled load for *window* seconds and measure it."""
    out: dict[str, Any] = {}
    spy: subprocess.Popen[bytes] | None = None
    with TickSampler(fleet) as sampler:
        time.sleep(min(20.0, window / 3))  # the queue and the agents get going
        t0, cpu0 = time.time(), fleet.cpu()
        if profile is not None and shutil.which("py-spy", path=str(Path(sys.executable).parent)):
            _, leader = fleet.leader()
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "--pid",
                    str(leader.popen.pid),
                    "--duration",
                    str(int(window)),
                    "--rate",
                    "50",
                    "--format",
                    "raw",
                    "--output",
                    str(profile),
                    "--nonblocking",
                    "--gil",  # only the thread holding the GIL: where the CPU goes
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        if with_reads:
            time.sleep(window / 3)
            have = [r[0] for r in sql(fleet.catalog, "SELECT DISTINCT partition_id FROM backups")]
            out["reads"] = reads(fleet, have)
        time.sleep(max(0.0, t0 + window - time.time()))
        t1, cpu1 = time.time(), fleet.cpu()
    done = done_between(fleet.catalog, t0, t1)
    if spy is not None:
        spy.wait(60)
    out.update(
        completed=done,
        per_minute=done * 60 / (t1 - t0),
        cpu_s=cpu1 - cpu0,
        cpu_ms_per_job=(cpu1 - cpu0) * 1000 / done if done else float("nan"),
        ticks=len(sampler.ticks),
        tick_p50_s=pct(sampler.ticks, 50),
        tick_p99_s=pct(sampler.ticks, 99),
        tick_max_s=max(sampler.ticks, default=float("nan")),
    )
    queued = sql(fleet.catalog, "SELECT count(*) FROM jobs WHERE state = 'Accepted'")
    never = sql(
        fleet.catalog,
        "SELECT count(*) FROM partitions p WHERE NOT EXISTS"
        " (SELECT 1 FROM backups b WHERE b.partition_id = p.partition_id)",
    )
    out["queued_at_end"], out["partitions_without_backup"] = int(queued[0][0]), int(never[0][0])
    return out


def run_size(n: int, args: argparse.Namespace, work: Path, profile: Path | None) -> dict[str, Any]:
    result: dict[str, Any] = {"partitions": n, "rounds": []}
    src = work / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "data.txt").write_text("tiny\n")
    store = work / "store"
    with database(n) as catalog:
        fleet = Fleet(work, catalog)
        try:
            fleet.start()
            fleet.start_agents(1)
            # A tiny directory, or (--source-wait) a dump that waits on its
            # server first, as pg_dump does: slots then have I/O to overlap.
            source = f"dir:{src}"
            if args.source_wait:
                source = f"command:sleep {args.source_wait}; cat {src / 'data.txt'}"
            ids, rate = register(fleet, n, source, args.api_register)
            result["register_per_s"] = rate
            print(f"[{n}] registered ({rate:.1f}/s by the API)", file=sys.stderr, flush=True)
            fleet.call("POST", "/BackupRestore/BackupPolicies/$/Create", json=policy(store))
            for r in range(args.rounds):
                rnd: dict[str, Any] = {"tiny": tiny_jobs(fleet, ids, store)}
                print(f"[{n}] tiny jobs {rnd['tiny']}", file=sys.stderr, flush=True)
                if r == 0:
                    for a in range(APPS):
                        fleet.call(
                            "POST",
                            f"/Applications/Fleet{a}/$/EnableBackup",
                            json={"BackupPolicyName": "fleet"},
                        )
                fleet.start_agents(1)
                rnd["slots1"] = load(
                    fleet, args.window, with_reads=True, profile=profile if r == 0 else None
                )
                print(f"[{n}] 4x1 {rnd['slots1']}", file=sys.stderr, flush=True)
                fleet.start_agents(4)
                rnd["slots4"] = load(fleet, args.window, with_reads=False, profile=None)
                print(f"[{n}] 4x4 {rnd['slots4']}", file=sys.stderr, flush=True)
                result["rounds"].append(rnd)
                if r + 1 < args.rounds:  # quiet again for the next round's tiny jobs
                    for a in range(APPS):
                        fleet.call("POST", f"/Applications/Fleet{a}/$/SuspendBackup")
                    _drain(fleet)
                    for a in range(APPS):
                        fleet.call("POST", f"/Applications/Fleet{a}/$/ResumeBackup")
        finally:
            fleet.stop()
    return result


def _drain(fleet: Fleet, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        q = sql(
            fleet.catalog,
            "SELECT count(*) FROM jobs WHERE state IN ('Accepted', 'BackupInProgress')",
        )
        if int(q[0][0]) == 0:
            return
        time.sleep(1)


def median_of(rounds: list[dict[str, Any]], *path: str) -> float:
    vals = []
    for r in rounds:
        v: Any = r
        for k in path:
            v = v[k]
        vals.append(float(v))
    return statistics.median(vals)


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        ("POST /safehold/partitions per second, 16 threads", ("register_per_s",), None),
        ("tick p50 (s), 4×1 slots", ("slots1", "tick_p50_s"), None),
        ("tick p99 (s), 4×1 slots", ("slots1", "tick_p99_s"), 1.0),
        ("tick max (s)", ("slots1", "tick_max_s"), None),
        ("controller CPU per completed job (ms), 4×1", ("slots1", "cpu_ms_per_job"), 10.0),
        ("controller CPU per completed job (ms), 4×4", ("slots4", "cpu_ms_per_job"), 10.0),
        ("tiny job created→finished p50 (ms)", ("tiny", "e2e_p50_ms"), 300.0),
        ("tiny job created→finished p99 (ms)", ("tiny", "e2e_p99_ms"), None),
        ("  of which on the agent, p50 (ms)", ("tiny", "agent_p50_ms"), None),
        ("backups completed / min, 4×1 slots", ("slots1", "per_minute"), None),
        ("backups completed / min, 4×4 slots", ("slots4", "per_minute"), None),
        ("jobs queued at the end of 4×4", ("slots4", "queued_at_end"), None),
    ]
    for name in ("health", "health_summary", "metrics", "GetBackups", "GetBackupProgress"):
        rows.append((f"{name} p50 (ms), 20 clients", ("slots1", "reads", name, "p50_ms"), None))
        rows.append((f"{name} p99 (ms), 20 clients", ("slots1", "reads", name, "p99_ms"), 300.0))
    sizes = [r["partitions"] for r in results]
    head = "| measure | " + " | ".join(f"N={n:,}" for n in sizes) + " | growth | target |"
    lines = [head, "|" + " --- |" * (len(sizes) + 3)]
    for label, path, target in rows:
        vals = []
        for r in results:
            vals.append(r[path[0]] if len(path) == 1 else median_of(r["rounds"], *path))
        growth = " → ".join(f"{v / vals[0]:.2f}×" for v in vals[1:]) if vals[0] else ""
        cells = " | ".join(f"{v:,.3g}" if v < 1000 else f"{v:,.0f}" for v in vals)
        lines.append(f"| {label} | {cells} | {growth} | {target if target else ''} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--partitions", default="100,1000,10000", help="fleet sizes, comma-separated")
    ap.add_argument("--rounds", type=int, default=1, help="measurement rounds per size (median)")
    ap.add_argument("--window", type=float, default=60, help="seconds of each load phase")
    ap.add_argument(
        "--api-register", type=int, default=200, help="partitions registered by the API"
    )
    ap.add_argument("--profile", action="store_true", help="py-spy the leader at the largest N")
    ap.add_argument(
        "--source-wait",
        type=float,
        default=0.0,
        help="seconds each backup's source waits before its bytes (a command: source)",
    )
    ap.add_argument("--out", type=Path, default=Path("bench/out/fleet.json"))
    ap.add_argument(
        "--table", type=Path, nargs="+", help="only print the table of earlier --out files"
    )
    args = ap.parse_args()
    if args.table:
        done = [r for f in args.table for r in json.loads(f.read_text())]
        print(table(sorted(done, key=lambda r: int(r["partitions"]))))
        return
    sizes = [int(x) for x in args.partitions.split(",") if x.strip()]
    results = []
    with tempfile.TemporaryDirectory(prefix="safehold-fleet-") as tmp:
        for n in sizes:
            work = Path(tmp) / f"n{n}"
            prof = (
                args.out.with_suffix(f".{n}.pyspy.txt")
                if args.profile and n == max(sizes)
                else None
            )
            results.append(run_size(n, args, work, prof))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
