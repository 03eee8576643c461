"""
A job's life after it is accepted: claimed by an agent, heartbeats, completion, sweeps.

Every step is a conditional update through the catalog (``JobStore.update_if``),
so two controllers, a sweep and a late agent can all act at once and the first
recorded outcome stands:

- ``claim`` takes one accepted job with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL)
  and bumps its ``attempt``, the fencing token every later report must carry;
- a claim with a new agent *incarnation* fails at once the jobs the agent's
  earlier run held (it restarted; they will never finish);
- ``heartbeat`` and ``complete`` apply only to the job's current attempt, and
  repeating a ``complete`` that was already recorded is acknowledged unchanged;
- ``sweep`` ends jobs past their deadline (``Timeout``) or whose agent went
  silent (``Failure``), each conditional on the state it saw.

A controller restart changes nothing here: accepted jobs stay queued, running
ones keep running and report to whichever replica answers.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from safehold.core.policy import PolicyError
from safehold.core.snapshot import Epoch, format_time, parse_time
from safehold.core.work import (
    JOB_KINDS,
    ClaimRequest,
    Heartbeat,
    KnownBackup,
    Outcome,
    PartitionInfo,
    WorkItem,
)
from safehold.service import drills, group_points
from safehold.service.context import ServiceContext
from safehold.service.errors import JobNotRunning
from safehold.service.model import (
    RUNNING_STATES,
    BackupBrief,
    BackupOutcome,
    BackupRecord,
    JobRecord,
    PartitionRecord,
    backup_id_for,
    backup_location,
)
from safehold.service.uow import UnitOfWork
from safehold.service.work_signal import MAX_WAIT, RECHECK

__all__ = [
    "claim",
    "claim_waiting",
    "complete",
    "complete_and_claim",
    "heartbeat",
    "purge_finished",
    "sweep",
    "wait_for",
]

log = logging.getLogger("safehold.jobs")

PURGE_BATCH = 5000
#: A replica records an agent's claim in its row at most this often.
SEEN_EVERY = timedelta(seconds=2)


def claim(
    ctx: ServiceContext, agent_id: str, request: ClaimRequest | None = None
) -> WorkItem | None:
    """
    Give *agent_id* the oldest accepted job it may run, or ``None``.

    Costs a constant number of statements whatever the fleet's size. The work
    item holds what the agent needs, the storage's secrets included (agents talk
    to the controller over authenticated HTTP(S)).
    """
    req = request or ClaimRequest()
    kinds = [k for k in (req.Kinds if req.Kinds is not None else JOB_KINDS) if k in JOB_KINDS]
    now = ctx.clock()
    noted = ctx.agents_seen.get(agent_id)
    if noted is not None and noted[0] == req.Incarnation and now - noted[1] < SEEN_EVERY:
        # This replica wrote the agent's row a moment ago: an idle agent's
        # claims (and a busy one's slots) need not rewrite it every time.
        before = req.Incarnation
    else:
        # The agent's row is written in a transaction of its own: held through the
        # claim below, its lock would queue the agent's other slots and heartbeats.
        with ctx.uow() as uow:
            before = uow.agents.seen(agent_id, now, req.Incarnation)
            uow.commit()
        ctx.agents_seen[agent_id] = (req.Incarnation, now)
    with ctx.uow() as uow:
        if req.Incarnation is not None and before != req.Incarnation:
            for old in uow.jobs.fail_incarnations(agent_id, req.Incarnation, now):
                log.warning("job %s failed: agent %s restarted", old.id, agent_id)
                if old.kind == "backup":
                    uow.partitions.record_backup_outcome(
                        old.partition_id,
                        state="Failure",
                        failure=f"SAFEHOLD_E_AGENT_RESTARTED: agent {agent_id} restarted",
                        good_at=None,
                    )
        if ctx.max_running_jobs and uow.jobs.running_count() >= ctx.max_running_jobs:
            uow.commit()
            return None
        got = uow.claim_job(agent_id, req.Incarnation, now, kinds) if kinds else None
        uow.commit()
    if got is None:
        return None
    extra: dict[str, Any] = {}
    if got.job.kind == "backup":
        # What the agent would otherwise look for among every snapshot of a
        # repository the fleet shares: the partition's own backups.
        if got.backups:
            newest = max(got.backups, key=lambda b: b.created_at)
            extra["previous_snapshot"] = newest.snapshot_id
        if got.job.params.get("retention"):
            extra["known"] = _known(got.backups)
    return _work_item(ctx, got.job, got.partition, extra)


def _known(backups: list[BackupBrief]) -> list[dict[str, Any]]:
    """The partition's catalogued backups, as ``KnownBackup`` (retention on the agent)."""
    snapshot_of = {b.backup_id: b.snapshot_id for b in backups}
    return [
        KnownBackup(
            SnapshotId=b.snapshot_id,
            Time=format_time(b.created_at),
            Full=b.full,
            ParentSnapshotId=snapshot_of.get(b.parent_id) if b.parent_id else None,
        ).model_dump()
        for b in backups
    ]


def wait_for(request: ClaimRequest) -> float:
    """How long a claim may wait for work: what the agent asked, at most ``MAX_WAIT``."""
    return min(max(request.WaitSeconds or 0.0, 0.0), MAX_WAIT)


def claim_waiting(ctx: ServiceContext, agent_id: str, request: ClaimRequest) -> WorkItem | None:
    """
    ``claim``, waiting in this thread up to ``wait_for(request)`` seconds for work.

    Wakes when a job is accepted or ends (``ctx.work``), and looks again every
    ``RECHECK`` seconds whatever happens; returns at once when the controller
    stops. The API's claim route does the same with ``await``.
    """
    deadline = time.monotonic() + wait_for(request)
    while True:
        ticket = ctx.work.ticket()
        item = None
        try:
            item = claim(ctx, agent_id, request)
            left = deadline - time.monotonic()
            if item is not None or left <= 0 or ctx.work.closed:
                return item
            ticket.wait_blocking(min(left, RECHECK))
        finally:
            ticket.release(item is not None)


def _work_item(
    ctx: ServiceContext, job: JobRecord, p: PartitionRecord, extra: dict[str, Any]
) -> WorkItem:
    storage = job.params.get("storage")
    params = {k: v for k, v in job.params.items() if k != "storage"} | extra
    return WorkItem(
        JobId=job.id,
        Kind=job.kind,
        Attempt=job.attempt,
        Deadline=format_time(job.deadline),
        Partition=PartitionInfo(
            PartitionId=p.partition_id,
            ApplicationName=p.application,
            ServiceName=p.service,
            Source=p.source,
            RestoreTo=p.restore_to,
            Hooks=p.hooks.to_json() if p.hooks else None,
            Kind=p.key.kind,
            LowKey=p.key.low_key,
            HighKey=p.key.high_key,
            Name=p.key.name,
        ),
        Storage=None if storage is None else ctx.secrets.open_storage(storage),
        Params=params,
    )


def heartbeat(ctx: ServiceContext, agent_id: str, job_id: str | None, beat: Heartbeat) -> None:
    """
    Record that *agent_id* is alive, with the progress of its job.

    Raises:
        JobNotRunning: the job is not running on this agent (and attempt) any more;
            the agent should stop working on it.
    """
    progress = {k: v for k, v in beat.Progress.items() if isinstance(v, int | str | None)}
    with ctx.uow() as uow:
        now = ctx.clock()
        uow.agents.seen(agent_id, now)
        if job_id is not None and not uow.jobs.heartbeat(
            job_id, agent_id, beat.Attempt, now, progress
        ):
            raise JobNotRunning(f"job {job_id} is not running on agent {agent_id}")
        uow.commit()


def complete(ctx: ServiceContext, agent_id: str, job_id: str, outcome: Outcome) -> JobRecord:
    """
    Record the end of a job as its agent reports it; safe to repeat.

    A backup that finished after its job was ended (by a timeout, say) is still
    recorded, so that no stored backup is unknown to the catalog; the job keeps
    the state it was ended with.

    Raises:
        PolicyError: a successful backup without its Snapshot, or a state:
            partition's outcome without Epoch and Lsn.
        JobNotRunning: the job is not this agent's, or the attempt is stale.
    """
    with ctx.uow() as uow:
        found = uow.job_for_report(job_id)
        if found is None or found[0].agent_id != agent_id:
            raise JobNotRunning(f"job {job_id} is not running on agent {agent_id}")
        job, p = found
        if outcome.Attempt is not None and outcome.Attempt != job.attempt:
            raise JobNotRunning(
                f"job {job_id} is on attempt {job.attempt}, not {outcome.Attempt}: "
                "this report is stale"
            )
        if job.kind == "backup" and outcome.State == "Success" and outcome.Snapshot is None:
            raise PolicyError("a successful backup must report its Snapshot")
        if job.state not in RUNNING_STATES:
            _late(uow, job, p, outcome, ctx.clock())
            uow.commit()
            return job
        attempt, was = job.attempt, job.state
        _apply(uow, job, p, outcome, ctx.clock())
        if not uow.jobs.update_if(job, states=[was], attempt=attempt):
            raise JobNotRunning(f"job {job_id} changed while its outcome was recorded")
        uow.commit()
        return job


def complete_and_claim(
    ctx: ServiceContext, agent_id: str, job_id: str, outcome: Outcome, request: ClaimRequest
) -> WorkItem | None:
    """
    ``complete``, then ``claim`` without waiting: the agent's slot is free again.

    Two transactions: the outcome is recorded (and committed) whatever the claim
    finds. Raises as ``complete`` does, and then claims nothing.
    """
    complete(ctx, agent_id, job_id, outcome)
    return claim(ctx, agent_id, request.model_copy(update={"WaitSeconds": None}))


def _late(
    uow: UnitOfWork, job: JobRecord, p: PartitionRecord | None, outcome: Outcome, now: datetime
) -> None:
    """An outcome for a job that has ended already: a repeat, or a backup finishing late."""
    if (
        outcome.State == "Success"
        and job.kind == "backup"
        and p is not None
        and outcome.Snapshot is not None
        and uow.backups.get(backup_id_for(outcome.Snapshot.Id)) is None
    ):
        params = {**job.params, **(_reported(p, outcome) or {})}
        _record_backup(uow, JobRecord(**{**job.__dict__, "params": params}), p, outcome)
        uow.partitions.save(p)
        log.warning("job %s had ended as %s; its late backup is recorded", job.id, job.state)
    elif outcome.State == "Success" and job.kind == "group-backup":
        # As above, for a group: its points are catalogued (a repeat records nothing new).
        group_points.record_outcome(uow, job, outcome, now)


def _apply(
    uow: UnitOfWork, job: JobRecord, p: PartitionRecord | None, outcome: Outcome, now: datetime
) -> None:
    job.finished_at = now
    recorded = False  # the backup's outcome went with the partition's row
    if outcome.State == "Success" and p is not None:
        job.state = "Success"
        reported = _reported(p, outcome)
        if reported is not None and job.kind == "backup":
            # A state: partition's agent is the store: its epoch and LSN are the truth.
            job.params = {**job.params, **reported}
        if job.kind == "backup":
            job.result = _record_backup(uow, job, p, outcome)
        elif job.kind == "restore" and reported is None:
            # A restore is a data loss: the partition enters a new epoch.
            p.epoch = Epoch(p.epoch.data_loss_number + 1, p.epoch.configuration_number)
        elif job.kind == "dataloss":
            job.result = dict(outcome.Result or {})
        elif job.kind == "clean":
            uow.backups.delete(b.backup_id for b in uow.backups.list(partition_id=p.partition_id))
        if reported is not None:
            p.epoch, p.lsn = Epoch(*reported["epoch"]), reported["lsn"]
        good_at = parse_time(outcome.Snapshot.Time) if outcome.Snapshot else None
        done = BackupOutcome("Success", None, good_at) if job.kind == "backup" else None
        uow.partitions.save(p, done)
        recorded = done is not None
    else:
        err = outcome.Error
        job.state = "Failure"
        job.failure_code = err.Code if err else "FABRIC_E_BACKUPCOPIER_UNEXPECTED_ERROR"
        job.failure_message = (err.Message if err else "") or "the agent reported a failure"
    _record_by_kind(uow, job, outcome, now)
    if job.kind == "backup" and not recorded:
        uow.partitions.record_backup_outcome(
            job.partition_id,
            state=job.state,
            failure=f"{job.failure_code}: {job.failure_message}",
            good_at=None,
        )


def _record_by_kind(uow: UnitOfWork, job: JobRecord, outcome: Outcome, now: datetime) -> None:
    """What a drill, a data loss or a group job adds to the catalog beside the job's state."""
    if job.kind == "drill":  # what the drill measured goes on its run (service.drills)
        drills.record_outcome(uow, job, outcome, now)
    elif job.kind == "dataloss":  # SF's fire drill, in the drill history too
        drills.record_data_loss(uow, job, outcome, now)
    elif job.kind in ("group-backup", "group-restore"):  # members' backups, the point
        group_points.record_outcome(uow, job, outcome, now)
        if job.params.get("drill_id"):  # a group drill, in the anchor's drill history
            drills.record_outcome(uow, job, outcome, now)


def _reported(p: PartitionRecord, outcome: Outcome) -> dict[str, Any] | None:
    """
    The epoch, LSN and chain a ``state:`` partition's agent reported, as job params.

    Other partitions get theirs from the controller, so this is None for them.

    Raises:
        PolicyError: a state: partition's outcome lacks a valid Epoch or Lsn.
    """
    if not p.source.startswith("state:"):
        return None
    epoch, lsn = outcome.Epoch, outcome.Lsn
    if epoch is None or len(epoch) != 2 or min(epoch) < 0 or lsn is None or lsn < 0:
        raise PolicyError("a state: partition's agent must report Epoch [dl, cfg] and Lsn")
    out: dict[str, Any] = {"epoch": list(epoch), "lsn": lsn}
    if outcome.BackupType is not None:
        out["backup_type"] = outcome.BackupType
        incremental = outcome.BackupType == "Incremental"
        parent = outcome.ParentSnapshot
        out["parent_id"] = backup_id_for(parent) if incremental and parent else None
        out["chain_id"] = None  # the parent's, found when the backup is recorded
    return out


def _chain_of_parent(uow: UnitOfWork, parent_id: str | None) -> str | None:
    parent = uow.backups.get(parent_id) if parent_id else None
    return parent.chain_id if parent else None


def _record_backup(
    uow: UnitOfWork, job: JobRecord, p: PartitionRecord, outcome: Outcome
) -> dict[str, Any]:
    snap = outcome.Snapshot
    assert snap is not None
    params = job.params
    backup_id = backup_id_for(snap.Id)
    created = parse_time(snap.Time)
    location = backup_location(p.application, p.service, p.partition_id, created)
    rec = BackupRecord(
        backup_id=backup_id,
        snapshot_id=snap.Id,
        partition_id=p.partition_id,
        application=p.application,
        service=p.service,
        backup_type=params["backup_type"],
        chain_id=params["chain_id"] or _chain_of_parent(uow, params["parent_id"]) or backup_id,
        parent_id=params["parent_id"],
        location=location,
        epoch=Epoch(*params["epoch"]),
        lsn=params["lsn"],
        created_at=created,
        size_bytes=snap.Size,
        storage=params["storage"],
        key=p.key,
    )
    uow.backups.add(rec)  # a no-op if a repeated report recorded it already
    removed = set(outcome.Removed)
    if removed:
        uow.backups.delete(
            b.backup_id
            for b in uow.backups.list(partition_id=p.partition_id)
            if b.snapshot_id in removed
        )
    p.lsn = max(p.lsn, params["lsn"])  # the caller saves p
    return {"BackupId": backup_id, "BackupLocation": location, "Size": rec.size_bytes}


def sweep(ctx: ServiceContext) -> list[JobRecord]:
    """
    End the jobs past their deadline (Timeout) and those whose agent went silent (Failure).

    Reads only the expired jobs (an index on active jobs); each end is
    conditional on the state and attempt the sweep saw.
    """
    ended = []
    with ctx.uow() as uow:
        now = ctx.clock()
        for job in uow.jobs.expired(now, now - ctx.agent_timeout):
            was, attempt = job.state, job.attempt
            if now > job.deadline:
                job.state, job.failure_code = "Timeout", "FABRIC_E_TIMEOUT"
                job.failure_message = (
                    f"the {job.kind} did not finish by its deadline {format_time(job.deadline)}"
                    + (f" (agent {job.agent_id})" if job.agent_id else " (no agent took it)")
                )
            else:
                seen = job.heartbeat_at or job.started_at or job.created_at
                job.state, job.failure_code = "Failure", "SAFEHOLD_E_AGENT_LOST"
                job.failure_message = (
                    f"agent {job.agent_id} disappeared: no heartbeat since {format_time(seen)}"
                )
            job.finished_at = now
            if uow.jobs.update_if(job, states=[was], attempt=attempt):
                ended.append(job)
                if job.kind == "backup":
                    uow.partitions.record_backup_outcome(
                        job.partition_id,
                        state=job.state,
                        failure=f"{job.failure_code}: {job.failure_message}",
                        good_at=None,
                    )
        uow.commit()
    return ended


def purge_finished(ctx: ServiceContext) -> int:
    """Delete finished jobs older than ``ctx.job_retention``, in batches; return how many."""
    total = 0
    while True:
        with ctx.uow() as uow:
            n = uow.jobs.purge_finished(ctx.clock() - ctx.job_retention, PURGE_BATCH)
            uow.commit()
        total += n
        if n < PURGE_BATCH:
            return total
