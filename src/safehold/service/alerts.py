"""
Alerts: conditions worth waking someone for, deduplicated, resolved, delivered with retries.

Each tick (on the leader) evaluates the conditions from the catalog:

========================  ==================================================  ========
event                     condition                                           severity
========================  ==================================================  ========
``BackupFailed``          a partition's newest backup job failed              error
``StorageUnreachable``    the scheduler could not reach its storage            error
``BackupLate``            backup health says the next backup is late           warning
``DrillFailed``           the newest restore drill failed                      error
``DrillOverdue``          no successful drill within the drill policy window   warning
``AgentLost``             an agent was not heard from for the agent timeout    error
``RetentionBlocked``      retention should have deleted backups and has not    error
                          (its storage's retention keeps failing, or a hold
                          keeps them), or only MinimumNumberOfBackups keeps    warning
                          backups past the window (``service.retention_alerts``)
========================  ==================================================  ========

Each condition is one alert row keyed by event and subject (a partition or an
agent), so a condition that stays true is one alert, not one per tick. When it
clears, the alert becomes ``resolved``. Every change of state is delivered once
to the channels (``service.notify``); a delivery that fails is tried again at the
next ticks with exponential backoff (5 s doubling to 10 min), so delivery is
at least once. An alert that resolves before its firing was ever delivered is
closed without a message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from safehold.core.drill import DrillVerdict
from safehold.core.snapshot import format_time
from safehold.service import drills
from safehold.service.context import ServiceContext
from safehold.service.drill_records import AlertRecord
from safehold.service.health import FleetView, PartitionHealth, partition_health
from safehold.service.model import PartitionView
from safehold.service.notify import Channels, deliver
from safehold.service.retention_alerts import Verdicts, retention_blocked

__all__ = ["Condition", "alert_json", "conditions", "list_alerts", "tick"]

log = logging.getLogger("safehold.alerts")

BACKOFF_START = timedelta(seconds=5)
BACKOFF_MAX = timedelta(minutes=10)
_FAILED = ("Failure", "Timeout")


@dataclass(frozen=True)
class Condition:
    """One alerting condition that holds now."""

    event: str
    subject: str
    severity: str
    message: str

    @property
    def key(self) -> str:
        """The alert's identity: one alert per event and subject."""
        return f"{self.event}:{self.subject}"


def conditions(ctx: ServiceContext, fleet: FleetView | None = None) -> list[Condition]:
    """
    The conditions that hold now (a constant number of catalog queries).

    With *fleet* (the controller's shared view), health is not computed again.
    """
    now, view, parts, verdicts, agents, blocked = _inputs(ctx, fleet)
    health = {h.partition_id: h for h in view}
    out: list[Condition] = []
    for p in parts:
        pid = p.partition_id
        if p.last_backup_state in _FAILED:
            failure = p.last_failure or p.last_backup_state
            event = (
                "StorageUnreachable"
                if failure.startswith("SAFEHOLD_E_STORAGE_UNREACHABLE")
                else "BackupFailed"
            )
            out.append(Condition(event, pid, "error", f"partition {pid}: {failure}"))
        h = health.get(pid)
        if h is not None and p.last_backup_state not in _FAILED:
            backup_state = h.backup_state or h.state
            backup_reason = h.reason.split("; ")[0]
            if backup_state != "Ok" and "late" in backup_reason:
                severity = "error" if backup_state == "Error" else "warning"
                out.append(
                    Condition("BackupLate", pid, severity, f"partition {pid}: {backup_reason}")
                )
        v = verdicts.get(pid)
        if v is not None and v.state != "Ok":
            if v.cause in ("failed", "unreadable"):
                out.append(Condition("DrillFailed", pid, "error", f"partition {pid}: {v.reason}"))
            elif v.cause == "overdue":
                severity = "error" if v.state == "Error" else "warning"
                out.append(Condition("DrillOverdue", pid, severity, f"partition {pid}: {v.reason}"))
        if pid in blocked:
            severity, message = blocked[pid]
            out.append(Condition("RetentionBlocked", pid, severity, message))
    for agent, seen in sorted(agents.items()):
        if now - seen > ctx.agent_timeout:
            out.append(
                Condition(
                    "AgentLost",
                    agent,
                    "error",
                    f"agent {agent} was last heard from at {format_time(seen)}",
                )
            )
    return out


def _inputs(
    ctx: ServiceContext, fleet: FleetView | None
) -> tuple[
    datetime,
    list[PartitionHealth],
    Sequence[PartitionView],
    dict[str, DrillVerdict],
    dict[str, datetime],
    Verdicts,
]:
    """
    What ``conditions`` judges. Only the health view may come from *fleet* (at
    most its age old, for BackupLate, which is judged in periods); the rest is
    read now, so that two evaluations never disagree backwards in time (an alert
    resolved on older data, then fired again).
    """
    view = fleet.get(ctx).partitions if fleet is not None else partition_health(ctx)
    with ctx.uow() as uow:
        now = ctx.clock()
        parts = uow.partitions.brief()
        verdicts, _ = drills.judge_partitions(uow, parts, now)
        agents = uow.agents.all()
        blocked = retention_blocked(ctx, uow, parts, now)
    return now, view, parts, verdicts, agents, blocked


def _sync(ctx: ServiceContext, found: list[Condition]) -> None:
    """Open, update and resolve alert rows to match *found*."""
    wanted = {c.key: c for c in found}
    with ctx.uow() as uow:
        now = ctx.clock()
        existing = {a.key: a for a in uow.alerts.all()}
        for key, c in wanted.items():
            a = existing.get(key)
            if a is None or a.state == "resolved":
                uow.alerts.save(
                    AlertRecord(key, c.event, c.subject, c.severity, "firing", c.message, now, now)
                )
                log.warning("alert firing: %s", c.message)
            elif (a.message, a.severity) != (c.message, c.severity):
                a.message, a.severity = c.message, c.severity
                uow.alerts.save(a)
        for key, a in existing.items():
            if a.state == "firing" and key not in wanted:
                a.state, a.changed_at = "resolved", now
                a.attempts, a.next_try_at, a.last_error = 0, None, None
                if a.notified is None:
                    a.notified = "resolved"  # never announced: nothing to take back
                uow.alerts.save(a)
                log.info("alert resolved: %s", a.message)
        uow.commit()


def _backoff(attempts: int) -> timedelta:
    doubled: timedelta = BACKOFF_START * 2 ** max(0, attempts - 1)
    return min(doubled, BACKOFF_MAX)


def _send(ctx: ServiceContext, channels: Channels) -> list[AlertRecord]:
    """Deliver the alerts whose state the channels were not told yet; return those sent."""
    with ctx.uow() as uow:
        now = ctx.clock()
        due = [
            a
            for a in uow.alerts.all()
            if a.pending and (a.next_try_at is None or a.next_try_at <= now)
        ]
    if not due:
        return []
    errors = deliver(channels, due)  # outside any transaction: it waits on the network
    with ctx.uow() as uow:
        now = ctx.clock()
        for sent in due:
            a = uow.alerts.get(sent.key)
            if a is None or a.state != sent.state:
                continue  # changed meanwhile: its new state is delivered next
            if errors:
                a.attempts += 1
                a.next_try_at = now + _backoff(a.attempts)
                a.last_error = "; ".join(errors)[:2000]
            else:
                a.notified, a.attempts, a.next_try_at, a.last_error = a.state, 0, None, None
            uow.alerts.save(a)
        uow.commit()
    return [] if errors else due


def tick(
    ctx: ServiceContext, channels: Channels | None, fleet: FleetView | None = None
) -> list[AlertRecord]:
    """
    Evaluate the conditions, update the alerts, deliver what changed; return what was sent.

    Called by the leader each round. Without channels, alerts are kept (and
    listed by the API) but not sent.
    """
    _sync(ctx, conditions(ctx, fleet))
    if channels is None or channels.empty:
        return []
    return _send(ctx, channels)


def alert_json(a: AlertRecord) -> dict[str, Any]:
    """The API shape of an alert."""
    return {
        "Key": a.key,
        "Event": a.event,
        "Subject": a.subject,
        "Severity": a.severity,
        "State": a.state,
        "Message": a.message,
        "StartedUtc": format_time(a.started_at),
        "ChangedUtc": format_time(a.changed_at),
        "Delivered": a.notified == a.state,
        "DeliveryAttempts": a.attempts,
        "NextDeliveryUtc": format_time(a.next_try_at) if a.next_try_at else None,
        "LastDeliveryError": a.last_error,
    }


def list_alerts(ctx: ServiceContext, *, firing_only: bool = False) -> list[dict[str, Any]]:
    """Every alert (or only the firing ones), firing first."""
    with ctx.uow() as uow:
        rows = uow.alerts.all()
    rows = [a for a in rows if a.state == "firing" or not firing_only]
    rows.sort(key=lambda a: (a.state != "firing", a.key))
    return [alert_json(a) for a in rows]
