"""
What every engine command shares: options, the password, opening a repository,
output as text or JSON.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer
from rich.console import Console

from safehold.core.errors import UsageError
from safehold.core.progress import NullProgress, ProgressSink
from safehold.core.snapshot import Snapshot, SnapshotFilter
from safehold.repo import Repository
from safehold.storage import Storage
from safehold.storage.limiter import LimitedStorage, TokenBucket
from safehold.storage.registry import open_storage

__all__ = [
    "HostFilterOpt",
    "JsonOpt",
    "PasswordFileOpt",
    "PathFilterOpt",
    "RepoOpt",
    "SkipDamagedOpt",
    "TagFilterOpt",
    "console",
    "err_console",
    "follow_stream",
    "open_repo",
    "parse_rate",
    "parse_size",
    "print_json",
    "progress_sink",
    "read_password",
    "select_snapshot",
    "set_limits",
    "snapshot_filter",
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
HostFilterOpt = Annotated[
    list[str] | None,
    typer.Option("--host", "-H", help="Only snapshots of this host (repeatable: any of them)."),
]
TagFilterOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--tag", help="Only snapshots with these tags: 'a,b' needs both; repeat for either."
    ),
]
PathFilterOpt = Annotated[
    list[str] | None,
    typer.Option("--path", help="Only snapshots that include this path (repeatable: all of them)."),
]
SkipDamagedOpt = Annotated[
    bool,
    typer.Option(
        "--skip-damaged",
        help="With 'latest': if a snapshot file is damaged, warn and use the newest readable "
        "snapshot (by default 'latest' then fails with exit 13).",
    ),
]

_limits: dict[str, int] = {}

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?(?:/s)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, *, unit: int = 1, what: str = "a size") -> int:
    """
    Parse a size such as ``100``, ``500K``, ``2M``, ``1.5GiB`` (binary: K = 1024).

    A bare number counts in *unit* bytes.

    Raises:
        UsageError: the text is not a positive size.
    """
    m = _RATE.match(text)
    if not m:
        raise UsageError(f"{text!r} is not {what}: give a number, or e.g. 500K, 2M, 1G")
    number, suffix, b = float(m.group(1)), m.group(2).lower(), m.group(3)
    size = int(number * (_UNITS[suffix] if suffix or b else unit))
    if size <= 0:
        raise UsageError(f"{text!r}: {what} must be positive")
    return size


def parse_rate(text: str) -> int:
    """
    Parse a bandwidth: ``500`` (KiB/s, as restic reads it), ``500K``, ``2M``, ``1.5MiB/s``.

    Returns bytes a second.

    Raises:
        UsageError: the text is not a positive rate.
    """
    return parse_size(text, unit=1024, what="a rate")


def set_limits(upload: str | None, download: str | None) -> None:
    """Set the bandwidth limits for the storage that commands open (global options)."""
    _limits.clear()
    if upload:
        _limits["upload"] = parse_rate(upload)
    if download:
        _limits["download"] = parse_rate(download)


def snapshot_filter(
    hosts: list[str] | None, tags: list[str] | None, paths: list[str] | None
) -> SnapshotFilter:
    """The ``--host``/``--tag``/``--path`` options as a filter; paths are made absolute."""
    return SnapshotFilter.parse(hosts, tags, [os.path.abspath(p) for p in paths or ()])


def select_snapshot(
    repo: Repository, ref: str, where: SnapshotFilter, *, skip_damaged: bool = False
) -> Snapshot:
    """
    Resolve a snapshot argument; the filter selects what ``latest`` means.

    With *skip_damaged*, a damaged snapshot file is warned about by name,
    and so is the snapshot used instead.
    """
    snap = repo.find_snapshot(ref, where=where, skip_damaged=skip_damaged)
    if ref == "latest" and repo.damaged_snapshots:
        for msg in repo.damaged_snapshots:
            err_console.print(f"WARNING: {msg}", markup=False, highlight=False, soft_wrap=True)
        err_console.print(
            f"WARNING: 'latest' may not be the newest snapshot: using {snap.id} "
            f"of {snap.time:%Y-%m-%d %H:%M:%S} UTC, the newest readable one",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    return snap


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
    storage = open_storage(repo_url)
    if not _limits:
        return storage
    up, down = _limits.get("upload"), _limits.get("download")
    return LimitedStorage(
        storage,
        upload=TokenBucket(up) if up else None,
        download=TokenBucket(down) if down else None,
    )


@contextmanager
def open_repo(
    repo_url: str, password_file: Path | None, *, load_index: bool = True
) -> Iterator[Repository]:
    """Open a repository for one command; the format is checked before the password is read."""
    storage = storage_for(repo_url)
    Repository.read_config(storage)
    repo = Repository.open(
        storage, read_password(password_file), load_index=load_index, owns_storage=True
    )
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


class _Stream(Protocol):
    @property
    def running(self) -> bool: ...
    def stop(self) -> None: ...


def follow_stream(stream: _Stream, banner: str) -> bool:
    """
    Print *banner*, then wait while *stream* (a WAL or binlog receiver) runs, until
    SIGTERM or Ctrl-C; stop it. Returns whether SIGTERM asked to stop (the caller
    reports a stream that ended on its own).
    """
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print(banner)
    try:
        while stream.running and not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        stream.stop()
    return stop.is_set()
