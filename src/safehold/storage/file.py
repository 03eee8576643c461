"""
The filesystem backend: a local path or a mounted share (NFS, SMB, CIFS).

Objects are plain files under the root; a name's ``/`` separators are
directories. ``put`` writes a temporary file in the same directory, fsyncs it
and renames it over the name, so the store never sees partially written data,
even after a crash or power loss.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safehold.storage.base import ObjectInfo, StorageProperties, validate_name
from safehold.storage.errors import (
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


class FileStorage:
    """A storage on a local or mounted filesystem."""

    def __init__(self, root: str | os.PathLike[str], *, connections: int = 2) -> None:
        self._root = Path(root).absolute()
        self._props = StorageProperties(
            location=str(self._root), connections=connections, accepts_views=True
        )
        self._made_dirs: set[Path] = set()

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
        yield from self._walk(start, prefix)

    def _walk(self, directory: Path, prefix: str) -> Iterator[ObjectInfo]:
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
            rel = Path(entry.path).relative_to(self._root).as_posix()
            if entry.is_dir(follow_symlinks=False):
                if (rel + "/").startswith(prefix) or prefix.startswith(rel + "/"):
                    yield from self._walk(Path(entry.path), prefix)
            elif rel.startswith(prefix):
                with self._translate(rel):
                    size = entry.stat(follow_symlinks=False).st_size
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
        parent = path.parent
        tmp = parent / f"{_TMP_PREFIX}{secrets.token_hex(8)}"
        with self._translate(name):
            if parent not in self._made_dirs:
                parent.mkdir(parents=True, exist_ok=True)
                self._made_dirs.add(parent)
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

    def delete(self, name: str) -> None:
        """Remove the file; a missing file is fine."""
        path = self._path(name)
        with self._translate(name):
            path.unlink(missing_ok=True)

    def close(self) -> None:
        """Nothing to release."""


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
