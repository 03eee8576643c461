"""
A claim with what the agent needs: the job, its partition and the partition's backups.

On PostgreSQL this is one statement, whatever the catalog holds: the claim's
``UPDATE … RETURNING`` (``sql_jobs.claim_update``) as a data-modifying CTE,
joined to the partition's row, with the partition's backups aggregated as JSON.
Three statements fewer a job than reading them one after the other, which is
what SQLite does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from safehold.service import catalog as t
from safehold.service.model import BackupBrief, Claimed
from safehold.service.sql_jobs import JobRepo, claim_update, job_from_row
from safehold.service.sql_partitions import PartitionRepo, partition_from_row
from safehold.service.sql_stores import BackupRepo, built

__all__ = ["claim_job"]

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


class _Prefixed:
    """The partition's columns of the joined row, by their own names."""

    def __init__(self, mapping: Any) -> None:
        self._m = mapping

    def __getattr__(self, name: str) -> Any:
        return self._m[_P + name]


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
