"""
The service's errors, with Service Fabric's error codes and HTTP statuses::

    SafeholdError
    ├── UsageError
    │   ├── PolicyError               400 E_INVALIDARG (core.policy)
    │   ├── BackupIsEnabled           400 FABRIC_E_BACKUP_IS_ENABLED
    │   ├── PartitionMismatch         400 FABRIC_E_RESTORE_SOURCE_TARGET_PARTITION_MISMATCH
    │   └── ForeignRepository         400 SAFEHOLD_E_FOREIGN_REPOSITORY
    ├── NotFoundError
    │   ├── PolicyNotFound            404 FABRIC_E_BACKUP_POLICY_NOT_EXISTING
    │   ├── BackupNotEnabled          404 FABRIC_E_BACKUP_NOT_ENABLED
    │   ├── EntityNotFound            404 FABRIC_E_PARTITION_NOT_FOUND / …APPLICATION… / …SERVICE…
    │   └── BackupNotFound            404 FABRIC_E_BACKUP_NOT_FOUND
    ├── ConflictError
    │   ├── PolicyExists              409 FABRIC_E_BACKUP_POLICY_ALREADY_EXISTING
    │   ├── BackupInProgress          409 FABRIC_E_BACKUP_IN_PROGRESS
    │   ├── RestoreInProgress         409 FABRIC_E_RESTORE_IN_PROGRESS
    │   └── JobNotRunning             409 SAFEHOLD_E_JOB_NOT_RUNNING
    ├── AuthError                     401 / 403
    └── RepositoryBusy                503 FABRIC_E_NOT_READY (another replica creates it: retry)
"""

from __future__ import annotations

from safehold.core.errors import ConflictError, NotFoundError, SafeholdError, UsageError

__all__ = [
    "AuthError",
    "BackupInProgress",
    "BackupIsEnabled",
    "BackupNotEnabled",
    "BackupNotFound",
    "EntityNotFound",
    "Forbidden",
    "ForeignRepository",
    "JobNotRunning",
    "PartitionMismatch",
    "PolicyExists",
    "PolicyNotFound",
    "RepositoryBusy",
    "RestoreInProgress",
]


class BackupIsEnabled(UsageError):
    """A policy still has entities mapped to it."""

    code = "FABRIC_E_BACKUP_IS_ENABLED"


class PartitionMismatch(UsageError):
    """The backup does not belong where it is being restored, or id and location disagree."""

    code = "FABRIC_E_RESTORE_SOURCE_TARGET_PARTITION_MISMATCH"


class ForeignRepository(UsageError):
    """The storage holds a repository that this controller's password does not open."""

    code = "SAFEHOLD_E_FOREIGN_REPOSITORY"


class RepositoryBusy(SafeholdError):
    """The storage's repository is being created by another request or replica: retry soon."""

    http_status = 503
    code = "FABRIC_E_NOT_READY"


class PolicyNotFound(NotFoundError):
    """No backup policy has this name."""

    code = "FABRIC_E_BACKUP_POLICY_NOT_EXISTING"


class BackupNotEnabled(NotFoundError):
    """Backup is not enabled (here, or at all) for this entity."""

    code = "FABRIC_E_BACKUP_NOT_ENABLED"


class EntityNotFound(NotFoundError):
    """No registered application, service or partition has this name."""

    def __init__(self, message: str, code: str = "FABRIC_E_PARTITION_NOT_FOUND") -> None:
        super().__init__(message)
        self.code = code


class BackupNotFound(NotFoundError):
    """No backup has this id."""

    code = "FABRIC_E_BACKUP_NOT_FOUND"


class PolicyExists(ConflictError):
    """A backup policy with this name exists already."""

    code = "FABRIC_E_BACKUP_POLICY_ALREADY_EXISTING"


class BackupInProgress(ConflictError):
    """The partition has a backup accepted or running."""

    code = "FABRIC_E_BACKUP_IN_PROGRESS"


class RestoreInProgress(ConflictError):
    """The partition has a restore accepted or running."""

    code = "FABRIC_E_RESTORE_IN_PROGRESS"


class JobNotRunning(ConflictError):
    """An agent reported on a job that is not running on it (any more)."""

    code = "SAFEHOLD_E_JOB_NOT_RUNNING"


class AuthError(SafeholdError):
    """No valid API token was presented."""

    http_status = 401
    code = "SAFEHOLD_E_UNAUTHORIZED"


class Forbidden(SafeholdError):
    """The token's role does not allow the operation."""

    http_status = 403
    code = "SAFEHOLD_E_FORBIDDEN"
