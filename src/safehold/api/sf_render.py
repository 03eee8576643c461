"""
Service Fabric's JSON shapes for what the service records: BackupInfo, progress,
BackupConfigurationInfo, BackupEntity, and safehold's partition registrations.

The service returns records (``BackupRecord``, ``JobRecord``, ``ConfigInfo``…);
how SF's clients expect to see them is decided here, at the API's edge.
"""

from __future__ import annotations

from typing import Any

from safehold.core.snapshot import Epoch, format_time
from safehold.service.model import ZERO_ID, BackupRecord, JobRecord, PartitionRecord
from safehold.service.policies import EnabledEntity
from safehold.service.protection import ConfigInfo

__all__ = [
    "backup_info",
    "backup_progress",
    "config_info",
    "entity_json",
    "epoch_json",
    "partition_json",
    "restore_progress",
]


def config_info(c: ConfigInfo) -> dict[str, Any]:
    """SF's ``BackupConfigurationInfo`` of an application, a service or a partition."""
    doc: dict[str, Any] = {
        "Kind": c.entity.kind,
        "PolicyName": c.policy_name,
        "PolicyInheritedFrom": c.policy_from,
        "SuspensionInfo": {
            "IsSuspended": c.suspended,
            "SuspensionInheritedFrom": c.suspended_from,
        },
    }
    if c.entity.kind == "Application":
        doc["ApplicationName"] = c.entity.key
    elif c.entity.kind == "Service":
        doc["ServiceName"] = c.entity.key
    else:
        doc["ServiceName"] = c.service
        doc["PartitionId"] = c.entity.key
    return doc


def entity_json(e: EnabledEntity) -> dict[str, Any]:
    """SF's ``BackupEntity``."""
    if e.entity.kind == "Application":
        return {"EntityKind": "Application", "ApplicationName": e.entity.key}
    if e.entity.kind == "Service":
        return {"EntityKind": "Service", "ServiceName": e.entity.key}
    return {"EntityKind": "Partition", "ServiceName": e.service, "PartitionId": e.entity.key}


def partition_json(p: PartitionRecord) -> dict[str, Any]:
    """safehold's registration of a partition, as its routes show it."""
    return {
        "PartitionId": p.partition_id,
        "ApplicationName": p.application,
        "ServiceName": p.service,
        "Source": p.source,
        "RestoreTo": p.restore_to,
        "Agent": p.agent,
        "PartitionInformation": p.key.to_json(p.partition_id),
        "RestoreOnlyOwnBackups": p.strict_restore,
        "Hooks": p.hooks.to_json() if p.hooks else None,
    }


def epoch_json(e: Epoch) -> dict[str, str]:
    """SF's ``Epoch``."""
    return {
        "DataLossVersion": str(e.data_loss_number),
        "ConfigurationVersion": str(e.configuration_number),
    }


def backup_info(b: BackupRecord) -> dict[str, Any]:
    """SF's ``BackupInfo`` of a backup."""
    return {
        "BackupId": b.backup_id,
        "BackupChainId": b.chain_id,
        "ApplicationName": b.application,
        "ServiceName": b.service,
        "PartitionInformation": b.key.to_json(b.partition_id),
        "BackupLocation": b.location,
        "BackupType": b.backup_type,
        "EpochOfLastBackupRecord": epoch_json(b.epoch),
        "LsnOfLastBackupRecord": str(b.lsn),
        "CreationTimeUtc": format_time(b.created_at),
        "ServiceManifestVersion": "",
        "FailureError": None,
    }


def _error(job: JobRecord) -> dict[str, str] | None:
    if job.failure_code is None:
        return None
    return {"Code": job.failure_code, "Message": job.failure_message or ""}


def backup_progress(job: JobRecord | None) -> dict[str, Any]:
    """
    SF's ``BackupProgressInfo`` of a partition's latest backup job.

    Before any backup SF answers 200 with an empty body, which its SDK turns
    into ``None``; so does this (an empty object).
    """
    if job is None:
        return {}
    doc: dict[str, Any] = {
        "BackupState": job.state,
        "TimeStampUtc": format_time(job.finished_at or job.started_at or job.created_at),
        "BackupId": ZERO_ID,
        "BackupLocation": "",
        "EpochOfLastBackupRecord": {"DataLossVersion": "0", "ConfigurationVersion": "0"},
        "LsnOfLastBackupRecord": "0",
    }
    if job.state == "Success" and job.result:
        doc.update(
            BackupId=job.result["BackupId"],
            BackupLocation=job.result["BackupLocation"],
            EpochOfLastBackupRecord=epoch_json(Epoch(*job.params["epoch"])),
            LsnOfLastBackupRecord=str(job.params["lsn"]),
        )
    doc["FailureError"] = _error(job)
    doc["Progress"] = job.progress
    doc["AgentId"] = job.agent_id
    return doc


def restore_progress(job: JobRecord | None) -> dict[str, Any]:
    """SF's ``RestoreProgressInfo`` of a partition's latest restore job (empty before any)."""
    if job is None:
        return {}
    success = job.state == "Success"
    return {
        "RestoreState": job.state,
        "TimeStampUtc": format_time(job.finished_at or job.started_at or job.created_at),
        "RestoredEpoch": epoch_json(Epoch(*job.params["epoch"]) if success else Epoch(0, 0)),
        "RestoredLsn": str(job.params["lsn"] if success else 0),
        "FailureError": _error(job),
        "Progress": job.progress,
        "AgentId": job.agent_id,
    }
