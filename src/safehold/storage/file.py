"""
The filesystem backend: a local path or a mounted share (NFS, SMB, CIFS).

Objects are plain files under the root; a name's ``/`` separators are
directories. ``put`` writes a temporary file in the same directory, fsyncs it
and renames it over the name, so the store never sees partially written data,
even after a crash or power loss.

**Append-only mode** (``enable_lock(LockPolicy("append-only"))``) is kept by
the filesystem, not by this client: each object gets the Linux inode flag
``immutable`` once it is in place, and each directory that holds objects the
flag ``append-only``, so that no process, whatever its user, can delete,
rename, replace or change an object, nor move a directory away, until someone
with ``CAP_LINUX_IMMUTABLE`` clears the flags (``chattr -R -ia``). Writes then
stage their temporary file in ``.tmp-staging/`` (a rename out of an
append-only directory is refused). Lock files stay mutable.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from safehold.storage.base import (
    LOCK_POLICY_NAME,
    Hold,
    LockPolicy,
    ObjectInfo,
    StorageProperties,
    validate_name,
)
from safehold.storage.errors import (
    ImmutabilityUnsupported,
    ObjectLocked,
    ObjectNotFound,
    ReadRangeError,
    StorageError,
    StorageFull,
    StorageNotFound,
    StoragePermissionDenied,
    StorageUnavailable,
)

__all__ = ["FileStorage"]

_TMP_PREFIX = ".tmp-"
_STAGING = ".tmp-staging"

# linux/fs.h: FS_IOC_GETFLAGS, FS_IOC_SETFLAGS and two of the flags (chattr +i, +a).
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FL_IMMUTABLE = 0x10
_FL_APPEND = 0x20


class FileStorage:
    """A storage on a local or mounted filesystem."""

    def __init__(self, root: str | os.PathLike[str], *, connections: int = 2) -> None:
        self._root = Path(root).absolute()
        self._props = StorageProperties(
            location=str(self._root), connections=connections, accepts_views=True
        )
        self._made_dirs: set[Path] = set()
        self._policy: LockPolicy | None = None
        self._policy_read = False

    @property
    def properties(self) -> StorageProperties:
        """Describe the storage."""
        return self._props

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """Turn OS errors into storage errors that name the location and the cause."""
        try:
            yield
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{what}: not found in {self._root}") from exc
        except PermissionError as exc:
            raise StoragePermissionDenied(f"{what}: permission denied in {self._root}") from exc
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"{what}: no space left in {self._root}") from exc
            if exc.errno in (errno.EIO, errno.ETIMEDOUT, errno.EAGAIN, errno.ESTALE):
                raise StorageUnavailable(f"{what}: {exc.strerror} in {self._root}") from exc
            raise StorageError(f"{what}: {exc.strerror} in {self._root}") from exc

    def _path(self, name: str) -> Path:
        return self._root / validate_name(name)

    def create(self) -> None:
        """Create the root directory if it does not exist."""
        with self._translate("create"):
            self._root.mkdir(parents=True, exist_ok=True)

    def _check_root(self) -> None:
        if not self._root.is_dir():
            raise StorageNotFound(f"directory {self._root} does not exist")

    def stat(self, name: str) -> ObjectInfo:
        """Return the object's size."""
        path = self._path(name)
        with self._translate(name):
            st = path.stat()
        return ObjectInfo(name, st.st_size)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield objects whose names start with *prefix*, sorted by name."""
        self._check_root()
        # Descend only into the directory that can hold matches, then filter.
        head, _, _ = prefix.rpartition("/")
        start = self._root / head if head else self._root
        if not start.is_dir():
            return
        yield from self._walk(str(start), head + "/" if head else "", prefix)

    def _walk(self, directory: str, rel_dir: str, prefix: str) -> Iterator[ObjectInfo]:
        # Names are built as strings: a listing of ``index/`` (one file per backup)
        # runs before every backup, and pathlib cost ~100 µs an entry there.
        with self._translate(f"list {directory}"):
            # A directory sorts as "name/", so that walking directories in this
            # order yields full names in global sorted order ("ab-c" < "ab/x").
            entries = sorted(
                os.scandir(directory),
                key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=False) else e.name,
            )
        for entry in entries:
            if entry.name.startswith(_TMP_PREFIX):
                continue
            rel = rel_dir + entry.name
            if entry.is_dir(follow_symlinks=False):
                if (rel + "/").startswith(prefix) or prefix.startswith(rel + "/"):
                    yield from self._walk(entry.path, rel + "/", prefix)
            elif rel.startswith(prefix):
                try:
                    size = entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue  # deleted since the directory was read: not there any more
                except OSError:
                    with self._translate(rel):
                        raise
                yield ObjectInfo(rel, size)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Read *length* bytes at *offset*; a short read raises ``ReadRangeError``."""
        path = self._path(name)
        with self._translate(name), path.open("rb") as f:
            if offset:
                f.seek(offset)
            data = f.read() if length is None else f.read(length)
        if length is not None and len(data) != length:
            raise ReadRangeError(
                f"{name}: asked for {length} bytes at {offset}, got {len(data)} in {self._root}"
            )
        return data

    def put(self, name: str, data: bytes) -> None:
        """Write atomically: temporary file, fsync, rename, fsync of the directory."""
        path = self._path(name)
        self._check_root()
        policy = self.lock_policy()
        if policy is not None and policy.covers(name):
            self._put_held(name, path, data)
            return
        parent = path.parent
        tmp = parent / f"{_TMP_PREFIX}{secrets.token_hex(8)}"
        with self._translate(name):
            if parent not in self._made_dirs:
                self._make_dirs(parent, append_only=False)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    view = memoryview(data)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            _fsync_dir(parent)

    def _make_dirs(self, parent: Path, *, append_only: bool) -> None:
        """Create *parent* and the directories above it; flag new ones append-only if asked."""
        todo = []
        d = parent
        while d != self._root and not d.is_dir():
            todo.append(d)
            d = d.parent
        for d in reversed(todo):
            d.mkdir(exist_ok=True)
            if append_only and d.relative_to(self._root).parts[0] != "locks":
                _add_flag(d, _FL_APPEND)
        self._made_dirs.add(parent)

    def _put_held(self, name: str, path: Path, data: bytes) -> None:
        """Write a held object: staged, renamed into place (never over a name), then flagged."""
        with self._translate(name):
            if path.exists():
                if _same_bytes(path, data):
                    return  # a retried write: the object is there already
                raise ObjectLocked(
                    f"{name}: cannot replace: {name} held (append-only) for good in {self._root}"
                )
            staging = self._root / _STAGING
            staging.mkdir(exist_ok=True)
            parent = path.parent
            if parent not in self._made_dirs:
                self._make_dirs(parent, append_only=True)
            tmp = staging / f"{_TMP_PREFIX}{secrets.token_hex(8)}"
            try:
                _write_synced(tmp, data)
                # link, not rename: it never replaces a name that appeared meanwhile.
                os.link(tmp, path)
            except FileExistsError as exc:
                if not _same_bytes(path, data):
                    raise ObjectLocked(
                        f"{name}: cannot replace: held for good in {self._root}"
                    ) from exc
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(parent)
            _add_flag(path, _FL_IMMUTABLE)

    def delete(self, name: str) -> None:
        """Remove the file; a missing file is fine; a held file raises ``ObjectLocked``."""
        path = self._path(name)
        hold = self.hold(name)
        if hold is not None:
            raise ObjectLocked(f"{name}: cannot delete: {hold.describe()} in {self._root}")
        with self._translate(name):
            path.unlink(missing_ok=True)

    # ImmutableStorage
    def lock_policy(self) -> LockPolicy | None:
        """Return the policy recorded in the storage (read once)."""
        if not self._policy_read:
            try:
                data = self.get(LOCK_POLICY_NAME)
            except ObjectNotFound:
                data = None
            self._policy = LockPolicy.from_bytes(data) if data is not None else None
            self._policy_read = True
        return self._policy

    def enable_lock(self, policy: LockPolicy) -> None:
        """
        Make the storage append-only: flag the root, record the policy.

        Raises:
            ImmutabilityUnsupported: the mode is not ``append-only``, or this
                process or filesystem cannot set inode flags.
        """
        if policy.mode != "append-only":
            raise ImmutabilityUnsupported(
                f"a filesystem repository can be append-only, not {policy.mode}: {self._root}"
            )
        self.create()
        with self._translate("enable append-only"):
            _add_flag(self._root, _FL_APPEND)
        self._policy, self._policy_read = policy, True
        self.put(LOCK_POLICY_NAME, policy.to_bytes())

    def hold(self, name: str) -> Hold | None:
        """An object under an append-only policy is held for good."""
        policy = self.lock_policy()
        if policy is None or not policy.covers(name) or not self._path(name).is_file():
            return None
        return Hold(name, policy.mode, None)

    def extend_hold(self, name: str, until: datetime) -> None:
        """Nothing to do: append-only holds never end."""
        del until
        self.stat(name)

    def close(self) -> None:
        """Nothing to release."""


def _write_synced(path: Path, data: bytes) -> None:
    """Create *path* with *data* and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_bytes(path: Path, data: bytes) -> bool:
    """Whether the file at *path* holds exactly *data*."""
    if path.stat().st_size != len(data):
        return False
    return path.read_bytes() == bytes(data)


def _add_flag(path: Path, flag: int) -> None:
    """
    Set an inode flag (``chattr``) on *path*.

    Raises:
        ImmutabilityUnsupported: the filesystem has no such flags, or this
            process lacks ``CAP_LINUX_IMMUTABLE``.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf)
        flags = struct.unpack("i", buf)[0]
        if not flags & flag:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags | flag))
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.EACCES):
            raise ImmutabilityUnsupported(
                f"cannot make {path} append-only ({exc.strerror}): it needs a filesystem "
                "with inode flags (ext4, XFS, Btrfs) and CAP_LINUX_IMMUTABLE"
            ) from exc
        raise
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; some filesystems (SMB, NFS) refuse, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
