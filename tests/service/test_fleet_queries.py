"""
Health, metrics and a scheduler tick cost a number of catalog statements that does not grow with N.

Statements are counted with SQLAlchemy's ``before_cursor_execute`` event on the
catalog's engine, for a small and a larger fleet: health and metrics on SQLite
and PostgreSQL, the scheduler's ticks on PostgreSQL.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import generate_latest

from safehold.agent.runner import Agent
from safehold.api.app import create_app
from safehold.api.deps import TokenStore
from safehold.bootstrap import open_policy_storage
from safehold.core.policy import EntityRef
from safehold.service import health, jobs, partitions, policies, protection, scheduler
from safehold.service.catalog import open_catalog
from safehold.service.context import ServiceContext
from safehold.service.leader import key_locks_for
from safehold.service.local_link import LocalLink
from safehold.service.secrets import SecretBox
from safehold.service.uow import SqlUnitOfWork
from safehold.service.work_signal import WorkSignal
from safehold.testing import FakeClock, FakeEngine
from tests.service.catalogs import reset_pg
from tests.service.helpers import policy_doc

KEY = base64.urlsafe_b64encode(b"k" * 32)
TOKEN = "fleet-reader-token"
#: Statements a tick may send on PostgreSQL per batch of due partitions, whatever
#: the batch's size (10 were measured for 10 and for a batch of 250; one per
#: partition would be over 250). A tick of n due partitions runs
#: ceil(n / scheduler.BATCH) batches.
STEADY_MAX = 20


def batches(n: int) -> int:
    """The batches a tick of *n* due partitions runs."""
    return -(-n // scheduler.BATCH)


APP = "fabric:/Count"


@dataclass
class Counted:
    """A context over a catalog whose statements are counted."""

    ctx: ServiceContext
    db: sa.Engine
    clock: FakeClock
    statements: list[str]

    def count(self, action: Callable[[], Any]) -> int:
        """Run *action*; return how many SQL statements it sent."""
        before = len(self.statements)
        action()
        return len(self.statements) - before


@contextmanager
def counted(url: str) -> Iterator[Counted]:
    """A context over the catalog at *url*, counting its statements."""
    db = open_catalog(url)
    statements: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        del conn, cursor, args
        statements.append(statement)

    sa.event.listen(db, "before_cursor_execute", note)
    clock = FakeClock()
    ctx = ServiceContext(
        uow=lambda: SqlUnitOfWork(db),
        secrets=SecretBox(KEY),
        open_storage=open_policy_storage,
        engine=FakeEngine(),
        clock=clock,
        key_locks=key_locks_for(db),
        schedule_spread=0.0,
    )
    try:
        yield Counted(ctx, db, clock, statements)
    finally:
        db.dispose()


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Counted]:
    """An empty catalog (SQLite or PostgreSQL) whose statements are counted."""
    with counted(catalog_url) as c:
        yield c


@pytest.fixture
def pg_catalog(pg_database: str) -> Iterator[Counted]:
    """
    An empty PostgreSQL catalog whose statements are counted.

    The scheduler's batching is for the fleet's database: on the embedded SQLite
    catalog it takes slots one update each (in-process, and one controller).
    """
    reset_pg(pg_database)
    with counted(pg_database) as c:
        yield c


def grow(c: Counted, src: Path, first: int, last: int) -> None:
    """Register partitions number *first* to *last* - 1 under the application."""
    for i in range(first, last):
        partitions.register_partition(
            c.ctx,
            partitions.PartitionCreate(APP, f"{APP}/Svc", str(uuid.UUID(int=i + 1)), f"dir:{src}"),
        )


def enable(c: Counted, tmp_path: Path, interval: str) -> None:
    doc = policy_doc("count", tmp_path / "store")
    doc["Schedule"] = {"ScheduleKind": "FrequencyBased", "Interval": interval}
    policies.create_policy(c.ctx, doc)
    protection.enable_backup(c.ctx, EntityRef("Application", APP), "count")


def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.txt").write_text("tiny")
    return src


def drain(c: Counted) -> None:
    agent = Agent(
        LocalLink(c.ctx, "drain"),
        engine=c.ctx.engine,
        open_storage=c.ctx.open_storage,
        clock=c.clock,
    )
    while agent.run_once():
        pass


def scrape(c: Counted) -> None:
    """Render /metrics as the route does, from a fresh app (so no cached view is reused)."""
    app = create_app(c.ctx, TokenStore({TOKEN: "reader"}))
    assert b"safehold_partitions" in generate_latest(app.state.registry)


def test_health_and_metrics_cost_the_same_statements_for_10_and_300_partitions(
    catalog: Counted, tmp_path: Path
) -> None:
    """The fleet view and /metrics: as many statements for 300 partitions as for 10."""
    src = source(tmp_path)
    grow(catalog, src, 0, 10)
    enable(catalog, tmp_path, "PT1M")
    scheduler.tick(catalog.ctx)
    drain(catalog)  # some finished jobs and backups for the outcome and bytes figures
    small = (
        catalog.count(lambda: health.partition_health(catalog.ctx)),
        catalog.count(lambda: scrape(catalog)),
    )
    grow(catalog, src, 10, 300)
    catalog.clock.advance(minutes=1)
    scheduler.tick(catalog.ctx)
    drain(catalog)
    assert len(health.partition_health(catalog.ctx)) == 300
    large = (
        catalog.count(lambda: health.partition_health(catalog.ctx)),
        catalog.count(lambda: scrape(catalog)),
    )
    assert small == large
    assert small[0] > 0  # counted at all


def ticks_for(c: Counted, tmp_path: Path, n: int) -> tuple[int, int, int]:
    """
    Statements of three ticks of *n* partitions: the first after backup is
    enabled (every partition reschedules and, with no spread, is backed up at
    once), a steady one an hour later (every partition due, n backups accepted),
    and a catch-up three hours after that (every partition a whole period late:
    its one catch-up is deferred to its next slot).
    """
    grow(c, source(tmp_path), 0, n)
    c.clock.advance(hours=1)
    enable(c, tmp_path, "PT1H")
    report = scheduler.TickReport()
    first = c.count(lambda: scheduler.tick(c.ctx, report))
    assert (report.rescheduled, report.created) == (n, n)
    drain(c)
    c.clock.advance(hours=1)
    report = scheduler.TickReport()
    steady = c.count(lambda: scheduler.tick(c.ctx, report))
    assert (report.due, report.created) == (n, n)
    drain(c)
    c.clock.advance(hours=3)
    report = scheduler.TickReport()
    catch_up = c.count(lambda: scheduler.tick(c.ctx, report))
    assert (report.deferred, report.created) == (n, 0)
    return first, steady, catch_up


@pytest.mark.parametrize("n", [10, 300])
def test_a_steady_tick_costs_the_same_bounded_statements_for_10_and_300_due(
    pg_catalog: Counted, tmp_path: Path, n: int
) -> None:
    """A tick accepting 10 or 300 backups sends at most STEADY_MAX statements a batch."""
    first, steady, _ = ticks_for(pg_catalog, tmp_path, n)
    assert first <= (STEADY_MAX + 10) * batches(n), first
    assert steady <= STEADY_MAX * batches(n), steady


def test_a_catch_up_tick_costs_a_bounded_number_of_statements_for_300(
    pg_catalog: Counted, tmp_path: Path
) -> None:
    """The first tick after enabling backup on 300 overdue partitions: not one statement each."""
    _, _, catch_up = ticks_for(pg_catalog, tmp_path, 300)
    assert catch_up <= (STEADY_MAX + 10) * batches(300), catch_up


@pytest.mark.parametrize("capped", [False, True])
def test_an_ended_job_wakes_waiting_claims_only_when_that_can_make_work_claimable(
    pg_catalog: Counted, tmp_path: Path, capped: bool
) -> None:
    """
    Without a fleet-wide cap, a job that ends with nothing queued behind it on its
    partition frees no work: its completion sends no NOTIFY. With a cap it may
    let a waiting claim through, and does.
    """
    c = pg_catalog
    work = WorkSignal(capped=capped)
    ctx = replace(
        c.ctx, uow=lambda: SqlUnitOfWork(c.db, work), work=work, max_running_jobs=capped * 8
    )
    grow(c, source(tmp_path), 0, 1)
    enable(c, tmp_path, "PT1H")
    jobs.request_backup(ctx, str(uuid.UUID(int=1)))
    agent = Agent(
        LocalLink(ctx, "a"), engine=ctx.engine, open_storage=ctx.open_storage, clock=c.clock
    )
    before = len(c.statements)
    assert agent.run_once()
    notifies = [q for q in c.statements[before:] if "pg_notify" in q]
    assert len(notifies) == (1 if capped else 0)
    with ctx.uow() as uow:
        [backup] = uow.backups.list()
    assert backup.partition_id == str(uuid.UUID(int=1))
