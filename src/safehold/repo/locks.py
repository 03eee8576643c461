"""
Repository locks (``docs/format.md`` § Locks).

Backups hold shared locks, prune holds an exclusive one. Storage offers no
compare-and-swap, so taking a lock is: write ours, list all, and back off if a
conflicting live lock is there. Two racing takers then both back off; neither
proceeds wrongly. A background thread refreshes the lock while it is held.

A lock file that cannot be parsed is damage, not a lock being written (every
put is atomic): it counts as stale, and stale lock files are removed by the
next process that takes a lock, and by ``unlock``.

Within one process, shared locks on one storage location are one lock file:
a job that takes a shared lock while another job of the process holds one
joins it (no write, no listing); the file is refreshed while any holder is
left, through a holder's storage, and deleted by the last one to release.
The file then exists, without a gap, from the first holder's acquisition to
the last one's release, so no exclusive lock can be taken in between:
exactly what each holder's own file would guarantee.
"""

from __future__ import annotations

import contextlib
import json
import logging
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

__all__ = ["LockInfo", "RepoLock", "list_locks", "pid_alive", "remove_locks"]

REFRESH_SECONDS = 120.0
STALE_AFTER = timedelta(minutes=10)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_log = logging.getLogger(__name__)


class _Joined:
    """A shared lock file of this process and the locks holding it."""

    def __init__(self, name: str, first: RepoLock) -> None:
        self.name = name
        self.holders = [first]
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def refresh_loop(self) -> None:
        while not self.stop.wait(REFRESH_SECONDS):
            with _joined_lock:
                if not self.holders:
                    return
                holder = self.holders[0]  # its storage is open while it holds
                try:
                    old, self.name = self.name, holder._write()
                    holder._storage.delete(old)
                except StorageError as exc:
                    holder.refresh_error = exc


_joined: dict[tuple[int, str], _Joined] = {}  # by (pid: not a forked parent's, location)
_joined_lock = threading.Lock()


@dataclass(frozen=True)
class LockInfo:
    """A lock file's content."""

    name: str
    host: str
    pid: int
    time: datetime
    exclusive: bool
    damaged: str = ""
    """Why the file could not be read, if it could not; such a lock is stale."""

    def is_stale(self, now: datetime) -> bool:
        """Damaged, not refreshed for too long, or its process on this host is gone."""
        # A time far in the future is as suspect as one far in the past (clocks
        # skewed that much, or a damaged digit), and must not hold the lock for years.
        if self.damaged or abs(now - self.time) > STALE_AFTER:
            return True
        return self.host == socket.gethostname() and not pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    """Whether process *pid* exists on this host (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_locks(storage: Storage) -> list[LockInfo]:
    """
    Read every lock file.

    One that cannot be parsed is returned with ``damaged`` set (and so stale):
    puts are atomic, so it is not a lock being written but a damaged file, and
    counting it as held would block the repository for good.
    """
    out = []
    for info in storage.list("locks/"):
        try:
            doc = json.loads(storage.get(info.name))
            if not isinstance(doc, dict) or not isinstance(doc["exclusive"], bool):
                raise TypeError("not a lock document")
            out.append(
                LockInfo(
                    info.name,
                    str(doc["host"]),
                    int(doc["pid"]),
                    parse_time(doc["time"]),
                    doc["exclusive"],
                )
            )
        except ObjectNotFound:
            continue
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            out.append(LockInfo(info.name, "?", 0, _EPOCH, True, damaged=why))
    return out


def remove_locks(storage: Storage, *, remove_all: bool = False) -> list[LockInfo]:
    """
    Remove stale lock files (damaged, not refreshed, or of a dead process on this host).

    With *remove_all*, remove every lock file: only safe when no safehold
    process uses the repository. Returns the locks removed.
    """
    now = datetime.now(UTC)
    removed = []
    for lk in list_locks(storage):
        if remove_all or lk.is_stale(now):
            storage.delete(lk.name)
            removed.append(lk)
    return removed


class RepoLock:
    """A held lock; use as a context manager."""

    def __init__(self, storage: Storage, *, exclusive: bool, wait: float = 0.0) -> None:
        self._storage = storage
        self.exclusive = exclusive
        self._wait = wait
        self._name = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._joined: _Joined | None = None
        self.refresh_error: StorageError | None = None

    @property
    def _where(self) -> tuple[int, str]:
        return os.getpid(), self._storage.properties.location

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
        """The live locks that conflict with ours; stale lock files are removed on the way."""
        now = datetime.now(UTC)
        live = []
        for lk in list_locks(self._storage):
            if lk.name == self._name:
                continue
            if lk.is_stale(now):
                self._remove_stale(lk)
            elif self.exclusive or lk.exclusive:
                live.append(lk)
        return live

    def _remove_stale(self, lk: LockInfo) -> None:
        if lk.damaged:
            _log.warning("lock file %s is damaged (%s); removing it", lk.name, lk.damaged)
        # Best effort: a stale lock left behind is ignored by everyone anyway.
        with contextlib.suppress(StorageError):
            self._storage.delete(lk.name)

    def acquire(self) -> None:
        """Take the lock, retrying for up to ``wait`` seconds; ``RepositoryLocked`` if not."""
        if not self.exclusive:
            with _joined_lock:
                joined = _joined.get(self._where)
                if joined is not None:  # this process holds a shared lock here: join it
                    joined.holders.append(self)
                    self._joined = joined
                    return
        self._take()
        if not self.exclusive:
            with _joined_lock:
                if self._where not in _joined:
                    joined = self._joined = _joined[self._where] = _Joined(self._name, self)
                    joined.thread = threading.Thread(
                        target=joined.refresh_loop, name="safehold-lock", daemon=True
                    )
                    joined.thread.start()
                    return
        self._thread = threading.Thread(
            target=self._refresh_loop, name="safehold-lock", daemon=True
        )
        self._thread.start()

    def _take(self) -> None:
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
                    f"the repository is locked: {kind} lock ({c.name}) is held by pid {c.pid} "
                    f"on {c.host} since {format_time(c.time)}; try again later, or, if no "
                    "safehold process uses the repository, run `safehold unlock --remove-all`"
                )
            time.sleep(
                min(1.0 + secrets.randbelow(1000) / 1000, max(0.0, deadline - time.monotonic()))
            )

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            try:
                old, self._name = self._name, self._write()
                self._storage.delete(old)
            except StorageError as exc:
                self.refresh_error = exc

    def release(self) -> None:
        """Stop refreshing and delete the lock file (the last holder of a joined one)."""
        joined, self._joined = self._joined, None
        if joined is not None:
            with _joined_lock:
                joined.holders.remove(self)
                if joined.holders:
                    return
                if _joined.get(self._where) is joined:
                    del _joined[self._where]
                joined.stop.set()
                name = joined.name
            if joined.thread is not None:
                joined.thread.join()
            # A leftover lock goes stale; nothing is lost.
            with contextlib.suppress(StorageError):
                self._storage.delete(name)
            return
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
