"""
Two controllers on one PostgreSQL catalog in one process: agents and schedulers racing.

Each "controller" is a ``ServiceContext`` with its own engine (its own connection
pool) over the same database; agents are threads calling the service's use
cases, as the embedded agent does. The fake engine stands in for the data work.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from safehold.agent.runner import Agent
from safehold.bootstrap import open_policy_storage
from safehold.core.policy import EntityRef
from safehold.core.work import ClaimRequest, Outcome, WorkItem
from safehold.service import jobs, partitions, policies, protection, scheduler
from safehold.service.catalog import open_catalog
from safehold.service.context import ServiceContext
from safehold.service.errors import JobNotRunning
from safehold.service.leader import key_locks_for
from safehold.service.local_link import LocalLink
from safehold.service.secrets import SecretBox
from safehold.service.uow import SqlUnitOfWork
from safehold.testing import FakeClock, FakeEngine
from tests.service.catalogs import reset_pg
from tests.service.helpers import policy_doc

KEY = base64.urlsafe_b64encode(b"k" * 32)
APP = "fabric:/Fleet"
N = 200


def _context(url: str, clock: FakeClock, engine: FakeEngine) -> tuple[ServiceContext, sa.Engine]:
    db = open_catalog(url)
    ctx = ServiceContext(
        uow=lambda: SqlUnitOfWork(db),
        secrets=SecretBox(KEY),
        open_storage=open_policy_storage,
        engine=engine,
        clock=clock,
        key_locks=key_locks_for(db),
        schedule_spread=0.0,
    )
    return ctx, db


@dataclass
class Fleet:
    """Two controllers' contexts, the shared fake engine and clock, and a catalog engine."""

    a: ServiceContext
    b: ServiceContext
    engine: FakeEngine
    clock: FakeClock
    db: sa.Engine


@pytest.fixture
def two(request: pytest.FixtureRequest, pg_database: str, tmp_path: Path) -> Iterator[Fleet]:
    """Two controllers over one fresh PostgreSQL catalog; N partitions (or the param), a policy."""
    n = getattr(request, "param", N)
    reset_pg(pg_database)
    clock, engine = FakeClock(), FakeEngine()
    a, db_a = _context(pg_database, clock, engine)
    b, db_b = _context(pg_database, clock, engine)
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.txt").write_text("tiny")
    for i in range(n):
        partitions.register_partition(
            a if i % 2 else b,
            partitions.PartitionCreate(APP, f"{APP}/Svc", str(uuid.UUID(int=i + 1)), f"dir:{src}"),
        )
    doc = policy_doc("fleet", tmp_path / "store")
    doc["Schedule"] = {"ScheduleKind": "FrequencyBased", "Interval": "PT1M"}
    policies.create_policy(a, doc)
    protection.enable_backup(b, EntityRef("Application", APP), "fleet")
    try:
        yield Fleet(a, b, engine, clock, db_a)
    finally:
        db_a.dispose()
        db_b.dispose()


class _CountingLink(LocalLink):
    """The embedded agent's link, noting every job it was handed."""

    def __init__(self, ctx: ServiceContext, agent_id: str, claimed: list[str]) -> None:
        super().__init__(ctx, agent_id)
        self._claimed = claimed

    def claim(self, request: ClaimRequest) -> WorkItem | None:
        item = super().claim(request)
        if item is not None:
            self._claimed.append(item.JobId)
        return item

    def complete_and_claim(
        self, job_id: str, outcome: Outcome, request: ClaimRequest
    ) -> WorkItem | None:
        item = super().complete_and_claim(job_id, outcome, request)
        if item is not None:
            self._claimed.append(item.JobId)
        return item


def _race(targets: list[threading.Thread]) -> None:
    for t in targets:
        t.start()
    for t in targets:
        t.join(120)
        assert not t.is_alive()


def _jobs_table(db: sa.Engine) -> list[tuple[str, str, str, bool, int]]:
    """Every job row: id, partition, state, scheduled, attempt (read straight from the catalog)."""
    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT id, partition_id, state, scheduled, attempt FROM jobs")
        ).all()
    return [(r[0], r[1], r[2], bool(r[3]), int(r[4])) for r in rows]


@pytest.mark.parametrize("two", [100], indirect=True)
def test_agents_of_two_controllers_claim_each_job_once_and_every_backup_is_recorded(
    two: Fleet,
) -> None:
    """Eight agents on two controllers drain 100 jobs: each claimed once, each backup recorded."""
    a, b, engine = two.a, two.b, two.engine
    n = 100
    for i in range(n):
        jobs.request_backup(a if i % 2 else b, str(uuid.UUID(int=i + 1)))
    claimed: list[str] = []
    barrier = threading.Barrier(8)

    def agent(ctx: ServiceContext, name: str) -> None:
        runner = Agent(
            _CountingLink(ctx, name, claimed),
            engine=engine,
            open_storage=ctx.open_storage,
            clock=ctx.clock,
        )
        barrier.wait()
        while runner.run_while_busy():
            pass

    _race(
        [threading.Thread(target=agent, args=(a if k % 2 else b, f"agent-{k}")) for k in range(8)]
    )
    assert len(claimed) == n
    assert len(set(claimed)) == n  # no job handed out twice
    rows = _jobs_table(two.db)
    assert Counter(state for _, _, state, _, _ in rows) == {"Success": n}
    assert all(attempt == 1 for *_, attempt in rows)
    stored = {snap.id for repo in engine.repos.values() for snap, _ in repo}
    with a.uow() as uow:
        recorded = {b.snapshot_id for b in uow.backups.list()}
    assert len(stored) == n
    assert stored == recorded


@pytest.mark.parametrize("two", [4], indirect=True)
def test_a_stale_attempt_cannot_overwrite_the_recorded_outcome(
    two: Fleet,
) -> None:
    """Ten claims through two controllers at once: one wins; another agent's report is refused."""
    a, b = two.a, two.b
    pid = str(uuid.UUID(int=1))
    jobs.request_backup(a, pid)
    got: list[WorkItem | None] = []
    barrier = threading.Barrier(10)

    def take(ctx: ServiceContext, name: str) -> None:
        barrier.wait()
        got.append(jobs.claim(ctx, name))

    _race([threading.Thread(target=take, args=(a if k % 2 else b, f"x{k}")) for k in range(10)])
    items = [g for g in got if g is not None]
    assert len(items) == 1
    item = items[0]
    with pytest.raises(JobNotRunning, match="not running on agent"):
        jobs.complete(b, "someone-else", item.JobId, Outcome.failure("X", "not mine", attempt=1))
    with pytest.raises(JobNotRunning, match="stale"):
        jobs.complete(
            b, _agent_of(b, item.JobId), item.JobId, Outcome.failure("X", "old", attempt=0)
        )
    jobs.complete(a, _agent_of(a, item.JobId), item.JobId, Outcome.failure("X", "boom", attempt=1))
    # The same report again, through the other controller: acknowledged, nothing changes.
    jobs.complete(b, _agent_of(b, item.JobId), item.JobId, Outcome.failure("X", "boom", attempt=1))
    [(_, _, state, _, attempt)] = [r for r in _jobs_table(two.db) if r[0] == item.JobId]
    assert (state, attempt) == ("Failure", 1)


def _agent_of(ctx: ServiceContext, job_id: str) -> str:
    with ctx.uow() as uow:
        job = uow.jobs.get(job_id)
    assert job is not None
    assert job.agent_id is not None
    return job.agent_id


def test_two_schedulers_ticking_at_once_take_each_slot_once(
    two: Fleet,
) -> None:
    """Two leaders by mistake, two slots: exactly one job per partition per slot."""
    a, b, engine, clock = two.a, two.b, two.engine, two.clock
    for slot in range(2):
        created: list[int] = []
        barrier = threading.Barrier(2)

        def tick(
            ctx: ServiceContext, barrier: threading.Barrier = barrier, created: list[int] = created
        ) -> None:
            barrier.wait()
            created.append(len(scheduler.tick(ctx)))

        _race([threading.Thread(target=tick, args=(c,)) for c in (a, b)])
        assert sum(created) == N, (slot, created)
        # Agents on both controllers finish the slot's jobs before the next one.
        runners = [
            Agent(LocalLink(c, f"r{k}"), engine=engine, open_storage=c.open_storage, clock=clock)
            for k, c in enumerate((a, b, a, b))
        ]

        def drain(r: Agent) -> None:
            while r.run_once():
                pass

        _race([threading.Thread(target=drain, args=(r,)) for r in runners])
        clock.advance(minutes=1)
    rows = _jobs_table(two.db)
    per_partition = Counter(pid for _, pid, _, scheduled, _ in rows if scheduled)
    assert len(per_partition) == N
    assert set(per_partition.values()) == {2}
    assert Counter(state for _, _, state, _, _ in rows) == {"Success": 2 * N}
    with a.uow() as uow:
        assert len(uow.backups.list()) == 2 * N
