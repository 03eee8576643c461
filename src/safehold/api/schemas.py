"""Pydantic schemas of safehold's own routes, named by role (``XCreate``, ``XPublic``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "HealthPublic",
    "HooksBody",
    "PagedPartitionList",
    "PartitionCreate",
    "PartitionPublic",
]


class HooksBody(BaseModel):
    """Shell commands run by the agent around each backup of a partition, with a time limit."""

    model_config = ConfigDict(extra="forbid")

    Before: str | None = Field(None, max_length=4096)
    After: str | None = Field(None, max_length=4096)
    TimeoutSeconds: float = Field(300.0, gt=0, le=86400)


class PartitionCreate(BaseModel):
    """Register a partition: its SF names, where its data comes from, and who backs it up."""

    model_config = ConfigDict(extra="forbid")

    ApplicationName: str
    ServiceName: str
    PartitionId: str
    Source: str
    RestoreTo: str | None = None
    Agent: str | None = None
    Hooks: HooksBody | None = None
    PartitionKind: Literal["Singleton", "Int64Range", "Named"] = "Singleton"
    LowKey: int | None = None
    HighKey: int | None = None
    PartitionName: str | None = None
    RestoreOnlyOwnBackups: bool = False


class PartitionPublic(BaseModel):
    """A registered partition."""

    PartitionId: str
    ApplicationName: str
    ServiceName: str
    Source: str
    RestoreTo: str | None
    Agent: str | None
    Hooks: HooksBody | None = None
    PartitionInformation: dict[str, Any]
    RestoreOnlyOwnBackups: bool


class HealthPublic(BaseModel):
    """A partition's backup health, as System.BackupRestoreManager would report it."""

    PartitionId: str
    SourceId: str
    Property: str
    HealthState: str
    Description: str
    LastSuccessfulBackupUtc: str | None
    Drill: dict[str, str | None] | None = None  # restore drills' own verdict (service.drills)


class PagedPartitionList(BaseModel):
    """A page of partitions."""

    ContinuationToken: str
    Items: list[PartitionPublic]
