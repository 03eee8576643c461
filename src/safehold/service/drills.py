"""
Restore drills, the use cases: drill policies, attachments, runs, history, scheduling.

A drill is a job of kind ``drill`` (``core.work.DrillParams``): an agent restores
the chosen backup into a sandbox, runs the validators and reports the measured
RTO, the achieved RPO and each validator's result (``agent.drill``). The
controller keeps each drill as a ``DrillRun`` and each partition's newest one in
``DrillState`` (one row: health and metrics read drills in one query).

``tick`` is the scheduler of drills; the leader's loop calls it every round
(after the backup scheduler). A drill job occupies its partition like any other
job: one job per partition at a time.

Errors::

    DrillPolicyNotFound   404 SAFEHOLD_E_DRILL_POLICY_NOT_FOUND
    DrillNotFound         404 SAFEHOLD_E_DRILL_NOT_FOUND
    DrillNotEnabled       404 SAFEHOLD_E_DRILL_NOT_ENABLED
    DrillPolicyExists     409 SAFEHOLD_E_DRILL_POLICY_EXISTS
    DrillPolicyInUse      409 SAFEHOLD_E_DRILL_POLICY_IN_USE
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime

from safehold.core.drill import DrillPolicy, DrillVerdict, judge_drills, parse_drill_policy
from safehold.core.errors import SafeholdError
from safehold.core.policy import EntityRef, PolicyError, effective_config, next_due
from safehold.core.snapshot import format_time
from safehold.core.work import Outcome
from safehold.service.context import ServiceContext
from safehold.service.drill_errors import (
    DrillNotEnabled,
    DrillNotFound,
    DrillPolicyExists,
    DrillPolicyInUse,
    DrillPolicyNotFound,
)
from safehold.service.drill_errors import load_policy as _load
from safehold.service.drill_policies import (
    attach,
    create_policy,
    delete_policy,
    detach,
    get_policy,
    list_policies,
    update_policy,
)
from safehold.service.drill_records import DrillRun, DrillState
from safehold.service.entities import get_partition
from safehold.service.errors import BackupInProgress, BackupNotFound
from safehold.service.model import (
    ACTIVE_STATES,
    BackupRecord,
    JobRecord,
    PartitionRecord,
    PartitionView,
    backup_id_for,
)
from safehold.service.uow import UnitOfWork

__all__ = [
    "DrillNotEnabled",
    "DrillNotFound",
    "DrillPolicyExists",
    "DrillPolicyInUse",
    "DrillPolicyNotFound",
    "attach",
    "create_policy",
    "delete_policy",
    "detach",
    "get_drill",
    "get_policy",
    "history",
    "judge_partitions",
    "list_policies",
    "record_data_loss",
    "record_outcome",
    "request_drill",
    "tick",
    "update_policy",
]

log = logging.getLogger("safehold.drills")

MAX_HISTORY = 1000
#: The sources a drill can restore into a sandbox: agents drill files, dumps,
#: PostgreSQL base backups and MariaDB physical backups, the databases in a scratch
#: instance (``agent.drill``); a store drills its own partition (``state.drill``),
#: and only a store takes a ``DataLoss`` drill.
DRILLABLE = ("dir:", "command:", "postgres:", "mariadb:", "state:")


def _fits(p: PartitionView, policy: DrillPolicy) -> bool:
    """Whether *policy*'s kind of drill can run on *p* (a DataLoss drill needs a store)."""
    return policy.kind == "Restore" or p.source.startswith("state:")


# --- Policies ---------------------------------------------------------------------


def _effective(
    p: PartitionView, mappings: dict[EntityRef, tuple[str, datetime]]
) -> tuple[str, datetime] | None:
    """The drill policy that applies to *p* and since when, or None (or not drillable)."""
    if not p.source.startswith(DRILLABLE):
        return None
    names = {e: name for e, (name, _) in mappings.items()}
    eff = effective_config(p.chain(), names, set())
    if eff.policy_name is None:
        return None
    level = next(e for e in p.chain() if e.kind == eff.policy_from)
    return eff.policy_name, mappings[level][1]


# --- Runs ----------------------------------------------------------------------------


def _choose(
    backups: list[BackupRecord], policy: DrillPolicy, backup_id: str | None
) -> BackupRecord:
    if backup_id is not None:
        found = [b for b in backups if b.backup_id == backup_id]
        if not found:
            raise BackupNotFound(f"backup {backup_id} is not a catalogued backup of the partition")
        return found[0]
    if not backups:
        raise BackupNotFound("the partition has no backup to drill")
    return secrets.choice(backups) if policy.backup == "Random" else backups[-1]


def _new_run(
    uow: UnitOfWork,
    p: PartitionRecord,
    policy: DrillPolicy,
    backup: BackupRecord,
    *,
    trigger: str,
    now: datetime,
) -> DrillRun:
    """Store an Accepted drill run and its job; advance the partition's drill state."""
    run = DrillRun(
        id=str(uuid.uuid4()),
        partition_id=p.partition_id,
        policy_name=policy.name,
        job_id=str(uuid.uuid4()),
        trigger=trigger,
        state="Accepted",
        created_at=now,
        backup_id=backup.backup_id,
        backup_time=backup.created_at,
        rto_objective=policy.rto.total_seconds() if policy.rto else None,
        rpo_objective=policy.rpo.total_seconds() if policy.rpo else None,
    )
    assert run.job_id is not None
    job = JobRecord(
        id=run.job_id,
        partition_id=p.partition_id,
        kind="drill",
        state="Accepted",
        scheduled=trigger == "Schedule",
        created_at=now,
        deadline=now + policy.timeout,
        params={
            "storage": backup.storage,
            "drill_id": run.id,
            "snapshot_id": backup.snapshot_id,
            "backup_id": backup.backup_id,
            "backup_time": format_time(backup.created_at),
            "validators": [v.to_json() for v in policy.validators],
            "sandbox_dir": policy.sandbox_dir,
            "epoch": [backup.epoch.data_loss_number, backup.epoch.configuration_number],
            "lsn": backup.lsn,
            "drill_kind": policy.kind,
            "mode": policy.data_loss_mode,
        },
    )
    uow.jobs.save(job)
    uow.drills.add_run(run)
    st = uow.drills.state(p.partition_id) or DrillState(p.partition_id)
    st.last_run_id, st.last_started_at = run.id, now
    uow.drills.save_state(st)
    return run


def request_drill(
    ctx: ServiceContext,
    partition_id: str,
    *,
    policy_name: str | None = None,
    backup_id: str | None = None,
) -> DrillRun:
    """
    Start a drill of one partition now, with its drill policy (or *policy_name*).

    Raises:
        EntityNotFound, DrillNotEnabled, DrillPolicyNotFound, BackupNotFound,
        BackupInProgress (another job of the partition is running).
    """
    with ctx.uow() as uow:
        p = get_partition(uow, partition_id)
        if not p.source.startswith(DRILLABLE):
            kind = p.source.split(":", 1)[0]
            raise PolicyError(f"drills of {kind}: partitions are not supported yet")
        uow.lock_partition(p.partition_id)
        if policy_name is None:
            eff = _effective(p, uow.drills.mappings())
            if eff is None:
                raise DrillNotEnabled(
                    f"no drill policy applies to partition {p.partition_id}: attach one or name one"
                )
            policy_name = eff[0]
        policy = _load(uow, policy_name)
        if not _fits(p, policy):
            raise PolicyError(
                f"drill policy {policy.name!r} induces a data loss: only state: partitions take it"
            )
        busy = uow.jobs.active(p.partition_id)
        if busy:
            raise BackupInProgress(
                f"a {busy[0].kind} job of partition {p.partition_id} is {busy[0].state}; "
                "drill it later"
            )
        backups = uow.backups.list(partition_id=p.partition_id)
        backup = _choose(backups, policy, backup_id)
        run = _new_run(uow, p, policy, backup, trigger="Manual", now=ctx.clock())
        uow.commit()
    return run


def get_drill(ctx: ServiceContext, drill_id: str) -> DrillRun:
    """One drill run."""
    with ctx.uow() as uow:
        run = uow.drills.get_run(drill_id)
    if run is None:
        raise DrillNotFound(f"no drill {drill_id}")
    return run


def history(
    ctx: ServiceContext, partition_id: str | None = None, limit: int = 30
) -> list[DrillRun]:
    """Drill runs, newest first (of one partition, or of all)."""
    if not 1 <= limit <= MAX_HISTORY:
        raise PolicyError(f"the limit must be 1 to {MAX_HISTORY}")
    with ctx.uow() as uow:
        if partition_id is not None:
            partition_id = get_partition(uow, partition_id).partition_id
        return uow.drills.runs(partition_id, limit)


def _finish(uow: UnitOfWork, run: DrillRun) -> None:
    """Store a finished run and make it its partition's drill state."""
    uow.drills.save_run(run)
    st = uow.drills.state(run.partition_id) or DrillState(run.partition_id)
    if (
        st.last_run_id not in (None, run.id)
        and st.last_finished_at is not None
        and run.finished_at is not None
        and run.finished_at < st.last_finished_at
    ):
        return  # an older drill reporting late: the newer outcome stands
    st.last_run_id = run.id
    st.last_finished_at = run.finished_at
    st.last_state = run.state
    st.last_failure = run.failure
    if run.rto_seconds is not None:  # a failed drill measured no RTO: the last one stands
        st.rto_seconds = run.rto_seconds
    if run.rpo_seconds is not None:
        st.rpo_seconds = run.rpo_seconds
    st.objectives_met = run.objectives_met
    if run.state == "Success":
        st.last_success_at = run.finished_at
    uow.drills.save_state(st)


def record_outcome(uow: UnitOfWork, job: JobRecord, outcome: Outcome, now: datetime) -> None:
    """
    Record a drill job's outcome on its run (called when the job completes).

    *job.state* is already the job's final state; the outcome's ``Result`` holds
    what the agent measured, on success and on failure alike.
    """
    run = uow.drills.get_run(str(job.params.get("drill_id", "")))
    if run is None or run.finished:
        return
    result = dict(outcome.Result or {})
    run.state = "Success" if job.state == "Success" else "Failure"
    run.finished_at = now
    run.agent_id = job.agent_id
    run.result = result
    run.rto_seconds = _number(result.get("RtoSeconds"))
    run.rpo_seconds = _number(result.get("RpoSeconds"))
    if run.state != "Success":
        run.failure = f"{job.failure_code}: {job.failure_message}"
    _finish(uow, run)


def record_data_loss(
    uow: UnitOfWork, job: JobRecord, outcome: Outcome, now: datetime
) -> DrillRun | None:
    """
    Record a finished StartDataLoss operation (a ``dataloss`` job) as a ``DataLoss`` drill run.

    For the job lifecycle to call when a ``dataloss`` job completes (*job.state*
    final), so SF's fire drills land in the drill history, metrics and health
    like a ``DataLoss`` drill policy's. The RTO is the job's run time as the
    controller saw it (claim to report); the RPO is the restored backup's age at
    the job's start. A loss that nothing restored (no ``on_data_loss`` hook, no
    AutoRestoreOnDataLoss) is a failed drill: the partition lost its state.
    """
    if uow.drills.get_run(job.id) is not None:
        return None  # recorded already (a repeated report)
    result = {"Kind": "DataLoss", **dict(outcome.Result or {})}
    restored = result.get("RestoredBackupId")
    backup = uow.backups.get(backup_id_for(str(restored))) if restored else None
    started = job.started_at or job.created_at
    run = DrillRun(
        id=job.id,
        partition_id=job.partition_id,
        policy_name=None,
        job_id=job.id,
        trigger="StartDataLoss",
        state="Success",
        created_at=job.created_at,
        backup_id=backup.backup_id if backup else "",
        backup_time=backup.created_at if backup else started,
        finished_at=now,
        agent_id=job.agent_id,
        result=result,
    )
    if job.state != "Success":
        run.state = "Timeout" if job.state == "Timeout" else "Failure"
        run.failure = f"{job.failure_code}: {job.failure_message}"
    elif not restored:
        run.state = "Failure"
        run.failure = (
            "SAFEHOLD_E_DRILL: the data loss was induced and nothing restored the partition "
            "(no on_data_loss hook, no AutoRestoreOnDataLoss)"
        )
    else:
        run.rto_seconds = round((now - started).total_seconds(), 3)
        if backup is not None:
            run.rpo_seconds = round((started - backup.created_at).total_seconds(), 3)
    uow.drills.add_run(run)
    _finish(uow, run)
    return run


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# --- Scheduling ----------------------------------------------------------------------


def _reconcile(uow: UnitOfWork, now: datetime) -> None:
    """End the runs whose job ended without an outcome (timeout, lost agent, purge)."""
    for run in uow.drills.active_runs():
        job = uow.jobs.get(run.job_id) if run.job_id else None
        if job is not None and job.state in ACTIVE_STATES:
            if run.state == "Accepted" and job.state != "Accepted":
                run.state = "InProgress"
                run.agent_id = job.agent_id
                uow.drills.save_run(run)
            continue
        run.state = "Timeout" if job is not None and job.state == "Timeout" else "Failure"
        run.finished_at = job.finished_at if job is not None and job.finished_at else now
        run.agent_id = job.agent_id if job is not None else run.agent_id
        run.failure = (
            f"{job.failure_code}: {job.failure_message}"
            if job is not None and job.failure_code
            else "the drill's job ended without reporting an outcome"
        )
        _finish(uow, run)


def tick(ctx: ServiceContext) -> list[DrillRun]:
    """
    Start the drills that are due; return them. Called by the leader each round.

    A partition's first drill is due as soon as a drill policy applies and it has
    a backup; each next one at the policy's schedule after the last one started.
    A partition busy with another job is tried again at the next tick.
    """
    started: list[DrillRun] = []
    with ctx.uow() as uow:
        now = ctx.clock()
        _reconcile(uow, now)
        mappings = uow.drills.mappings()
        if not mappings:
            uow.commit()
            return []
        policies: dict[str, DrillPolicy] = {}
        for doc in uow.drills.list_policies():
            try:
                policies[doc["Name"]] = parse_drill_policy(doc)
            except SafeholdError as exc:
                log.warning("drill policy %s cannot be used: %s", doc.get("Name"), exc.message)
        states = uow.drills.states()
        due: list[tuple[PartitionView, DrillPolicy]] = []
        for p in uow.partitions.brief():  # the few columns judged here, for every partition
            eff = _effective(p, mappings)
            policy = policies.get(eff[0]) if eff else None
            if eff is None or policy is None or not _fits(p, policy):
                continue
            st = states.get(p.partition_id)
            last = st.last_started_at if st else None
            when = next_due(policy.schedule, last) if last else eff[1]
            if when <= now:
                due.append((p, policy))
        busy = uow.jobs.busy_partitions([p.partition_id for p, _ in due])
        free = [(p, pol) for p, pol in due if p.partition_id not in busy]
        backups = uow.backups.of_partitions([p.partition_id for p, _ in free])
        for brief, policy in free:
            mine = backups.get(brief.partition_id, [])
            full = uow.partitions.get(brief.partition_id) if mine else None
            if full is None:
                continue  # nothing to drill yet: its first backup comes first
            chosen = _choose(mine, policy, None)
            run = _new_run(uow, full, policy, chosen, trigger="Schedule", now=now)
            started.append(run)
        uow.commit()
    if started:
        log.info("drills: %d started", len(started))
    return started


# --- Health --------------------------------------------------------------------------


def judge_partitions(
    uow: UnitOfWork, partitions: Sequence[PartitionView], now: datetime
) -> tuple[dict[str, DrillVerdict], dict[str, DrillState]]:
    """
    Each partition's drill verdict (only those a drill policy applies to) and drill state.

    Costs three queries whatever the number of partitions.
    """
    mappings = uow.drills.mappings()
    states = uow.drills.states()
    if not mappings:
        return {}, states
    policies: dict[str, DrillPolicy] = {}
    for doc in uow.drills.list_policies():
        try:
            policies[doc["Name"]] = parse_drill_policy(doc)
        except SafeholdError:
            continue
    out: dict[str, DrillVerdict] = {}
    for p in partitions:
        eff = _effective(p, mappings)
        if eff is None:
            continue
        name, since = eff
        if name in policies and not _fits(p, policies[name]):
            continue
        if name not in policies:
            out[p.partition_id] = DrillVerdict(
                "Error", f"drill policy {name!r} cannot be read", "unreadable"
            )
            continue
        st = states.get(p.partition_id) or DrillState(p.partition_id)
        out[p.partition_id] = judge_drills(
            now=now,
            window=policies[name].window,
            since=since,
            last_state=st.last_state,
            last_failure=st.last_failure,
            last_success_at=st.last_success_at,
            objectives_met=st.objectives_met,
        )
    return out, states
