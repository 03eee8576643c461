"""
The controller–agent protocol: the messages both sides import, defined once.

An agent claims a ``WorkItem``, sends heartbeats with progress, and reports an
``Outcome``. Field names are the wire names (JSON over HTTP, or the same objects
in-process for the embedded agent). Every message tolerates unknown fields, so a
newer controller and an older agent can still talk; an agent that receives a
``Kind`` it does not know refuses the job (``Outcome.refused``) and never guesses.

Fencing: each claim of a job gets a new ``Attempt`` number. Heartbeats and the
outcome carry it back, and the controller applies them only while the job is
still on that attempt, so a stale agent cannot overwrite a newer result. Sending
the same outcome twice is harmless: the second one is acknowledged unchanged.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "JOB_KINDS",
    "BackupParams",
    "ClaimRequest",
    "CompleteAndClaim",
    "ControllerLink",
    "DataLossParams",
    "DrillParams",
    "ErrorInfo",
    "GroupBackupParams",
    "GroupMember",
    "GroupPointRef",
    "GroupRestoreParams",
    "GroupValidator",
    "Heartbeat",
    "KnownBackup",
    "Outcome",
    "PartitionInfo",
    "RestoreParams",
    "RetentionRule",
    "SnapshotRef",
    "WorkItem",
]

JobKind = Literal[
    "backup", "restore", "clean", "dataloss", "drill", "group-backup", "group-restore"
]
#: The job kinds this version of the protocol defines.
JOB_KINDS: tuple[str, ...] = (
    "backup",
    "restore",
    "clean",
    "dataloss",
    "drill",
    "group-backup",  # a consistency group backed up at one point (GroupBackupParams)
    "group-restore",  # a consistency group restored to one point (GroupRestoreParams)
)


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PartitionInfo(_Message):
    """The partition a job is for, as its agent needs it."""

    PartitionId: str
    ApplicationName: str
    ServiceName: str
    Source: str
    RestoreTo: str | None = None
    Hooks: dict[str, Any] | None = None
    Kind: str = "Singleton"
    LowKey: int | None = None
    HighKey: int | None = None
    Name: str | None = None


class RetentionRule(_Message):
    """SF's Basic retention, applied by the agent after a backup."""

    hours: int
    minimum: int


class KnownBackup(_Message):
    """A backup of the partition as the catalog knows it (for retention on the agent)."""

    SnapshotId: str
    Time: str
    Full: bool
    ParentSnapshotId: str | None = None


class BackupParams(_Message):
    """
    What a backup job needs beyond the partition and storage.

    ``known`` lists the partition's catalogued backups when the job applies a
    retention rule, so the agent judges retention from them and the new one
    instead of reading every snapshot in a repository shared by a fleet; backups
    the catalog does not know are left to the controller's retention timer.
    """

    backup_type: Literal["Full", "Incremental"] = "Full"
    parent_snapshot: str | None = None
    parent_id: str | None = None
    chain_id: str | None = None
    chain_snapshot: str | None = None
    epoch: tuple[int, int] = (0, 0)
    lsn: int = 0
    retention: RetentionRule | None = None
    known: list[KnownBackup] | None = None
    #: The partition's newest catalogued backup: the agent reads again only the
    #: files changed since it (None: every file).
    previous_snapshot: str | None = None


class RestoreParams(_Message):
    """Which snapshot a restore job writes back."""

    snapshot_id: str
    backup_id: str = ""
    epoch: tuple[int, int] = (0, 0)
    lsn: int = 0
    #: With a source that can replay to an instant (a state store, a database with
    #: archived WAL): the exact instant to restore, not the backup's own time.
    restore_time: str | None = None


class DataLossParams(_Message):
    """An induced data loss (SF's StartDataLoss) of a ``state:`` partition."""

    mode: str
    auto_restore: bool = False
    epoch: tuple[int, int] = (0, 0)
    lsn: int = 0


class DrillParams(_Message):
    """A restore drill (``core.drill``): restore a backup into a sandbox and validate it."""

    drill_id: str
    snapshot_id: str
    backup_id: str = ""
    backup_time: str
    validators: list[dict[str, Any]] = Field(default_factory=list)
    sandbox_dir: str | None = None


class GroupMember(_Message):
    """A partition of a consistency group, as the agent that runs the group needs it."""

    PartitionId: str
    Source: str
    RestoreTo: str | None = None


class GroupValidator(_Message):
    """
    A cross-reference check run on a group's restored copies.

    ``BlobPathsExist``: every path that ``Query`` returns from the restored
    ``postgres:`` member ``Database`` exists in the restored ``dir:`` member
    ``Directory`` (paths relative to it).
    """

    Kind: Literal["BlobPathsExist"] = "BlobPathsExist"
    Database: str
    Query: str
    Directory: str


class GroupPointRef(_Message):
    """
    One point of a consistency group: the extension of ``Outcome`` a group backup
    reports, and what a group restore is sent.

    ``Members`` maps each member's partition id to its snapshot of the point (a
    base backup, for PostgreSQL members, which reach the point by WAL replay).
    """

    Group: str
    Time: str
    RestorePoint: str
    SnapshotId: str
    Members: dict[str, SnapshotRef]


class GroupBackupParams(_Message):
    """A group backup: every member backed up at one point (``db.groups.backup_group``)."""

    group: str
    members: list[GroupMember]


class GroupRestoreParams(_Message):
    """
    A group restore to one point, with the group's validators.

    A ``drill`` restores the members into a sandbox (under ``sandbox_dir``, or
    the agent's temporary directory), validates them and removes them: nothing
    is swapped in for the members' data.
    """

    group: str
    members: list[GroupMember]
    point: GroupPointRef
    validators: list[GroupValidator] = Field(default_factory=list)
    drill: bool = False
    sandbox_dir: str | None = None


class WorkItem(_Message):
    """
    One job handed to an agent.

    ``Storage`` is the storage description with its secrets open: work items go
    only to agent-role callers over authenticated HTTP(S). ``Params`` depends on
    ``Kind``; read it with ``backup()``, ``restore()`` or ``data_loss()``.
    """

    JobId: str
    Kind: str
    Attempt: int = 0
    Deadline: str
    Partition: PartitionInfo
    Storage: dict[str, Any] | None = None
    Params: dict[str, Any] = Field(default_factory=dict)

    def backup(self) -> BackupParams:
        """The parameters of a backup job."""
        return BackupParams.model_validate(self.Params)

    def restore(self) -> RestoreParams:
        """The parameters of a restore job."""
        return RestoreParams.model_validate(self.Params)

    def data_loss(self) -> DataLossParams:
        """The parameters of a data-loss job."""
        return DataLossParams.model_validate(self.Params)

    def drill(self) -> DrillParams:
        """The parameters of a restore drill."""
        return DrillParams.model_validate(self.Params)

    def group_backup(self) -> GroupBackupParams:
        """The parameters of a group backup."""
        return GroupBackupParams.model_validate(self.Params)

    def group_restore(self) -> GroupRestoreParams:
        """The parameters of a group restore."""
        return GroupRestoreParams.model_validate(self.Params)


class ClaimRequest(_Message):
    """
    What an agent says when it asks for work.

    ``Incarnation`` identifies this run of the agent: when it changes, the jobs
    the agent's earlier run held fail at once. ``Kinds`` lists the job kinds the
    agent can run; the controller hands it no other. ``WaitSeconds`` asks the
    controller to hold the claim open until work arrives, up to that long (it
    caps the wait; 0 or absent: answer at once), so agents need not poll.
    """

    Incarnation: str | None = None
    Kinds: list[str] | None = None
    WaitSeconds: float | None = Field(default=None, ge=0, le=3600)


class SnapshotRef(_Message):
    """The snapshot a backup stored."""

    Id: str
    Time: str
    Size: int = 0


class ErrorInfo(_Message):
    """Why a job failed (SF's ``FabricErrorError`` shape)."""

    Code: str
    Message: str = ""


class Heartbeat(_Message):
    """An agent is alive; its job's progress counters."""

    Attempt: int | None = None
    Progress: dict[str, int | str | None] = Field(default_factory=dict)


class Outcome(_Message):
    """
    How a job ended, as its agent reports it.

    A successful backup carries ``Snapshot`` and the snapshot ids retention
    ``Removed``. A ``state:`` partition's agent also reports its ``Epoch`` and
    ``Lsn`` (and for backups ``BackupType`` and ``ParentSnapshot``), which the
    controller keeps as the truth. A data loss carries its ``Result``. A group
    backup carries its point and each member's snapshot in ``Group``.
    """

    State: Literal["Success", "Failure"]
    Attempt: int | None = None
    Snapshot: SnapshotRef | None = None
    Removed: list[str] = Field(default_factory=list)
    Error: ErrorInfo | None = None
    Epoch: list[int] | None = None
    Lsn: int | None = None
    BackupType: Literal["Full", "Incremental"] | None = None
    ParentSnapshot: str | None = None
    RestoredLsn: int | None = None
    Result: dict[str, Any] | None = None
    Group: GroupPointRef | None = None

    @classmethod
    def failure(cls, code: str, message: str, *, attempt: int | None = None) -> Outcome:
        """A failed job."""
        return cls(State="Failure", Error=ErrorInfo(Code=code, Message=message), Attempt=attempt)

    @classmethod
    def refused(cls, kind: str, *, attempt: int | None = None) -> Outcome:
        """A job of a kind this agent does not know: refused, nothing done."""
        return cls.failure(
            "SAFEHOLD_E_UNKNOWN_JOB_KIND",
            f"this agent does not know {kind!r} jobs and did nothing; upgrade the agent",
            attempt=attempt,
        )

    def with_attempt(self, attempt: int) -> Outcome:
        """This outcome, stamped with the attempt it reports on."""
        return self.model_copy(update={"Attempt": attempt})


class CompleteAndClaim(_Message):
    """
    An agent's report of a job together with its claim of the next one.

    The controller records ``Outcome`` exactly as a plain completion, then claims
    as ``Claim`` asks, without waiting: a slot that is busy all the time sends
    one request a job instead of two.
    """

    Outcome: Outcome
    Claim: ClaimRequest = Field(default_factory=ClaimRequest)


class ControllerLink(Protocol):
    """
    **Protocol**: the calls an agent makes to its controller.

    Implemented over HTTP(S) by ``safehold.client`` and in-process for the
    embedded agent. Each call may be repeated safely.
    """

    agent_id: str

    def claim(self, request: ClaimRequest) -> WorkItem | None:
        """Return the next work item, or ``None`` when there is nothing to do."""
        ...

    def heartbeat(self, job_id: str, beat: Heartbeat) -> None:
        """Say the agent is alive and how far its job got."""
        ...

    def complete(self, job_id: str, outcome: Outcome) -> None:
        """Report a job's outcome."""
        ...

    def complete_and_claim(
        self, job_id: str, outcome: Outcome, request: ClaimRequest
    ) -> WorkItem | None:
        """
        Report a job's outcome and claim the next work item (``None``: nothing to do).

        Sent once: were it repeated after a lost answer, the job it claimed would
        be held by nobody until the sweep; the report is then sent with
        ``complete``, which may be repeated.
        """
        ...
