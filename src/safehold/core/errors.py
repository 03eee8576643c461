"""
The root of safehold's error tree, and what every layer builds on.

Each layer has its own module of errors that subclass these::

    SafeholdError                       exit 1, HTTP 500
    ├── UsageError                      exit 2, HTTP 400  (bad input from a user)
    ├── NotFoundError                   exit 16, HTTP 404
    ├── ConflictError                   exit 11, HTTP 409
    ├── storage.errors.StorageError     exit 15, HTTP 502
    └── repo.errors.RepoError           exit 1..14

Every user-facing error carries its exit code, its HTTP status and a stable
``code`` string; the CLI and the API map errors through these attributes only,
so adding an error never means touching an entry point.
Messages never contain secrets: callers pass names and causes, not credentials.
"""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "ExitCode",
    "NotFoundError",
    "SafeholdError",
    "UsageError",
]


class ExitCode:
    """The process exit codes that the CLI documents."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    PARTIAL = 3  # a backup finished, but some files could not be read consistently
    NO_REPOSITORY = 10
    LOCKED = 11
    WRONG_KEY = 12
    INTEGRITY = 13
    UNSUPPORTED_FORMAT = 14
    STORAGE = 15
    NOT_FOUND = 16
    INTERRUPTED = 130


class SafeholdError(Exception):
    """Something went wrong that safehold can explain to a user."""

    exit_code: int = ExitCode.FAILURE
    http_status: int = 500
    code: str = "SAFEHOLD_E_FAILURE"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(SafeholdError):
    """The input is malformed or out of range."""

    exit_code = ExitCode.USAGE
    http_status = 400
    code = "FABRIC_E_INVALID_ARGUMENT"


class NotFoundError(SafeholdError):
    """A named thing (snapshot, path, policy, partition) does not exist."""

    exit_code = ExitCode.NOT_FOUND
    http_status = 404
    code = "FABRIC_E_DOES_NOT_EXIST"


class ConflictError(SafeholdError):
    """The operation conflicts with one already running or with existing state."""

    exit_code = ExitCode.LOCKED
    http_status = 409
    code = "SAFEHOLD_E_CONFLICT"
