"""
The agents' hot path, in as few statements as PostgreSQL allows.

- ``claim_job``: a claim with what the agent needs, the job, its partition and
  the partition's backups, in one statement whatever the catalog holds: the
  claim's ``UPDATE … RETURNING`` (``sql_jobs.claim_update``) as a data-modifying
  CTE, joined to the partition's row, with its backups aggregated as JSON (three
  statements on SQLite, which reads them one after the other);
- ``job_for_report``: the job an agent reports on, with its partition's row
  locked, in one statement (two on SQLite).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from safehold.service import catalog as t
from safehold.service.model import BackupBrief, Claimed, JobRecord, PartitionRecord
from safehold.service.sql_jobs import JobRepo, claim_update, job_from_row
from safehold.service.sql_partitions import PartitionRepo, partition_from_row
from safehold.service.sql_stores import BackupRepo, built

__all__ = ["claim_job", "job_for_report"]

_P = "p_"  # the prefix of the partition's columns in the joined row


def claim_job(
    conn: sa.Connection, agent_id: str, incarnation: str | None, now: datetime, kinds: Sequence[str]
) -> Claimed | None:
    """
    Claim the oldest job *agent_id* may run (``JobRepo.claim_next``) with what goes
    with it; ``None`` when there is none. A job whose partition was deleted
    meanwhile is claimed all the same and ``None`` returned: the sweep ends it.
    """
    values = {"_agent": agent_id, "_inc": incarnation, "_now": now, "_kinds": list(kinds)}
    if conn.dialect.name != "postgresql":
        job = JobRepo(conn).claim_next(agent_id, incarnation, now, kinds)
        p = PartitionRepo(conn).get(job.partition_id) if job is not None else None
        if job is None or p is None:
            return None
        mine = BackupRepo(conn).list(partition_id=job.partition_id)
        return Claimed(job, p, [BackupBrief.of(b) for b in mine])
    row = conn.execute(built(conn, "jobs.claim_with_context", _claim_with_context), values).first()
    if row is None or row._mapping[f"{_P}partition_id"] is None:
        return None
    backups = [
        BackupBrief(bid, sid, datetime.fromisoformat(at), kind == "Full", parent)
        for bid, sid, at, kind, parent in row._mapping["_mine"] or []
    ]
    return Claimed(job_from_row(row), partition_from_row(_Prefixed(row._mapping)), backups)


def job_for_report(
    conn: sa.Connection, job_id: str, lock_partition: Callable[[str], PartitionRecord | None]
) -> tuple[JobRecord, PartitionRecord | None] | None:
    """
    The job *job_id* and its partition, read under the partition's lock (``None``:
    no such job). *lock_partition* is the unit of work's, used where one statement
    cannot do both (SQLite, or a partition deleted meanwhile).
    """
    if conn.dialect.name == "postgresql":
        row = conn.execute(built(conn, "jobs.for_report", _job_for_report), {"_id": job_id}).first()
        if row is not None:
            return job_from_row(row), partition_from_row(_Prefixed(row._mapping))
    job = JobRepo(conn).get(job_id)
    return None if job is None else (job, lock_partition(job.partition_id))


class _Prefixed:
    """The partition's columns of the joined row, by their own names."""

    def __init__(self, mapping: Any) -> None:
        self._m = mapping

    def __getattr__(self, name: str) -> Any:
        return self._m[_P + name]


def _job_for_report(_dialect: str) -> Any:
    j, p = t.jobs, t.partitions
    return (
        sa.select(j, *[c.label(_P + c.name) for c in p.c])
        .join(p, p.c.partition_id == j.c.partition_id)
        .where(j.c.id == sa.bindparam("_id"))
        .with_for_update(of=p)
    )


def _claim_with_context(dialect: str) -> Any:
    claimed = claim_update(dialect).cte("claimed")
    p, b = t.partitions, t.backups
    mine = (
        sa.select(
            sa.func.json_agg(
                sa.func.json_build_array(
                    b.c.backup_id, b.c.snapshot_id, b.c.created_at, b.c.backup_type, b.c.parent_id
                )
            )
        )
        .where(b.c.partition_id == claimed.c.partition_id)
        .scalar_subquery()
    )
    return sa.select(
        claimed, *[c.label(_P + c.name) for c in p.c], mine.label("_mine")
    ).select_from(claimed.outerjoin(p, p.c.partition_id == claimed.c.partition_id))
