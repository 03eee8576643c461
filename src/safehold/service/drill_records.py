"""
The catalog's records of restore drills and alerts: plain values.

The unit of work's ``drills`` and ``alerts`` stores (``service.uow``) load and
store them; ``service.drills`` and ``service.alerts`` decide what they hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from safehold.core.snapshot import format_time

__all__ = ["AlertRecord", "DrillRun", "DrillState"]

#: Drill run states: Accepted and InProgress while its job runs, then one of the rest.
DRILL_FINAL = ("Success", "Failure", "Timeout")


@dataclass
class DrillRun:
    """One drill: which backup it restored, what it measured, what each validator said."""

    id: str
    partition_id: str
    policy_name: str | None
    job_id: str | None
    trigger: str  # "Schedule" or "Manual"
    state: str
    created_at: datetime
    backup_id: str
    backup_time: datetime
    finished_at: datetime | None = None
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    rto_objective: float | None = None
    rpo_objective: float | None = None
    agent_id: str | None = None
    failure: str | None = None
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Whether the drill has ended."""
        return self.state in DRILL_FINAL

    @property
    def objectives_met(self) -> bool | None:
        """Whether the measured RTO and achieved RPO met the objectives (None: not measured)."""
        if self.state != "Success":
            return None
        ok = True
        if self.rto_objective is not None and self.rto_seconds is not None:
            ok = ok and self.rto_seconds <= self.rto_objective
        if self.rpo_objective is not None and self.rpo_seconds is not None:
            ok = ok and self.rpo_seconds <= self.rpo_objective
        return ok

    def to_json(self) -> dict[str, Any]:
        """The API shape."""
        return {
            "DrillId": self.id,
            "Kind": self.result.get("Kind", "Restore"),
            "PartitionId": self.partition_id,
            "Policy": self.policy_name,
            "JobId": self.job_id,
            "Trigger": self.trigger,
            "State": self.state,
            "CreatedUtc": format_time(self.created_at),
            "FinishedUtc": format_time(self.finished_at) if self.finished_at else None,
            "BackupId": self.backup_id,
            "BackupTimeUtc": format_time(self.backup_time),
            "RtoSeconds": self.rto_seconds,
            "RpoSeconds": self.rpo_seconds,
            "Objectives": {"RtoSeconds": self.rto_objective, "RpoSeconds": self.rpo_objective},
            "ObjectivesMet": self.objectives_met,
            "Agent": self.agent_id,
            "Failure": self.failure,
            "Validators": self.result.get("Validators", []),
            "Sandbox": self.result.get("Sandbox"),
            "Host": self.result.get("Host"),
            "CleanedLeftovers": self.result.get("CleanedLeftovers", []),
            # A database source's last recoverable instant (time, and LSN/segment or
            # binlog) as the drill found it in the archive, and its scratch port.
            "RecoverableEnd": {
                k.removeprefix("RecoverableEnd"): v
                for k, v in self.result.items()
                if k.startswith("RecoverableEnd")
            }
            or None,
            "Port": self.result.get("Port"),
        }


@dataclass
class DrillState:
    """A partition's newest drill, kept in one row so health reads drills in one query."""

    partition_id: str
    last_run_id: str | None = None
    last_started_at: datetime | None = None
    last_finished_at: datetime | None = None
    last_state: str | None = None
    last_failure: str | None = None
    last_success_at: datetime | None = None
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    objectives_met: bool | None = None


@dataclass
class AlertRecord:
    """
    One alerting condition (deduplicated by *key*), firing or resolved.

    *notified* is the state last delivered to the channels; delivery is due when
    it differs from *state* and *next_try_at* has passed.
    """

    key: str
    event: str
    subject: str
    severity: str
    state: str  # "firing" or "resolved"
    message: str
    started_at: datetime
    changed_at: datetime
    notified: str | None = None
    attempts: int = 0
    next_try_at: datetime | None = None
    last_error: str | None = None

    @property
    def pending(self) -> bool:
        """Whether the channels have not been told this alert's current state."""
        return self.notified != self.state
