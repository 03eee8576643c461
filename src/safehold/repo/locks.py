"""
Repository locks (``docs/format.md`` § Locks).

Backups hold shared locks, prune holds an exclusive one. Storage offers no
compare-and-swap, so taking a lock is: write ours, list all, and back off if a
conflicting live lock is there. Two racing takers then both back off; neither
proceeds wrongly. A background thread refreshes the lock while it is held.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType

from safehold.core.snapshot import format_time, parse_time
from safehold.repo.errors import RepositoryLocked
from safehold.storage import ObjectNotFound, Storage, StorageError

__all__ = ["LockInfo", "RepoLock", "list_locks"]

REFRESH_SECONDS = 120.0
STALE_AFTER = timedelta(minutes=10)


@dataclass(frozen=True)
class LockInfo:
    """A lock file's content."""

    name: str
    host: str
    pid: int
    time: datetime
    exclusive: bool

    def is_stale(self, now: datetime) -> bool:
        """Not refreshed for too long, or its process on this host is gone."""
        if now - self.time > STALE_AFTER:
            return True
        return self.host == socket.gethostname() and not _pid_alive(self.pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_locks(storage: Storage) -> list[LockInfo]:
    """Read every lock file; unreadable ones count as live exclusive locks (the safe choice)."""
    out = []
    for info in storage.list("locks/"):
        try:
            doc = json.loads(storage.get(info.name))
            out.append(
                LockInfo(
                    info.name,
                    doc["host"],
                    int(doc["pid"]),
                    parse_time(doc["time"]),
                    bool(doc["exclusive"]),
                )
            )
        except ObjectNotFound:
            continue
        except (ValueError, KeyError, TypeError):
            out.append(LockInfo(info.name, "?", 0, datetime.now(UTC), True))
    return out


class RepoLock:
    """A held lock; use as a context manager."""

    def __init__(self, storage: Storage, *, exclusive: bool, wait: float = 0.0) -> None:
        self._storage = storage
        self.exclusive = exclusive
        self._wait = wait
        self._name = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh_error: StorageError | None = None

    def _write(self) -> str:
        name = f"locks/{secrets.token_hex(16)}"
        doc = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": format_time(datetime.now(UTC)),
            "exclusive": self.exclusive,
        }
        self._storage.put(name, json.dumps(doc).encode())
        return name

    def _conflicts(self) -> list[LockInfo]:
        now = datetime.now(UTC)
        return [
            lk
            for lk in list_locks(self._storage)
            if lk.name != self._name and (self.exclusive or lk.exclusive) and not lk.is_stale(now)
        ]

    def acquire(self) -> None:
        """Take the lock, retrying for up to ``wait`` seconds; ``RepositoryLocked`` if not."""
        deadline = time.monotonic() + self._wait
        while True:
            self._name = self._write()
            conflicts = self._conflicts()
            if not conflicts:
                break
            self._storage.delete(self._name)
            if time.monotonic() >= deadline:
                c = conflicts[0]
                kind = "an exclusive" if c.exclusive else "a"
                raise RepositoryLocked(
                    f"the repository is locked: {kind} lock is held by pid {c.pid} on {c.host} "
                    f"since {format_time(c.time)}; try again later"
                )
            time.sleep(
                min(1.0 + secrets.randbelow(1000) / 1000, max(0.0, deadline - time.monotonic()))
            )
        self._thread = threading.Thread(
            target=self._refresh_loop, name="safehold-lock", daemon=True
        )
        self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            try:
                old, self._name = self._name, self._write()
                self._storage.delete(old)
            except StorageError as exc:
                self.refresh_error = exc

    def release(self) -> None:
        """Stop refreshing and delete the lock file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._name:
            # A leftover lock goes stale; nothing is lost.
            with contextlib.suppress(StorageError):
                self._storage.delete(self._name)

    def __enter__(self) -> RepoLock:
        self.acquire()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
