"""
Errors of the engine::

    RepoError (core SafeholdError)
    ├── RepositoryNotFound      exit 10  no repository at that location
    ├── RepositoryExists        exit 1   init over an existing repository
    ├── RepositoryLocked        exit 11  a conflicting lock is held
    ├── WrongPassword           exit 12  no key file opens with that passphrase
    ├── KeyNotAllowed           exit 12  the key cannot do this (a write-only key reading)
    ├── IntegrityError          exit 13  a file is damaged; the message names it
    ├── UnsupportedFormat       exit 14  the repository's format is newer than this program
    ├── SnapshotNotFound        exit 16  no snapshot matches the given id
    └── KeyNotFound             exit 16  no key file matches the given id
"""

from __future__ import annotations

from safehold.core.errors import ExitCode, NotFoundError, SafeholdError

__all__ = [
    "IntegrityError",
    "KeyNotAllowed",
    "KeyNotFound",
    "RepoError",
    "RepositoryExists",
    "RepositoryLocked",
    "RepositoryNotFound",
    "SnapshotNotFound",
    "UnsupportedFormat",
    "WrongPassword",
]


class RepoError(SafeholdError):
    """An engine operation failed."""

    code = "SAFEHOLD_E_REPOSITORY"


class RepositoryNotFound(RepoError):
    """There is no repository at the given location."""

    exit_code = ExitCode.NO_REPOSITORY
    http_status = 404
    code = "SAFEHOLD_E_NO_REPOSITORY"


class RepositoryExists(RepoError):
    """A repository already exists at the location given to init."""

    http_status = 409
    code = "SAFEHOLD_E_REPOSITORY_EXISTS"


class RepositoryLocked(RepoError):
    """Another process holds a lock that conflicts with this operation."""

    exit_code = ExitCode.LOCKED
    http_status = 409
    code = "SAFEHOLD_E_LOCKED"


class WrongPassword(RepoError):
    """No key file of the repository opens with the given passphrase."""

    exit_code = ExitCode.WRONG_KEY
    http_status = 401
    code = "SAFEHOLD_E_WRONG_PASSWORD"


class KeyNotAllowed(RepoError):
    """The key in use may not do this (a write-only key cannot read)."""

    exit_code = ExitCode.WRONG_KEY
    http_status = 403
    code = "SAFEHOLD_E_KEY_NOT_ALLOWED"


class IntegrityError(RepoError):
    """Stored data failed verification; the message names the damaged file."""

    exit_code = ExitCode.INTEGRITY
    http_status = 500
    code = "SAFEHOLD_E_INTEGRITY"


class UnsupportedFormat(RepoError):
    """The repository was written by a newer format version."""

    exit_code = ExitCode.UNSUPPORTED_FORMAT
    http_status = 400
    code = "SAFEHOLD_E_UNSUPPORTED_FORMAT"


class SnapshotNotFound(RepoError, NotFoundError):
    """No snapshot matches the given id, prefix or name."""

    exit_code = ExitCode.NOT_FOUND
    http_status = 404
    code = "FABRIC_E_BACKUP_NOT_FOUND"


class KeyNotFound(RepoError, NotFoundError):
    """No key file matches the given id or prefix."""

    exit_code = ExitCode.NOT_FOUND
    http_status = 404
    code = "SAFEHOLD_E_KEY_NOT_FOUND"
