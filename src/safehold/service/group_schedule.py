"""
Scheduled consistency groups: the leader's tick starts each group's due backup
and due drill, the very jobs ``POST /safehold/groups/{name}/backup`` and
``…/drill`` start (``service.groups``: ``backup_storage`` + ``accept_backup``,
``sync_points`` + ``accept_restore``).

A group's ``BackupSchedule`` and ``DrillSchedule`` (SF schedules, set with its
definition) each keep their next slot in an indexed column
(``consistency_groups.next_backup_at`` / ``next_drill_at``), spread by the
group's name as partitions' slots are by their id (``core.slots``) and anchored
when the schedule was set. A tick reads only the groups that are due, then for
each one:

1. a read: a busy group (see below) lets its slot pass without storage work;
2. outside any transaction, the storage work a request does first (the backup's
   repository made ready; the drill's points synced from the storage);
3. one write transaction takes the slot *conditionally* on the slot it read
   (so of two controllers ticking at once only one takes it) and, in the same
   transaction, accepts the job. A busy group (a group job, or any job of a
   member, accepted or running: members' scheduled backups too, which a request
   would queue behind) gets no job: its slot is taken all the same, so it is
   tried again at its next slot, and the reason is kept (``ScheduleNotes``).

However many slots were missed, one job is started and the next slot is the
first one after now. A slot that cannot be used (no point yet to drill, an
unknown member, a storage that differs between members) passes with its reason
kept, as a busy one does. As for partitions (``service.scheduler``), a busy group
whose next slot is more than ``BUSY_SLOT_MAX`` away is tried again within
``BUSY_RETRY`` instead, and one whose storage cannot be reached after
``STORAGE_RETRY``: a daily group whose slot falls while a member's own hourly
backup runs would otherwise be refused every day.

The slots are ``GroupRepo`` methods, not ``GroupStore`` protocol ones: on the
in-memory fake catalog the tick does nothing (the controller runs on SQL).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from safehold.core.errors import ConflictError, NotFoundError, SafeholdError, UsageError
from safehold.core.policy import StorageSpec
from safehold.core.slots import jitter
from safehold.service import groups
from safehold.service.catalog import CatalogError, CatalogUnavailable
from safehold.service.context import ServiceContext
from safehold.service.errors import RepositoryBusy
from safehold.service.group_model import next_slot, slot_key
from safehold.service.model import JobRecord
from safehold.service.scheduler import BUSY_RETRY, BUSY_SLOT_MAX, STORAGE_RETRY
from safehold.service.sql_groups import GroupRepo, SlotKind
from safehold.service.storages import StorageUnreachable
from safehold.service.uow import UnitOfWork
from safehold.storage.errors import StorageError

__all__ = ["BATCH", "TIMEOUT", "GroupTickReport", "tick"]

log = logging.getLogger("safehold.scheduler")

#: Groups read per kind and tick (the next tick takes the rest).
BATCH = 50
#: The timeout of a scheduled group job (as a request's default).
TIMEOUT = timedelta(minutes=60)
#: What a refused request says, kept as the slot's note.
_REFUSED = (UsageError, NotFoundError, ConflictError)


@dataclass
class GroupTickReport:
    """What one tick did."""

    due: int = 0
    jobs: list[JobRecord] = field(default_factory=list)
    busy: int = 0
    passed: int = 0  # slots that passed without a job for another reason
    lost: int = 0  # slots another controller took first


def tick(ctx: ServiceContext, report: GroupTickReport | None = None) -> list[JobRecord]:
    """
    Start the group backups and drills that are due now; return their jobs.

    Run by the leader each round; a second controller running it at the same
    time takes no slot twice (every slot is taken conditionally).
    """
    report = report if report is not None else GroupTickReport()
    now = ctx.clock()
    for kind in ("backup", "drill"):
        with ctx.reader() as uow:
            store = _slots(uow)
            if store is None:
                return report.jobs
            due = store.due(kind, now, BATCH)
        report.due += len(due)
        for name, slot in due:
            job = _start(ctx, kind, name, slot, now, report)
            if job is not None:
                report.jobs.append(job)
    if report.jobs or report.busy or report.passed:
        log.info(
            "groups: %d due, %d jobs started, %d busy, %d passed",
            report.due,
            len(report.jobs),
            report.busy,
            report.passed,
        )
    return report.jobs


def _slots(uow: UnitOfWork) -> GroupRepo | None:
    store = uow.groups
    return store if isinstance(store, GroupRepo) else None


def _start(
    ctx: ServiceContext,
    kind: SlotKind,
    name: str,
    slot: datetime,
    now: datetime,
    report: GroupTickReport,
) -> JobRecord | None:
    """Start group *name*'s due *kind* job at *slot*, or let the slot pass with a note."""
    with ctx.reader() as uow:  # a busy group does no storage work
        g = uow.groups.get(name)
        busy = sorted(uow.jobs.busy_partitions(g.members)) if g is not None else []
    if busy:
        _pass(ctx, kind, name, slot, now, _busy(name, busy), report)
        return None
    storage, failed = _storage_work(ctx, kind, name)
    if failed is not None:
        _pass(ctx, kind, name, slot, now, failed, report)
        return None
    return _accept(ctx, kind, name, slot, now, storage, report)


def _storage_work(
    ctx: ServiceContext, kind: SlotKind, name: str
) -> tuple[StorageSpec | None, SafeholdError | None]:
    """A request's storage work, outside any transaction: the storage, or why it failed."""
    try:
        if kind == "backup":
            return groups.backup_storage(ctx, name), None
        groups.sync_points(ctx, name)
        return None, None
    except (CatalogError, CatalogUnavailable):
        raise
    except SafeholdError as exc:
        return None, exc
    except Exception as exc:  # an engine's bug must not stop the leader's round
        log.exception("group %s: the %s slot's storage work failed", name, kind)
        return None, SafeholdError(f"{type(exc).__name__}: {exc}")


def _accept(
    ctx: ServiceContext,
    kind: SlotKind,
    name: str,
    slot: datetime,
    now: datetime,
    storage: StorageSpec | None,
    report: GroupTickReport,
) -> JobRecord | None:
    """Take the slot and accept the job in one transaction (or keep why it was refused)."""
    with ctx.uow() as uow:
        store, g = _slots(uow), uow.groups.get(name)
        assert store is not None  # it was a GroupRepo a moment ago
        sched = None if g is None else g.backup if kind == "backup" else g.drill
        if sched is None or sched.next_at != slot:
            return None  # taken by another controller, or redefined, or deleted
        nxt = next_slot(name, kind, sched, now, ctx.schedule_spread)
        if not store.take_slot(name, kind, slot, nxt, None):
            report.lost += 1
            return None
        try:  # as a request does, but members' scheduled backups make it busy too
            if kind == "backup":
                assert storage is not None
                job = groups.accept_backup(ctx, uow, name, storage, TIMEOUT, scheduled=True)
            else:
                args = groups.RestoreArgs(None, None, TIMEOUT, drill=True)
                job = groups.accept_restore(ctx, uow, name, args, scheduled=True)
        except _REFUSED as exc:
            # Nothing was written but the slot: keep it taken, with the reason.
            retry = _retry(name, kind, nxt, now, exc)
            store.take_slot(name, kind, nxt, retry, _why(exc, slot))
            uow.commit()
            _count(exc, report)
            log.info("group %s: %s slot %s passed: %s", name, kind, slot, exc.message)
            return None
        uow.commit()
    return job


def _busy(name: str, members: list[str]) -> groups.GroupBusy:
    return groups.GroupBusy(f"group {name!r}: member {members[0]} has a job accepted or running")


def _retry(name: str, kind: SlotKind, nxt: datetime, now: datetime, exc: Exception) -> datetime:
    """
    When a slot that passed is tried again: at the next slot. As for a
    partition, a busy group whose next slot is far is tried again within
    ``BUSY_RETRY`` (at an offset of its own), so that a group whose slots fall
    while a member's own backups run is not refused at every slot; and one
    whose storage could not be reached after ``STORAGE_RETRY``.
    """
    if isinstance(exc, StorageError | StorageUnreachable | RepositoryBusy):
        return min(nxt, now + STORAGE_RETRY)
    if not isinstance(exc, groups.GroupBusy) or nxt - now <= BUSY_SLOT_MAX:
        return nxt
    return now + BUSY_RETRY + jitter(slot_key(name, kind), BUSY_RETRY)


def _pass(
    ctx: ServiceContext,
    kind: SlotKind,
    name: str,
    slot: datetime,
    now: datetime,
    exc: SafeholdError,
    report: GroupTickReport,
) -> None:
    """Let a slot pass without a job (its reason kept): the next slot tries again."""
    with ctx.uow() as uow:
        store, g = _slots(uow), uow.groups.get(name)
        assert store is not None
        sched = None if g is None else g.backup if kind == "backup" else g.drill
        if sched is None or sched.next_at != slot:
            return
        nxt = _retry(name, kind, next_slot(name, kind, sched, now, ctx.schedule_spread), now, exc)
        if not store.take_slot(name, kind, slot, nxt, _why(exc, slot)):
            report.lost += 1
            return
        uow.commit()
    _count(exc, report)
    log.warning("group %s: %s slot %s passed: %s", name, kind, slot, exc.message)


def _count(exc: SafeholdError, report: GroupTickReport) -> None:
    if isinstance(exc, groups.GroupBusy):
        report.busy += 1
    else:
        report.passed += 1


def _why(exc: SafeholdError, slot: datetime) -> str:
    return f"{slot.isoformat()}: {exc.code}: {exc.message}"[:2000]
