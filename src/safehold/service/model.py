"""
The service's records: what the catalog holds about partitions, jobs and backups.

These are plain values; the unit of work (``service.uow``) loads and stores them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from safehold.core.policy import EntityRef
from safehold.core.snapshot import Epoch

__all__ = [
    "ACTIVE_STATES",
    "RUNNING_STATE",
    "RUNNING_STATES",
    "BackupBrief",
    "BackupOutcome",
    "BackupRecord",
    "Claimed",
    "Hooks",
    "JobRecord",
    "PartitionBrief",
    "PartitionKey",
    "PartitionRecord",
    "PartitionView",
    "backup_id_for",
    "backup_location",
]

JobKind = Literal[
    "backup", "restore", "clean", "dataloss", "drill", "group-backup", "group-restore"
]
ACTIVE_STATES = ("Accepted", "BackupInProgress", "RestoreInProgress", "InProgress")
RUNNING_STATES = ("BackupInProgress", "RestoreInProgress", "InProgress")
#: The state a job of each kind is in while an agent runs it.
RUNNING_STATE = {
    "backup": "BackupInProgress",
    "restore": "RestoreInProgress",
    "clean": "InProgress",
    "dataloss": "InProgress",
    "drill": "InProgress",
    "group-backup": "BackupInProgress",  # service.groups
    "group-restore": "RestoreInProgress",
}
ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
ZERO_ID = "00000000-0000-0000-0000-000000000000"


PartitionKind = Literal["Singleton", "Int64Range", "Named"]


@dataclass(frozen=True)
class PartitionKey:
    """
    SF's partition information: a Singleton, a range of Int64 keys, or a name.

    A backup may be restored into another partition (another cluster's) when
    their keys agree, as SF checks them.
    """

    kind: PartitionKind = "Singleton"
    low_key: int | None = None
    high_key: int | None = None
    name: str | None = None

    def matches(self, other: PartitionKey) -> bool:
        """Whether a backup of *self* may be restored into *other*, as SF checks it."""
        if self.kind != other.kind:
            return False
        if self.kind == "Int64Range":
            return (self.low_key, self.high_key) == (other.low_key, other.high_key)
        return self.kind != "Named" or self.name == other.name

    def stored(self) -> dict[str, Any]:
        """The key as the catalog and snapshots keep it."""
        return {
            "kind": self.kind,
            "low_key": self.low_key,
            "high_key": self.high_key,
            "name": self.name,
        }

    @classmethod
    def parse(cls, doc: dict[str, Any] | None) -> PartitionKey:
        """Read a stored key (None, or no kind: a Singleton)."""
        if not doc or not doc.get("kind"):
            return cls()
        return cls(doc["kind"], doc.get("low_key"), doc.get("high_key"), doc.get("name"))

    def to_json(self, partition_id: str) -> dict[str, Any]:
        """SF's ``PartitionInformation``."""
        doc: dict[str, Any] = {"ServicePartitionKind": self.kind, "Id": partition_id}
        if self.kind == "Int64Range":
            doc.update(LowKey=str(self.low_key), HighKey=str(self.high_key))
        elif self.kind == "Named":
            doc["Name"] = self.name
        return doc


@dataclass(frozen=True)
class Hooks:
    """Commands run around a backup of a partition (to flush or freeze an application)."""

    before: str | None = None
    after: str | None = None
    timeout_seconds: float = 300.0

    def to_json(self) -> dict[str, Any]:
        """The hooks as stored and as the API shows them."""
        return {"Before": self.before, "After": self.after, "TimeoutSeconds": self.timeout_seconds}


@dataclass(frozen=True)
class BackupOutcome:
    """How a partition's newest backup job ended, as health reads it."""

    state: str
    failure: str | None
    good_at: datetime | None  # the backup's time, when it succeeded


class PartitionView(Protocol):
    """**Protocol**: what fleet-wide reads (health, alerts, drills) need of a partition."""

    @property
    def partition_id(self) -> str: ...
    @property
    def application(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def last_backup_at(self) -> datetime | None: ...
    @property
    def last_backup_state(self) -> str | None: ...
    @property
    def last_failure(self) -> str | None: ...
    def chain(self) -> list[EntityRef]: ...


@dataclass(frozen=True, slots=True)
class PartitionBrief:
    """
    The columns of a partition that fleet-wide reads need, and nothing else.

    Reading 10,000 of these costs a fraction of as many ``PartitionRecord``s
    (no keys, hooks or epochs to build), which is what keeps the health view
    and the alert loop cheap at fleet scale.
    """

    partition_id: str
    application: str
    service: str
    source: str
    created_at: datetime
    last_backup_at: datetime | None
    last_backup_state: str | None
    last_failure: str | None

    def chain(self) -> list[EntityRef]:
        """The entities from the application down to this partition."""
        return [
            EntityRef("Application", self.application),
            EntityRef("Service", self.service),
            EntityRef("Partition", self.partition_id),
        ]


@dataclass
class PartitionRecord:
    """A registered partition: its names, where its data comes from, and its counters."""

    partition_id: str
    application: str
    service: str
    source: str
    restore_to: str | None
    agent: str | None
    epoch: Epoch
    lsn: int
    last_scheduled_at: datetime | None
    created_at: datetime
    key: PartitionKey = field(default_factory=PartitionKey)
    hooks: Hooks | None = None
    strict_restore: bool = False  # restore only this partition's own backups (opt-in)
    # Kept by the scheduler and by job completion, never written by ``save``:
    next_due_at: datetime | None = None
    schedule_key: str | None = None
    reschedule: bool = True
    last_backup_at: datetime | None = None
    last_backup_state: str | None = None
    last_failure: str | None = None

    def chain(self) -> list[EntityRef]:
        """The entities from the application down to this partition."""
        return [
            EntityRef("Application", self.application),
            EntityRef("Service", self.service),
            EntityRef("Partition", self.partition_id),
        ]


@dataclass
class JobRecord:
    """A backup, restore, clean or (induced) data-loss job for one partition."""

    id: str
    partition_id: str
    kind: JobKind
    state: str
    scheduled: bool
    created_at: datetime
    deadline: datetime
    params: dict[str, Any]
    started_at: datetime | None = None
    finished_at: datetime | None = None
    agent_id: str | None = None
    heartbeat_at: datetime | None = None
    result: dict[str, Any] | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0
    incarnation: str | None = None

    @property
    def active(self) -> bool:
        """Accepted or running."""
        return self.state in ACTIVE_STATES


@dataclass
class BackupRecord:
    """A backup that succeeded and is known to the catalog."""

    backup_id: str
    snapshot_id: str
    partition_id: str
    application: str
    service: str
    backup_type: Literal["Full", "Incremental"]
    chain_id: str
    parent_id: str | None
    location: str
    epoch: Epoch
    lsn: int
    created_at: datetime
    size_bytes: int
    storage: dict[str, Any]  # the storage JSON with secrets sealed
    key: PartitionKey = field(default_factory=PartitionKey)


@dataclass(frozen=True)
class BackupBrief:
    """What an agent is told of one of its partition's backups (its parent, retention)."""

    backup_id: str
    snapshot_id: str
    created_at: datetime
    full: bool
    parent_id: str | None

    @classmethod
    def of(cls, b: BackupRecord) -> BackupBrief:
        """The brief of a catalogued backup."""
        return cls(b.backup_id, b.snapshot_id, b.created_at, b.backup_type == "Full", b.parent_id)


@dataclass
class Claimed:
    """A job an agent just claimed, with its partition and the partition's backups."""

    job: JobRecord
    partition: PartitionRecord
    backups: list[BackupBrief]


def backup_id_for(snapshot_id: str) -> str:
    """
    Return the BackupId (a UUID) of the snapshot *snapshot_id*.

    It is the snapshot id's first 128 bits, so a storage alone is enough to map
    BackupIds to snapshots (the engine finds a snapshot by a unique id prefix).
    """
    return str(uuid.UUID(hex=snapshot_id[:32]))


def snapshot_prefix(backup_id: str) -> str:
    """Return the snapshot id prefix that a BackupId stands for."""
    return uuid.UUID(backup_id).hex


def backup_location(application: str, service: str, partition_id: str, when: datetime) -> str:
    """
    Return a backup's location, laid out as Service Fabric does.

    ``<App>\\<Svc>\\<PartitionId>\\<yyyy-MM-dd HH.mm.ss>.zip`` (SF's
    ``BackupLocation``), with ``/`` inside names turned into ``$``. Comparisons
    treat ``\\`` and ``/`` alike, so locations of older catalogs still match.
    """
    app = application.removeprefix("fabric:/").replace("/", "$")
    svc = service.removeprefix(application + "/").replace("/", "$")
    stamp = when.astimezone(UTC).strftime("%Y-%m-%d %H.%M.%S")
    return f"{app}\\{svc}\\{partition_id}\\{stamp}.zip"
