"""
``safehold mount``: browse the snapshots as a read-only file system (FUSE).

FUSE comes from ``mfusepy`` (the ``mount`` extra): ctypes bindings to the
system's libfuse 2 or 3, no compiler needed; why not pyfuse3 is in
docs/dependencies.md. The file system logic is ``repo.fs.SnapshotFS``; this
module only adapts it to FUSE's callbacks and turns errors into errno values.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from safehold.cli.app import app
from safehold.cli.common import (
    HostFilterOpt,
    PasswordFileOpt,
    PathFilterOpt,
    RepoOpt,
    TagFilterOpt,
    err_console,
    open_repo,
    snapshot_filter,
)
from safehold.core.errors import SafeholdError, UsageError
from safehold.repo.fs import Entry, SnapshotFS


class _Ops:
    """
    The FUSE operations, read-only, errors as errno values.

    mfusepy looks operations up by name, so every other attribute starts with
    ``_`` (a ``lock`` attribute would be taken for FUSE's ``lock`` operation).
    """

    use_ns = True  # times in nanoseconds

    def __init__(self, fs: SnapshotFS) -> None:
        self._fs = fs
        self._handles: dict[int, Entry] = {}
        self._next_handle = 1
        self._lock = threading.Lock()
        self._uid, self._gid = os.getuid(), os.getgid()

    def _entry(self, path: str) -> Entry:
        try:
            entry = self._fs.lookup(path)
        except SafeholdError as exc:
            err_console.print(f"error: {path}: {exc.message}", markup=False, highlight=False)
            raise OSError(errno.EIO, exc.message) from exc
        if entry is None:
            raise OSError(errno.ENOENT, path)
        return entry

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        e = self._entry(path)
        virtual = e.node is None
        return {
            "st_mode": e.mode,
            "st_nlink": 2 if e.is_dir else 1,
            "st_size": e.size,
            "st_uid": self._uid if virtual else e.uid,
            "st_gid": self._gid if virtual else e.gid,
            "st_mtime": e.mtime_ns,
            "st_ctime": e.mtime_ns,
            "st_atime": e.mtime_ns,
        }

    def readdir(self, path: str, fh: int) -> list[str]:
        e = self._entry(path)
        if not e.is_dir:
            raise OSError(errno.ENOTDIR, path)
        try:
            return [".", "..", *self._fs.listdir(e)]
        except SafeholdError as exc:
            raise OSError(errno.EIO, exc.message) from exc

    def readlink(self, path: str) -> str:
        e = self._entry(path)
        if e.target is None or not stat.S_ISLNK(e.mode):
            raise OSError(errno.EINVAL, path)
        return e.target

    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC):
            raise OSError(errno.EROFS, path)
        e = self._entry(path)
        with self._lock:
            fh = self._next_handle
            self._next_handle += 1
            self._handles[fh] = e
        return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._lock:
            e = self._handles.get(fh)
        if e is None or e.node is None:
            raise OSError(errno.EBADF, path)
        try:
            return self._fs.read(e.node, offset, size)
        except SafeholdError as exc:
            err_console.print(f"error: {path}: {exc.message}", markup=False, highlight=False)
            raise OSError(errno.EIO, exc.message) from exc

    def release(self, path: str, fh: int) -> int:
        with self._lock:
            self._handles.pop(fh, None)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}


@app.command()
def mount(
    mountpoint: Annotated[Path, typer.Argument(help="An empty directory to mount on.")],
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    host: HostFilterOpt = None,
    tag: TagFilterOpt = None,
    path_filter: PathFilterOpt = None,
    allow_other: Annotated[
        bool, typer.Option("--allow-other", help="Let other users see the mount (FUSE option).")
    ] = False,
) -> None:
    """
    Mount the snapshots read-only at MOUNTPOINT, until Ctrl-C or `fusermount -u`.

    The mount shows ids/<id>/, snapshots/<time>/ and latest; --host, --tag and
    --path choose which snapshots. Needs the mount extra (mfusepy) and libfuse.

    Exit status: 0 unmounted; 2 no FUSE here or a bad mount point; 10, 12 as usual.
    """
    try:
        import mfusepy
    except (ImportError, OSError) as exc:
        raise UsageError(f"mount needs FUSE: install safehold[mount] and libfuse ({exc})") from exc
    if not mountpoint.is_dir():
        raise UsageError(f"{mountpoint} is not a directory")
    where = snapshot_filter(host, tag, path_filter)
    with open_repo(repo, password_file) as r:
        snaps = [s for s in r.snapshots() if where.matches(s)]
        for msg in r.damaged_snapshots:
            err_console.print(f"warning: {msg}", markup=False, highlight=False, soft_wrap=True)
        fs = SnapshotFS(r, snaps)
        err_console.print(
            f"{len(snaps)} snapshots mounted read-only at {mountpoint}; "
            f"Ctrl-C or `fusermount -u {mountpoint}` unmounts",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        options: dict[str, Any] = {"foreground": True, "ro": True, "fsname": "safehold"}
        if allow_other:
            options["allow_other"] = True
        try:
            mfusepy.FUSE(_Ops(fs), str(mountpoint), **options)
        except RuntimeError as exc:
            raise UsageError(f"cannot mount at {mountpoint}: {exc}") from exc
