"""
The store's directory: which database is live, locking, staging, and what a loss leaves.

::

    <store>/
      LOCK                   flock()ed while a StateStore has the directory open
      CURRENT                JSON naming the live database, the partition and its epoch
      state-<gen>.db         the live database (with -wal and -shm beside it)
      staging/               backups being written, restores being built; emptied on open
      lost/<time>/           what a data loss left behind (newest two kept)

A restore builds ``state-<gen+1>.db`` beside the live one and then replaces
``CURRENT`` atomically (write, fsync, rename, fsync the directory). A crash before
the rename leaves the old database in force, after it the new one; the leftover
file is removed at the next open. Because each database has its own name, a WAL
file can never be replayed into the wrong database.

Every function here is blocking.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from safehold.core.snapshot import Epoch
from safehold.state.errors import StoreLocked

__all__ = [
    "Current",
    "DamagedPointer",
    "database_files",
    "failpoint",
    "fsync_dir",
    "fsync_file",
    "lock_directory",
    "move_aside",
    "read_current",
    "remove_strays",
    "staging_dir",
    "write_current",
]

CURRENT = "CURRENT"
LOCK = "LOCK"
_DB_RE = re.compile(r"^state-(\d+)\.db(-wal|-shm|-journal)?$")
_KEEP_LOST = 2

# Crash tests set this to a failpoint name; the process then kills itself there with
# SIGKILL, which no cleanup can intercept. Read once, so the check costs nothing.
_FAILPOINT = os.environ.get("SAFEHOLD_STATE_FAILPOINT", "")


def failpoint(name: str) -> None:
    """Die at once with SIGKILL if the crash tests asked for a crash at *name*."""
    if name == _FAILPOINT:
        os.kill(os.getpid(), signal.SIGKILL)


class DamagedPointer(Exception):
    """``CURRENT`` exists but cannot be read: the store is damaged."""


@dataclass(frozen=True)
class Current:
    """
    What ``CURRENT`` says: the live database's generation, the partition, its epoch.

    ``pending_loss`` is set when the database was recreated after a data loss whose
    hook has not yet finished: the next open runs the hook again, so a crash or a
    failing hook never turns a loss into a silently empty store.
    """

    generation: int
    partition: str
    epoch: Epoch
    pending_loss: str | None = None

    @property
    def db_name(self) -> str:
        """The live database's file name."""
        return f"state-{self.generation}.db"


def fsync_dir(path: Path) -> None:
    """Make a rename or a deletion in *path* durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a file's content to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_directory(root: Path) -> int:
    """
    Take the store's lock and return its file descriptor (close it to release).

    ``flock`` locks belong to the open file, so a second ``StateStore`` on the same
    directory is refused even inside the same process; the kernel drops the lock
    when the process dies, so a crash never leaves a stale lock.

    Raises:
        StoreLocked: someone else holds it.
    """
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise StoreLocked(f"the state store at {root} is open elsewhere") from exc
    return fd


def read_current(root: Path) -> Current | None:
    """
    Read ``CURRENT``; None when it does not exist.

    Raises:
        DamagedPointer: it exists but is not what this program writes.
    """
    try:
        text = (root / CURRENT).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DamagedPointer(f"{CURRENT} cannot be read: {exc}") from exc
    try:
        doc = json.loads(text)
        return Current(
            generation=int(doc["generation"]),
            partition=str(doc["partition"]),
            epoch=Epoch(int(doc["epoch"][0]), int(doc["epoch"][1])),
            pending_loss=None if doc.get("pending_loss") is None else str(doc["pending_loss"]),
        )
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise DamagedPointer(f"{CURRENT} is damaged: {exc}") from exc


def write_current(root: Path, current: Current) -> None:
    """Replace ``CURRENT`` atomically and durably."""
    doc = {
        "format": 1,
        "generation": current.generation,
        "partition": current.partition,
        "epoch": [current.epoch.data_loss_number, current.epoch.configuration_number],
        "pending_loss": current.pending_loss,
    }
    tmp = root / f"{CURRENT}.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(doc, f)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    failpoint("current-written")
    tmp.replace(root / CURRENT)
    fsync_dir(root)


def database_files(root: Path) -> dict[int, list[Path]]:
    """Every ``state-<gen>.db`` file and its companions, by generation."""
    found: dict[int, list[Path]] = {}
    for p in root.iterdir():
        m = _DB_RE.match(p.name)
        if m:
            found.setdefault(int(m.group(1)), []).append(p)
    return found


def remove_strays(root: Path, keep: int | None) -> None:
    """
    Remove every database file but generation *keep*'s, empty staging and drop temp files.

    Strays are what a crash left: a restore's new database that never became
    current, or the old one a restore replaced.
    """
    for gen, paths in database_files(root).items():
        if gen != keep:
            for p in paths:
                p.unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (root / f"{CURRENT}.tmp").unlink()
    staging = root / "staging"
    if staging.exists():
        shutil.rmtree(staging)
    fsync_dir(root)


def staging_dir(root: Path) -> Path:
    """The directory for backups being written and restores being built."""
    path = root / "staging"
    path.mkdir(exist_ok=True)
    return path


def move_aside(root: Path, reason: str) -> Path | None:
    """
    Move the database files and ``CURRENT`` into ``lost/<time>/``, and return that folder.

    A loss never deletes what it cannot put back: whatever is left of the lost state
    stays there for a person to look at, until two newer losses push it out.
    Returns None when there was nothing to move.
    """
    movable = [p for paths in database_files(root).values() for p in paths]
    if (root / CURRENT).exists():
        movable.append(root / CURRENT)
    if not movable:
        return None
    lost = root / "lost"
    lost.mkdir(exist_ok=True)
    dest = lost / datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    dest.mkdir()
    (dest / "REASON").write_text(reason + "\n", encoding="utf-8")
    for p in movable:
        p.rename(dest / p.name)
    for old in sorted(lost.iterdir())[:-_KEEP_LOST]:
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(root)
    return dest
