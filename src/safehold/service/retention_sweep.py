"""
Retention on Service Fabric's timer, not only after a backup.

SF's backup service runs each policy's retention on a timer (``RetentionTimer``):
at once when the policy never swept or its last sweep did not complete, then
every interval after the last completion (hourly, or daily for a duration of a
day or more; ``core.retention_basic.sweep_due``). It covers every partition whose
effective policy it is, suspended ones included (that is how a suspended
partition's old backups still go), and skips partitions being cleaned up.

The leader runs it (``sweep``) in a loop of its own. Per due policy it lists the
policy's storage once, applies SF's algorithm to each partition's backups,
forgets what goes (newest first, SF's deletion order), lists again, and drops
from the catalog exactly the backups that are no longer in storage: a snapshot
that could not be deleted (an object lock holds it) stays catalogued. Nothing
here runs inside a catalog transaction. The times are the leader's own: after a
failover the new leader sweeps once more, which deletes nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from safehold.core.errors import SafeholdError
from safehold.core.policy import BackupPolicy, effective_config
from safehold.core.retention_basic import BackupItem, apply_basic_retention, sweep_due
from safehold.core.snapshot import Snapshot
from safehold.service.context import ServiceContext
from safehold.service.model import backup_id_for
from safehold.service.policies import load_policy
from safehold.service.storages import storage_key

__all__ = ["RetentionTimes", "sweep"]

log = logging.getLogger("safehold.retention")


@dataclass
class RetentionTimes:
    """When each policy's sweep last started and completed, on this replica."""

    started: dict[str, datetime] = field(default_factory=dict)
    completed: dict[str, datetime] = field(default_factory=dict)


def _items(snaps: list[Snapshot], partition_id: str) -> list[BackupItem]:
    return [
        BackupItem(
            s.id,
            s.time,
            s.backup_type == "full",
            s.parent if s.backup_type == "incremental" else None,
        )
        for s in snaps
        if s.partition is not None and s.partition.partition_id == partition_id
    ]


def _due_policies(ctx: ServiceContext, times: RetentionTimes) -> dict[str, BackupPolicy]:
    now = ctx.clock()
    out: dict[str, BackupPolicy] = {}
    with ctx.uow() as uow:
        for doc in uow.policies.list():
            name = str(doc.get("Name"))
            try:
                policy = load_policy(ctx, uow, name)
            except SafeholdError as exc:
                log.warning("policy %s cannot be read: %s", name, exc.message)
                continue
            rule = policy.retention
            if rule is not None and sweep_due(
                rule.duration,
                last_started=times.started.get(name),
                last_completed=times.completed.get(name),
                now=now,
            ):
                out[name] = policy
    return out


def _members(ctx: ServiceContext, name: str) -> list[str]:
    """The partitions whose effective policy is *name* (suspended ones too), not being cleaned."""
    with ctx.uow() as uow:
        mappings = uow.mappings.all()
        parts = uow.partitions.list()
        cleaning = {
            j.partition_id for j in uow.jobs.active() if j.kind == "clean"
        }  # SF skips partitions mid-cleanup
    return [
        p.partition_id
        for p in parts
        if effective_config(p.chain(), mappings, set()).policy_name == name
        and p.partition_id not in cleaning
    ]


def _sweep_policy(ctx: ServiceContext, policy: BackupPolicy) -> int:
    """Apply *policy*'s retention to its partitions; return how many backups went."""
    rule = policy.retention
    assert rule is not None
    members = _members(ctx, policy.name)
    if not members:
        return 0
    store = ctx.check_storage(policy.storage)  # a short retry budget: tried again next round
    try:
        snaps = ctx.engine.snapshots(store)
        now = ctx.clock()
        remove: list[str] = []
        for pid in members:
            decision = apply_basic_retention(
                _items(snaps, pid), duration=rule.duration, minimum=rule.minimum, now=now
            )
            remove += decision.remove  # newest first within a partition: SF's order
        if not remove:
            return 0
        ctx.engine.forget(store, remove)
        left = {s.id for s in ctx.engine.snapshots(store)}
    finally:
        store.close()
    gone = [sid for sid in remove if sid not in left]
    key = storage_key(policy.storage)
    with ctx.uow() as uow:
        ids = {backup_id_for(sid) for sid in gone}
        uow.backups.delete(
            b.backup_id
            for pid in members
            for b in uow.backups.list(partition_id=pid)
            if b.backup_id in ids and storage_key(b.storage) == key
        )
        uow.commit()
    return len(gone)


def sweep(ctx: ServiceContext, times: RetentionTimes) -> dict[str, int]:
    """
    Run the retention of every policy whose SF timer is due; return how many backups each removed.

    A policy whose storage fails is left not completed, so it is tried again at
    the next call; the others go on.
    """
    removed: dict[str, int] = {}
    for name, policy in _due_policies(ctx, times).items():
        times.started[name] = ctx.clock()
        try:
            removed[name] = _sweep_policy(ctx, policy)
        except SafeholdError as exc:
            log.warning("retention of policy %s did not complete: %s", name, exc.message)
            continue
        times.completed[name] = ctx.clock()
        if removed[name]:
            log.info("retention of policy %s removed %d backups", name, removed[name])
    return removed
