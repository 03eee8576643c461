"""
The jobs table over SQLAlchemy Core: claims, fenced updates, sweeps and purges.

Every change after a job is created is a conditional update on its current state
(and, once an agent holds it, its attempt number): see ``update_if``. The reads
that run on every tick or claim go through the partial index on active jobs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from safehold.service import catalog as t
from safehold.service.model import ACTIVE_STATES, RUNNING_STATE, RUNNING_STATES, JobRecord
from safehold.service.sql_stores import Repo, built, id_batches, one_of

__all__ = ["JobRepo", "claim_update", "job_from_row"]


def job_from_row(row: Any) -> JobRecord:
    """A jobs row as a ``JobRecord``."""
    return JobRecord(
        id=row.id,
        partition_id=row.partition_id,
        kind=row.kind,
        state=row.state,
        scheduled=row.scheduled,
        created_at=row.created_at,
        deadline=row.deadline,
        params=json.loads(row.params),
        started_at=row.started_at,
        finished_at=row.finished_at,
        agent_id=row.agent_id,
        heartbeat_at=row.heartbeat_at,
        result=json.loads(row.result) if row.result else None,
        failure_code=row.failure_code,
        failure_message=row.failure_message,
        progress=json.loads(row.progress) if row.progress else {},
        attempt=row.attempt,
        incarnation=row.incarnation,
    )


class JobRepo(Repo):
    """
    Jobs, newest last.

    *on_work(n)* is told when *n* jobs may have become claimable: new accepted
    jobs, or a job that ended (its partition may have another queued). The unit
    of work turns it into wake-ups for long-polled claims (``work_signal``).
    """

    def __init__(
        self,
        conn: sa.Connection,
        on_work: Callable[[int], None] | None = None,
        *,
        wake_on_every_end: bool = True,
    ) -> None:
        super().__init__(conn)
        self._on_work = on_work or (lambda _n: None)
        self._every_end = wake_on_every_end or conn.dialect.name != "postgresql"

    def get(self, job_id: str) -> JobRecord | None:
        """Return one job."""
        q = built(self.conn, "jobs.get", _job_by_id)
        row = self.conn.execute(q, {"_id": job_id}).first()
        return None if row is None else job_from_row(row)

    def latest(
        self, partition_id: str, kinds: Iterable[str], *, scheduled: bool | None = None
    ) -> JobRecord | None:
        """Return the partition's newest job of one of *kinds* (only scheduled, or not)."""
        q = sa.select(t.jobs).where(
            t.jobs.c.partition_id == partition_id, t.jobs.c.kind.in_(list(kinds))
        )
        if scheduled is not None:
            q = q.where(t.jobs.c.scheduled == scheduled)
        row = self.conn.execute(
            q.order_by(t.jobs.c.created_at.desc(), t.jobs.c.id.desc()).limit(1)
        ).first()
        return None if row is None else job_from_row(row)

    def active(self, partition_id: str | None = None) -> list[JobRecord]:
        """Return the jobs that are accepted or running, oldest first."""
        q = sa.select(t.jobs).where(t.jobs.c.state.in_(ACTIVE_STATES)).order_by(t.jobs.c.created_at)
        if partition_id is not None:
            q = q.where(t.jobs.c.partition_id == partition_id)
        return [job_from_row(r) for r in self.conn.execute(q)]

    def save(self, j: JobRecord) -> None:
        """Insert or update a job."""
        values = _job_values(j)
        done = self.conn.execute(t.jobs.update().where(t.jobs.c.id == j.id).values(**values))
        if done.rowcount == 0:
            self.conn.execute(t.jobs.insert().values(id=j.id, **values))
        if j.state == "Accepted" or j.state not in ACTIVE_STATES:
            self._on_work(1)

    def insert_many(self, jobs: Sequence[JobRecord]) -> None:
        """Insert new jobs in one statement."""
        if jobs:
            self.conn.execute(t.jobs.insert(), [{"id": j.id, **_job_values(j)} for j in jobs])
            self._on_work(len(jobs))

    def update_if(self, j: JobRecord, *, states: Sequence[str], attempt: int | None) -> bool:
        """
        Write *j* only if the stored job is still in one of *states* (and on *attempt*).

        This is the fence every state change goes through: a sweep, a stale agent
        or a second controller cannot overwrite an outcome recorded meanwhile.
        When the job ends, waiting claims are woken if that can make work claimable:
        with *wake_on_every_end*, always; else (PostgreSQL) only if its partition
        has another job queued, which the update returns.
        """
        values = {"_id": j.id, "_states": list(states), **_job_values(j)}
        if attempt is None:
            q = built(self.conn, "jobs.update_in", _update_in)
        else:
            q, values["_attempt"] = built(self.conn, "jobs.update_if", _update_if), attempt
        row = self.conn.execute(q, values).first()
        if row is not None and j.state not in ACTIVE_STATES and (self._every_end or row.queued):
            self._on_work(1)
        return row is not None

    def claim_next(
        self, agent_id: str, incarnation: str | None, now: datetime, kinds: Sequence[str]
    ) -> JobRecord | None:
        """
        Take the oldest accepted job *agent_id* may run, or ``None``.

        A job may run when its partition has no other job running and is not
        pinned to another agent. One statement: an ``UPDATE`` of the row a
        subquery picks, which on PostgreSQL locks it with ``FOR UPDATE SKIP
        LOCKED``, so agents racing for work skip each other's rows instead of
        waiting; the update's own ``state = 'Accepted'`` is the final word.
        """
        q = built(self.conn, "jobs.claim_next", claim_update)
        values = {"_agent": agent_id, "_inc": incarnation, "_now": now, "_kinds": list(kinds)}
        taken = self.conn.execute(q, values).first()
        return None if taken is None else job_from_row(taken)

    def heartbeat(
        self,
        job_id: str,
        agent_id: str,
        attempt: int | None,
        now: datetime,
        progress: dict[str, Any],
    ) -> bool:
        """Record a running job's heartbeat, if it is still this agent's (and attempt's)."""
        values = {
            "_id": job_id,
            "_agent": agent_id,
            "heartbeat_at": now,
            "progress": json.dumps(progress),
        }
        if attempt is None:
            q = built(self.conn, "jobs.beat", _heartbeat)
        else:
            q, values["_attempt"] = built(self.conn, "jobs.beat_if", _heartbeat_if), attempt
        done = self.conn.execute(q, values)
        return bool(done.rowcount)

    def fail_incarnations(self, agent_id: str, keep: str, now: datetime) -> list[JobRecord]:
        """End as Failure the running jobs of *agent_id* held by a run other than *keep*."""
        c = t.jobs.c
        where = (
            c.agent_id == agent_id,
            c.state.in_(RUNNING_STATES),
            sa.or_(c.incarnation.is_(None), c.incarnation != keep),
        )
        rows = [job_from_row(r) for r in self.conn.execute(sa.select(t.jobs).where(*where))]
        self.conn.execute(
            t.jobs.update()
            .where(*where)
            .values(
                state="Failure",
                finished_at=now,
                failure_code="SAFEHOLD_E_AGENT_RESTARTED",
                failure_message=f"agent {agent_id} restarted while running this job",
            )
        )
        return rows

    def expired(self, now: datetime, silent_since: datetime) -> list[JobRecord]:
        """Return active jobs past their deadline, and running ones not heard of since then."""
        c = t.jobs.c
        q = sa.select(t.jobs).where(
            c.state.in_(ACTIVE_STATES),
            sa.or_(
                c.deadline < now,
                sa.and_(c.state.in_(RUNNING_STATES), c.heartbeat_at < silent_since),
            ),
        )
        return [job_from_row(r) for r in self.conn.execute(q)]

    def running_count(self) -> int:
        """Return how many jobs run now."""
        q = sa.select(sa.func.count()).select_from(t.jobs).where(t.jobs.c.state.in_(RUNNING_STATES))
        return int(self.conn.execute(q).scalar_one())

    def busy_partitions(self, partition_ids: Sequence[str]) -> set[str]:
        """Return which of *partition_ids* have a job accepted or running."""
        out: set[str] = set()
        for batch in id_batches(self.conn, partition_ids):
            q = sa.select(t.jobs.c.partition_id).where(
                t.jobs.c.state.in_(ACTIVE_STATES),
                one_of(self.conn, t.jobs.c.partition_id, batch),
            )
            out.update(r.partition_id for r in self.conn.execute(q))
        return out

    def purge_finished(self, before: datetime, limit: int) -> int:
        """Delete up to *limit* jobs that finished before *before*; return how many."""
        c = t.jobs.c
        ids = sa.select(c.id).where(c.finished_at < before).limit(limit).scalar_subquery()
        return int(self.conn.execute(t.jobs.delete().where(c.id.in_(ids))).rowcount or 0)

    def outcome_stats(self, kind: str) -> dict[str, tuple[int, float]]:
        """Per final state of *kind* jobs kept: how many, and their summed run seconds."""
        c = t.jobs.c
        if self.conn.dialect.name == "postgresql":
            secs: Any = sa.func.extract("epoch", c.finished_at - c.started_at)
        else:
            secs = (sa.func.julianday(c.finished_at) - sa.func.julianday(c.started_at)) * 86400.0
        q = (
            sa.select(c.state, sa.func.count(), sa.func.coalesce(sa.func.sum(secs), 0.0))
            .where(c.kind == kind, c.finished_at.is_not(None))
            .group_by(c.state)
        )
        return {state: (int(n), float(total)) for state, n, total in self.conn.execute(q)}

    def running_by_agent(self) -> list[JobRecord]:
        """Return the running jobs."""
        q = sa.select(t.jobs).where(t.jobs.c.state.in_(RUNNING_STATES))
        return [job_from_row(r) for r in self.conn.execute(q)]


def _job_values(j: JobRecord) -> dict[str, Any]:
    return {
        "partition_id": j.partition_id,
        "kind": j.kind,
        "state": j.state,
        "scheduled": j.scheduled,
        "created_at": j.created_at,
        "started_at": j.started_at,
        "finished_at": j.finished_at,
        "deadline": j.deadline,
        "agent_id": j.agent_id,
        "heartbeat_at": j.heartbeat_at,
        "params": json.dumps(j.params),
        "result": json.dumps(j.result) if j.result is not None else None,
        "failure_code": j.failure_code,
        "failure_message": j.failure_message,
        "progress": json.dumps(j.progress),
        "attempt": j.attempt,
        "incarnation": j.incarnation,
    }


# The statements of the per-job paths, built once (``sql_stores.built``).


def _job_by_id(_dialect: str) -> Any:
    return sa.select(t.jobs).where(t.jobs.c.id == sa.bindparam("_id"))


def _update_in(_dialect: str) -> Any:
    c, q = t.jobs.c, t.jobs.alias("q")
    states: Any = sa.bindparam("_states", expanding=True)
    # Whether the partition has a job queued behind this one (see update_if).
    queued = (
        sa.select(q.c.id)
        .where(q.c.partition_id == c.partition_id, q.c.state == "Accepted", q.c.id != c.id)
        .exists()
    )
    return (
        t.jobs.update()
        .where(c.id == sa.bindparam("_id"), c.state.in_(states))
        .returning(queued.label("queued"))
    )


def _update_if(dialect: str) -> Any:
    return _update_in(dialect).where(t.jobs.c.attempt == sa.bindparam("_attempt"))


def _heartbeat(_dialect: str) -> Any:
    c = t.jobs.c
    return t.jobs.update().where(
        c.id == sa.bindparam("_id"),
        c.agent_id == sa.bindparam("_agent"),
        c.state.in_(RUNNING_STATES),
    )


def _heartbeat_if(dialect: str) -> Any:
    return _heartbeat(dialect).where(t.jobs.c.attempt == sa.bindparam("_attempt"))


def claim_update(dialect: str) -> Any:
    """The claim's ``UPDATE … RETURNING`` of the job it takes (for ``sql_stores.built``)."""
    j, p, r = t.jobs.alias("j"), t.partitions, t.jobs.alias("r")
    agent: Any = sa.bindparam("_agent")
    busy = (
        sa.select(r.c.id)
        .where(r.c.partition_id == j.c.partition_id, r.c.state.in_(RUNNING_STATES))
        .exists()
    )
    pick = (
        sa.select(j.c.id)
        .join(p, p.c.partition_id == j.c.partition_id)
        .where(
            j.c.state == "Accepted",
            j.c.kind.in_(sa.bindparam("_kinds", expanding=True)),
            sa.or_(p.c.agent.is_(None), p.c.agent == agent),
            ~busy,
        )
        .order_by(j.c.created_at, j.c.id)
        .limit(1)
    )
    if dialect == "postgresql":
        pick = pick.with_for_update(of=j, skip_locked=True)
    c = t.jobs.c
    return (
        t.jobs.update()
        .where(c.id == pick.scalar_subquery(), c.state == "Accepted")
        .values(
            state=sa.case(RUNNING_STATE, value=c.kind),
            agent_id=agent,
            incarnation=sa.bindparam("_inc"),
            attempt=c.attempt + 1,
            started_at=sa.bindparam("_now"),
            heartbeat_at=sa.bindparam("_now"),
        )
        .returning(*t.jobs.c)
    )
