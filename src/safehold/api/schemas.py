"""Pydantic schemas of safehold's own routes, named by role (``XCreate``, ``XPublic``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["HealthPublic", "PagedPartitionList", "PartitionCreate", "PartitionPublic"]


class PartitionCreate(BaseModel):
    """Register a partition: its SF names, where its data comes from, and who backs it up."""

    model_config = ConfigDict(extra="forbid")

    ApplicationName: str
    ServiceName: str
    PartitionId: str
    Source: str
    RestoreTo: str | None = None
    Agent: str | None = None


class PartitionPublic(BaseModel):
    """A registered partition."""

    PartitionId: str
    ApplicationName: str
    ServiceName: str
    Source: str
    RestoreTo: str | None
    Agent: str | None


class HealthPublic(BaseModel):
    """A partition's backup health, as System.BackupRestoreManager would report it."""

    PartitionId: str
    SourceId: str
    Property: str
    HealthState: str
    Description: str
    LastSuccessfulBackupUtc: str | None


class PagedPartitionList(BaseModel):
    """A page of partitions."""

    ContinuationToken: str
    Items: list[PartitionPublic]
