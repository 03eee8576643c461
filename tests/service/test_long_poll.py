"""
Long-polled claims: an agent's claim waits at the controller and wakes when work arrives.

Every wait here is shorter than ``RECHECK``, so a claim that returns the job did
so because it was woken, not because it looked again on its own.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from safehold.bootstrap import open_policy_storage
from safehold.core.policy import EntityRef
from safehold.core.work import ClaimRequest, WorkItem
from safehold.service import jobs, policies, protection
from safehold.service.catalog import open_catalog
from safehold.service.context import ServiceContext
from safehold.service.secrets import SecretBox
from safehold.service.uow import SqlUnitOfWork
from safehold.service.work_signal import RECHECK, PgWorkListener, WorkSignal
from safehold.testing import FakeEngine
from tests.service.catalogs import reset_pg
from tests.service.helpers import P1, add_partition, policy_doc

KEY = base64.urlsafe_b64encode(b"k" * 32)
WAIT = 3.0  # seconds: under RECHECK
assert WAIT < RECHECK


def _context(db: sa.Engine) -> ServiceContext:
    work = WorkSignal()
    return ServiceContext(
        uow=lambda: SqlUnitOfWork(db, work),
        secrets=SecretBox(KEY),
        open_storage=open_policy_storage,
        engine=FakeEngine(),
        work=work,
    )


class _Claim(threading.Thread):
    """A claim waiting in a thread, as the embedded agent's."""

    def __init__(self, ctx: ServiceContext, wait: float) -> None:
        super().__init__(daemon=True)
        self.ctx, self.wait = ctx, wait
        self.item: WorkItem | None = None

    def run(self) -> None:
        self.item = jobs.claim_waiting(self.ctx, "agent-1", ClaimRequest(WaitSeconds=self.wait))

    def until_waiting(self) -> None:
        for _ in range(500):
            if self.ctx.work.waiting:
                return
            threading.Event().wait(0.01)
        raise AssertionError("the claim never started waiting")


def _protect(ctx: ServiceContext, tmp_path: Path) -> None:
    add_partition(ctx, P1, tmp_path / "src")
    policies.create_policy(ctx, policy_doc("p", tmp_path / "store"))
    protection.enable_backup(ctx, EntityRef("Application", "fabric:/Shop"), "p")


@pytest.fixture
def sqlite_ctx(tmp_path: Path) -> Iterator[ServiceContext]:
    db = open_catalog(str(tmp_path / "catalog.sqlite"))
    yield _context(db)
    db.dispose()


def test_a_waiting_claim_gets_the_job_accepted_while_it_waits(
    sqlite_ctx: ServiceContext, tmp_path: Path
) -> None:
    ctx = sqlite_ctx
    _protect(ctx, tmp_path)
    claim = _Claim(ctx, WAIT)
    claim.start()
    claim.until_waiting()
    job = jobs.request_backup(ctx, P1)
    claim.join(30)
    assert claim.item is not None, "the claim was not woken by the new job"
    assert claim.item.JobId == job.id


def test_a_waiting_claim_with_nothing_to_do_answers_nothing(sqlite_ctx: ServiceContext) -> None:
    claim = _Claim(sqlite_ctx, 0.2)
    claim.start()
    claim.join(30)
    assert not claim.is_alive()
    assert claim.item is None


def test_draining_answers_waiting_claims_at_once(sqlite_ctx: ServiceContext) -> None:
    """At shutdown, a claim that could wait 20 s more answers at once (so shutdown is prompt)."""
    claim = _Claim(sqlite_ctx, 20.0)
    claim.start()
    claim.until_waiting()
    sqlite_ctx.work.close()
    claim.join(10)  # well before its 20 s
    assert not claim.is_alive()
    assert claim.item is None


def test_a_job_accepted_on_one_replica_wakes_a_claim_waiting_on_another(
    pg_database: str, tmp_path: Path
) -> None:
    """PostgreSQL: NOTIFY in the accepting transaction reaches the other replica's listener."""
    reset_pg(pg_database)
    db_a, db_b = open_catalog(pg_database), open_catalog(pg_database)
    a, b = _context(db_a), _context(db_b)
    listener = PgWorkListener(db_b, b.work)
    listener.start()
    try:
        _protect(a, tmp_path)
        assert listener.listening.wait(30)
        claim = _Claim(b, WAIT)
        claim.start()
        claim.until_waiting()
        job = jobs.request_backup(a, P1)
        claim.join(30)
        assert claim.item is not None, "replica b's claim was not woken by replica a's job"
        assert claim.item.JobId == job.id
    finally:
        listener.stop()
        db_a.dispose()
        db_b.dispose()


def test_a_wake_up_the_claimer_did_not_need_goes_to_the_next() -> None:
    signal = WorkSignal()
    first, second = signal.ticket(), signal.ticket()
    signal.notify(1)
    assert first.woken
    assert not second.woken
    first.release(got_work=True)  # it found a job on its own: the wake-up was spare
    assert second.woken
    third = signal.ticket()
    third.release(got_work=False)  # never woken: just leaves the queue
    signal.notify(1)
    assert not third.woken
    assert signal.waiting == 0


def test_a_fleet_wide_read_on_sqlite_never_holds_writers_up(tmp_path: Path) -> None:
    """The health view's read-only transaction takes no write lock: a request still writes."""
    db = open_catalog(str(tmp_path / "catalog.sqlite"))
    try:
        ctx = _context(db)
        ctx.read_uow = lambda: SqlUnitOfWork(db, read_only=True)
        add_partition(ctx, P1, tmp_path / "src")
        wrote = threading.Event()

        def write() -> None:
            with ctx.uow() as uow:
                uow.agents.seen("agent-1", ctx.clock())
                uow.commit()
            wrote.set()

        with ctx.reader() as uow:
            assert uow.partitions.brief()  # reading, transaction open
            writer = threading.Thread(target=write, daemon=True)
            writer.start()
            assert wrote.wait(10), "a write waited for a read-only transaction"
        writer.join(10)
    finally:
        db.dispose()
