"""
The files a restore writes: created on their first blob, kept open while their
blobs arrive, finished (metadata set through the descriptor) and closed after
their last.

Profiling showed where a restore's kernel time went (``docs/benchmark.md``):
opening, truncating and closing each file once to create it and once more for
every blob, then three path lookups more for its metadata. Here a file is
opened once (more only if it was evicted), its metadata is set on the open
descriptor, and a big file is preallocated so that blobs written out of order
by several workers do not fragment it. The number of open descriptors is
bounded: idle ones are closed, least recently used first, and reopened when a
later pack has more for them.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict

from safehold.repo.tree import Node

__all__ = ["OpenFiles", "RestoreFile", "set_meta"]

_PREALLOCATE_MIN = 1024 * 1024  # smaller files are written whole by one blob, or nearly
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_REOPEN = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class RestoreFile:
    """One regular file being restored: where it goes, and how many blob writes it awaits."""

    __slots__ = ("created", "done", "fd", "lock", "node", "path", "pending", "users")

    def __init__(self, path: str, node: Node, pending: int) -> None:
        self.path = path
        self.node = node
        self.pending = pending  # blob writes still to come
        self.fd = -1
        self.users = 0  # workers writing to it right now
        self.created = False
        self.done = False  # finished: every blob written, metadata set, closed
        self.lock = threading.Lock()

    def create(self) -> int:
        """Create the file (never through a symlink, never over something) and size it."""
        fd = os.open(self.path, _CREATE, 0o600)
        self.created = True
        size = self.node.size
        if self.node.sparse:
            os.ftruncate(fd, size)  # holes read as zeros; zero blobs are skipped
        elif size >= _PREALLOCATE_MIN:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError:
                os.ftruncate(fd, size)  # the filesystem cannot preallocate
        return fd


class OpenFiles:
    """
    The open descriptors of the files being restored, at most *limit* of them.

    Thread-safe. Each file has its own lock for its descriptor; the shared lock
    only guards the idle list, so workers create and write files in parallel.
    """

    def __init__(self, limit: int, warnings: list[str]) -> None:
        self._limit = max(1, limit)
        self._lock = threading.Lock()
        self._open = 0
        self._idle: OrderedDict[RestoreFile, None] = OrderedDict()
        self._warnings = warnings

    def acquire(self, f: RestoreFile) -> int:
        """Return an open descriptor of *f*, creating or reopening it if needed."""
        with f.lock:
            opened = f.fd < 0
            if opened:
                f.fd = os.open(f.path, _REOPEN) if f.created else f.create()
            f.users += 1
        with self._lock:
            self._idle.pop(f, None)
            if opened:
                self._open += 1
                self._evict()
        return f.fd

    def release(self, f: RestoreFile, *, finish: bool = True) -> None:
        """
        One blob write to *f* is over (or was given up): after its last, finish it.

        *finish* False: the file's data is damaged, so it is closed without
        metadata (it is removed at the end).
        """
        closed = False
        with f.lock:
            f.users -= 1
            f.pending -= 1
            if f.pending <= 0 and f.users == 0 and f.fd >= 0:
                try:
                    if finish:
                        set_meta(f.path, f.node, self._warnings, fd=f.fd)
                        f.done = True
                finally:
                    os.close(f.fd)
                    f.fd = -1
                    closed = True
        with self._lock:
            if closed:
                self._open -= 1
                self._idle.pop(f, None)
            elif f.fd >= 0 and f.users == 0:
                self._idle[f] = None

    def give_up(self, f: RestoreFile) -> None:
        """A blob of *f* cannot be written (damaged): count it as done, without writing."""
        with f.lock:
            f.users += 1
        self.release(f, finish=False)

    def _evict(self) -> None:
        """Close idle descriptors, least recently used first, while over the limit."""
        while self._open > self._limit and self._idle:
            victim, _ = self._idle.popitem(last=False)
            with victim.lock:
                if victim.users == 0 and victim.fd >= 0:
                    os.close(victim.fd)
                    victim.fd = -1
                    self._open -= 1

    def close_all(self) -> None:
        """Close whatever is still open (after a failure)."""
        with self._lock:
            for f in list(self._idle):
                with f.lock:
                    if f.fd >= 0:
                        os.close(f.fd)
                        f.fd = -1
            self._idle.clear()


def set_meta(p: str, node: Node, warnings: list[str], *, fd: int | None = None) -> None:
    """
    Set owner (as root), mode, extended attributes and times; a failure is a warning.

    With *fd*, through the open descriptor (no path lookup); else by path,
    never following a symlink.
    """
    if node.type == "socket":
        return
    target: int | str = p if fd is None else fd
    # A path is never followed if it is a link; a descriptor is what it is (and
    # os.* refuse follow_symlinks=False with one).
    follow = fd is not None
    try:
        if os.geteuid() == 0:
            os.chown(target, node.uid, node.gid, follow_symlinks=follow)
        if node.type != "symlink":
            os.chmod(target, stat.S_IMODE(node.mode))
            for k, v in node.xattrs.items():
                try:
                    os.setxattr(target, k, v, follow_symlinks=follow)
                except OSError as exc:
                    warnings.append(f"{p}: cannot set xattr {k}: {exc.strerror}")
        os.utime(target, ns=(node.mtime_ns, node.mtime_ns), follow_symlinks=follow)
    except OSError as exc:
        warnings.append(f"{p}: cannot set metadata: {exc.strerror}")
