"""
The one way safehold finds a repository password, for the CLI, the controller and agents.

Precedence: a password file given explicitly, then ``$SAFEHOLD_PASSWORD``, then
a default file (the controller's data directory) or the caller's own fallback
(the CLI prompts on a terminal). A file's password is its content without the
final line break; nothing else is stripped, so spaces inside and around a
password are kept. An empty password is refused.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from safehold.core.errors import UsageError

__all__ = ["ENV", "create_password_file", "find_password", "read_password_file"]

ENV = "SAFEHOLD_PASSWORD"


def read_password_file(path: Path) -> str:
    """
    Return the password in *path* (its content less the final line break).

    Raises:
        UsageError: the file cannot be read, or holds an empty password.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the password file {path}: {exc.strerror}") from exc
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise UsageError(f"the password file {path} is empty")
    return password


def find_password(
    explicit: Path | None,
    *,
    default_file: Path | None = None,
    environ: Mapping[str, str] = os.environ,
) -> str | None:
    """
    Return the password from *explicit*, the environment, or *default_file*, in that order.

    ``None`` when none of them has one (and *default_file* does not exist).
    """
    if explicit is not None:
        return read_password_file(explicit)
    if environ.get(ENV):
        return environ[ENV]
    if default_file is not None and default_file.exists():
        return read_password_file(default_file)
    return None


def create_password_file(path: Path) -> str:
    """Create *path* (mode 0600, never overwriting) with a new random password; return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return read_password_file(path)
