"""
What every engine command shares: options, the password, opening a repository,
output as text or JSON.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from safehold.core.errors import UsageError
from safehold.core.progress import NullProgress, ProgressSink
from safehold.repo import Repository
from safehold.storage import Storage
from safehold.storage.registry import open_storage

__all__ = [
    "JsonOpt",
    "PasswordFileOpt",
    "RepoOpt",
    "console",
    "err_console",
    "open_repo",
    "print_json",
    "progress_sink",
    "read_password",
    "storage_for",
]

console = Console()
err_console = Console(stderr=True)

RepoOpt = Annotated[
    str,
    typer.Option(
        "--repo",
        "-r",
        envvar="SAFEHOLD_REPO",
        show_envvar=True,
        help="Repository: a path, file://PATH, azure://CONTAINER, s3://BUCKET or smb://HOST/SHARE.",
    ),
]
PasswordFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        envvar="SAFEHOLD_PASSWORD_FILE",
        show_envvar=True,
        help="Read the password from this file (else $SAFEHOLD_PASSWORD, else a prompt).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def read_password(password_file: Path | None, *, confirm: bool = False) -> str:
    """
    Find the password: a file, ``$SAFEHOLD_PASSWORD``, or a prompt on the terminal.

    Raises:
        UsageError: none of them is available, or the prompt's two entries differ.
    """
    if password_file is not None:
        try:
            text = password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"cannot read the password file {password_file}: {exc.strerror}"
            ) from exc
        pw = text.rstrip("\r\n")
    elif os.environ.get("SAFEHOLD_PASSWORD"):
        pw = os.environ["SAFEHOLD_PASSWORD"]
    else:
        try:
            with open("/dev/tty"):
                pass
        except OSError as exc:
            raise UsageError(
                "no password: set SAFEHOLD_PASSWORD, pass --password-file, or run in a terminal"
            ) from exc
        pw = getpass.getpass("repository password: ")
        if confirm and getpass.getpass("enter it again: ") != pw:
            raise UsageError("the two passwords differ")
    if not pw:
        raise UsageError("the password is empty")
    return pw


def storage_for(repo_url: str) -> Storage:
    """Open the storage that the repository URL names."""
    if not repo_url:
        raise UsageError("no repository given: pass --repo or set SAFEHOLD_REPO")
    return open_storage(repo_url)


@contextmanager
def open_repo(
    repo_url: str, password_file: Path | None, *, load_index: bool = True
) -> Iterator[Repository]:
    """Open a repository for one command; the format is checked before the password is read."""
    storage = storage_for(repo_url)
    Repository.read_config(storage)
    repo = Repository.open(storage, read_password(password_file), load_index=load_index)
    try:
        yield repo
    finally:
        repo.close()


def _default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat().replace("+00:00", "Z")
    if is_dataclass(o) and not isinstance(o, type):
        return asdict(o)
    if isinstance(o, bytes):
        return o.hex()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"cannot serialize {type(o).__name__}")


def print_json(value: Any) -> None:
    """Print *value* as JSON on stdout."""
    sys.stdout.write(json.dumps(value, default=_default, indent=2) + "\n")


def progress_sink(json_output: bool) -> ProgressSink:
    """A progress bar on a terminal's stderr; nothing for JSON output or pipes."""
    if json_output or not sys.stderr.isatty():
        return NullProgress()
    from safehold.cli.progress import RichProgress

    return RichProgress(err_console)
