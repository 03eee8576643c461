"""
Errors of the state store::

    StateError (core SafeholdError)
    ├── StoreLocked               exit 11  another process has the store open
    ├── StoreClosed               exit 1   the store was closed
    ├── TransactionError          exit 2   a transaction was misused (nested, reused after its end)
    ├── QueueEmpty                exit 16  dequeue or peek on an empty queue
    ├── KeyExists                 exit 11  add of a key that already has a value
    ├── OperationTimedOut         exit 1   an operation's timeout passed (HTTP 504)
    ├── BackupInProgress          exit 11  a backup or restore of this store is already running
    ├── MissingFullBackup         exit 11  an incremental backup has no full backup to follow
    ├── BackupVetoed              exit 1   the post-backup callback refused the backup
    ├── NoBackupFound             exit 16  no backup of this partition matches the request
    ├── InvalidBackupChain        exit 1   the chain to restore is broken (missing parent, gaps)
    ├── InvalidBackup             exit 13  a backup's content is damaged or not a state backup
    └── RestoreSafetyCheckFailed  exit 11  RestorePolicy.SAFE: the store is newer than the backup

The ``code`` strings follow Service Fabric's names where it has one, so that a client
written against Service Fabric recognises them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safehold.core.errors import ConflictError, ExitCode, NotFoundError, SafeholdError, UsageError

if TYPE_CHECKING:
    from safehold.state.backup import BackupInfo

__all__ = [
    "BackupInProgress",
    "BackupVetoed",
    "InvalidBackup",
    "InvalidBackupChain",
    "KeyExists",
    "MissingFullBackup",
    "NoBackupFound",
    "OperationTimedOut",
    "QueueEmpty",
    "RestoreSafetyCheckFailed",
    "StateError",
    "StoreClosed",
    "StoreLocked",
    "TransactionError",
]


class StateError(SafeholdError):
    """A state store operation failed."""

    code = "SAFEHOLD_E_STATE"


class StoreLocked(StateError, ConflictError):
    """Another process (or another ``StateStore`` in this one) has the store open."""

    code = "SAFEHOLD_E_STATE_LOCKED"


class StoreClosed(StateError):
    """The store was closed; open it again to use it."""

    code = "FABRIC_E_OBJECT_CLOSED"


class TransactionError(StateError, UsageError):
    """A transaction was used wrongly: nested, used after its end, or in the data-loss hook."""

    code = "FABRIC_E_INVALID_OPERATION"


class QueueEmpty(StateError, NotFoundError, LookupError):
    """``dequeue`` or ``peek`` found the queue empty."""

    code = "SAFEHOLD_E_QUEUE_EMPTY"


class KeyExists(StateError, ConflictError):
    """``Dictionary.add`` found the key already set (Service Fabric's ``AddAsync`` throws)."""

    code = "SAFEHOLD_E_KEY_EXISTS"


class OperationTimedOut(StateError, TimeoutError):
    """
    An operation's timeout passed before it could start (Service Fabric's ``TimeoutException``).

    Raised while waiting for the write lock, or for earlier commits to finish; a
    commit that has started is never abandoned, so nothing of the transaction was
    committed when this is raised.
    """

    http_status = 504
    code = "FABRIC_E_TIMEOUT"


class BackupInProgress(StateError, ConflictError):
    """A backup or a restore of this store is already running; only one runs at a time."""

    code = "FABRIC_E_BACKUP_IN_PROGRESS"


class MissingFullBackup(StateError, ConflictError):
    """
    An incremental backup was asked for, but there is no full backup to follow.

    That is the case when no backup was accepted since the store was created or
    restored, when the epoch moved since the last backup, or when the change log
    was truncated past the last backup. Take a full backup first.
    """

    code = "FABRIC_E_MISSING_FULL_BACKUP"


class BackupVetoed(StateError):
    """
    The post-backup callback returned ``False`` or raised.

    The backup is not the base of later incrementals, and its snapshot was removed
    from the repository (``info.backup_id`` names it).
    """

    code = "SAFEHOLD_E_BACKUP_VETOED"

    def __init__(self, message: str, info: BackupInfo) -> None:
        super().__init__(message)
        self.info = info


class NoBackupFound(StateError, NotFoundError):
    """No backup of this partition matches the requested id, LSN or time."""

    code = "FABRIC_E_BACKUP_NOT_FOUND"


class InvalidBackupChain(StateError):
    """The chain to restore is broken: a missing parent, a gap in LSNs, mixed chains."""

    code = "FABRIC_E_INVALID_BACKUP_CHAIN"


class InvalidBackup(StateError):
    """A backup's content is damaged, truncated, of another partition, or not a state backup."""

    exit_code = ExitCode.INTEGRITY
    code = "FABRIC_E_INVALID_BACKUP"


class RestoreSafetyCheckFailed(StateError, ConflictError):
    """
    ``RestorePolicy.SAFE`` refused: the store holds newer state than the backup.

    The store's last transaction has a higher epoch than the backup, or an LSN at or
    past the backup's. Use ``RestorePolicy.FORCE`` to overwrite it anyway.
    """

    code = "FABRIC_E_RESTORE_SAFE_CHECK_FAILED"
