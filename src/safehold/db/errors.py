"""
Errors of the database layer::

    DbError (core SafeholdError)            exit 1,  HTTP 500
    ├── DbToolError                         exit 1,  HTTP 500  a database program failed
    ├── WalMissing (NotFoundError)          exit 16, HTTP 404  a WAL file is not in the archive
    ├── WalConflict (ConflictError)         exit 11, HTTP 409  another file has that name
    ├── BackupIncomplete                    exit 1,  HTTP 500  the WAL a backup needs never arrived
    └── RecoveryTargetError (UsageError)    exit 2,  HTTP 400  no backup or WAL reaches the target

Messages name files, LSNs and times; never a connection string's password.
"""

from __future__ import annotations

from safehold.core.errors import ConflictError, ExitCode, SafeholdError, UsageError

__all__ = [
    "BackupIncomplete",
    "DbError",
    "DbToolError",
    "RecoveryTargetError",
    "WalConflict",
    "WalMissing",
]


class DbError(SafeholdError):
    """A database backup, archive or restore operation failed."""

    code = "SAFEHOLD_E_DATABASE"


class DbToolError(DbError):
    """A database program (pg_basebackup, postgres, pg_ctl) exited with an error."""

    code = "SAFEHOLD_E_DATABASE_TOOL"


class WalMissing(DbError):
    """A WAL file that was asked for, or that a backup needs, is not in the archive."""

    exit_code = ExitCode.NOT_FOUND
    http_status = 404
    code = "SAFEHOLD_E_WAL_MISSING"


class WalConflict(ConflictError, DbError):
    """The archive already holds a different file under that WAL name."""

    code = "SAFEHOLD_E_WAL_CONFLICT"


class BackupIncomplete(DbError):
    """The WAL between a backup's start and stop did not reach the archive in time."""

    code = "SAFEHOLD_E_BACKUP_INCOMPLETE"


class RecoveryTargetError(UsageError, DbError):
    """The recovery target lies outside what the backups and the archived WAL can reach."""

    exit_code = ExitCode.USAGE
    http_status = 400
    code = "SAFEHOLD_E_RECOVERY_TARGET"
