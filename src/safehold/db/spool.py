"""
The local WAL spool on the database host: fast ``archive_command`` acknowledgement
and fast ``restore_command`` answers.

Layout of a spool directory (one per cluster, on local disk)::

    out/<wal name>      accepted from archive_command, not yet in the archive
    in/<wal name>       fetched ahead for restore_command
    in/<wal name>.none  the archive does not have it (answered by the prefetcher)
    pusher.lock         held (flock) by the one process that uploads out/
    pusher.log          the pusher's last errors
    dropped             WAL files refused because the spool was full: one line each

**Push.** ``spool_push`` copies the file into ``out/`` (fsync of the file and the
directory, then rename), so ``archive_command`` returns in milliseconds; a pusher
process (``run_pusher``) uploads ``out/`` in parallel, oldest first, and deletes
each file once it is stored. If the archive storage is unreachable, the files
stay in ``out/`` and a later pusher uploads them. If ``out/`` would exceed its
limit, the file is *dropped*: acknowledged, recorded in ``dropped`` and on
stderr. PostgreSQL then never stalls on a full ``pg_wal``; the gap shows in
``check`` and only PITR across it is lost, as with pgBackRest's
``archive-push-queue-max``.

**Get.** ``spool_take`` answers from ``in/`` when the file was fetched ahead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from safehold.db.errors import DbError

if TYPE_CHECKING:  # the archive_command hook must not load the engine
    from safehold.db.walstore import WalArchive

__all__ = [
    "DEFAULT_SPOOL_MAX",
    "PushOutcome",
    "pusher_running",
    "run_pusher",
    "spool_dirs",
    "spool_pending",
    "spool_push",
    "spool_take",
]

DEFAULT_SPOOL_MAX = 4 * 1024 * 1024 * 1024
_COPY = 1024 * 1024


@dataclass(frozen=True)
class PushOutcome:
    """What ``spool_push`` did: ``spooled`` or ``dropped`` (the spool was full)."""

    name: str
    state: str
    spool_bytes: int


def spool_dirs(spool: Path) -> tuple[Path, Path]:
    """Create (mode 0700) and return the spool's ``out`` and ``in`` directories."""
    out, inn = spool / "out", spool / "in"
    for d in (spool, out, inn):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return out, inn


def spool_pending(spool: Path) -> list[Path]:
    """The WAL files waiting in ``out/``, oldest name first (temporary files excluded)."""
    out = spool / "out"
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if not p.name.startswith("."))


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_durably(src: Path, dest: Path) -> int:
    tmp = dest.with_name(f".{dest.name}.tmp")
    size = 0
    with src.open("rb") as fin, tmp.open("wb") as fout:
        while block := fin.read(_COPY):
            fout.write(block)
            size += len(block)
        fout.flush()
        os.fsync(fout.fileno())
    tmp.replace(dest)
    _fsync_dir(dest.parent)
    return size


def spool_push(spool: Path, wal_path: Path, *, max_bytes: int = DEFAULT_SPOOL_MAX) -> PushOutcome:
    """
    Accept one WAL file from ``archive_command`` into the spool, durably.

    Returns ``dropped`` instead of raising when the spool is full (see the module).

    Raises:
        DbError: the WAL file cannot be read or the spool cannot be written.
    """
    out, _ = spool_dirs(spool)
    name = wal_path.name
    try:
        size = wal_path.stat().st_size
        queued = sum(p.stat().st_size for p in spool_pending(spool) if p.name != name)
        if queued + size > max_bytes:
            with (spool / "dropped").open("a") as f:
                f.write(f"{datetime.now(UTC).isoformat()} {name} spool full ({queued} bytes)\n")
            return PushOutcome(name, "dropped", queued)
        _copy_durably(wal_path, out / name)
    except OSError as exc:
        raise DbError(f"cannot spool {name}: {exc.strerror}: {exc.filename}") from exc
    return PushOutcome(name, "spooled", queued + size)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[bool]:
    """Hold an exclusive, non-blocking flock on *path*; yield whether it was taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def pusher_running(spool: Path) -> bool:
    """Whether a pusher holds the spool's lock right now."""
    spool_dirs(spool)
    with _flock(spool / "pusher.lock") as taken:
        return not taken


def _log(spool: Path, message: str) -> None:
    with contextlib.suppress(OSError), (spool / "pusher.log").open("a") as f:
        f.write(f"{datetime.now(UTC).isoformat()} {message}\n")


def run_pusher(
    spool: Path,
    open_archive: Callable[[], WalArchive],
    *,
    workers: int = 4,
    idle_exit: float = 2.0,
    max_failures: int = 5,
    poll: float = 0.05,
) -> int:
    """
    Upload ``out/`` to the archive until it stays empty for *idle_exit* seconds.

    Only one pusher runs per spool (a flock); a second one returns at once.
    The archive is opened once (one password derivation) and reused. After
    *max_failures* rounds in a row that stored nothing because of errors, it
    gives up and leaves the files for the next pusher.

    Returns:
        How many files it uploaded.
    """
    spool_dirs(spool)
    uploaded = 0
    while True:
        got = _push_round(spool, open_archive, workers, idle_exit, max_failures, poll)
        if got is None:
            return uploaded
        uploaded += got
        # A file spooled while this pusher was deciding to stop saw the lock
        # held and started no pusher: look once more after letting go.
        if not spool_pending(spool) or got == 0:
            return uploaded


def _push_round(
    spool: Path,
    open_archive: Callable[[], WalArchive],
    workers: int,
    idle_exit: float,
    max_failures: int,
    poll: float,
) -> int | None:
    """One pusher session under the lock; None if another pusher holds it."""
    uploaded = 0
    with _flock(spool / "pusher.lock") as taken:
        if not taken:
            return None
        try:
            archive = open_archive()
        except Exception as exc:
            _log(spool, f"cannot open the archive: {type(exc).__name__}: {exc}")
            return 0

        def one(p: Path) -> bool:
            try:
                archive.push(p.name, p.read_bytes())
            except FileNotFoundError:
                return False
            except Exception as exc:
                _log(spool, f"{p.name}: {type(exc).__name__}: {exc}")
                return False
            p.unlink(missing_ok=True)
            return True

        failures = 0
        idle_since = time.monotonic()
        with ThreadPoolExecutor(workers, thread_name_prefix="safehold-walpush") as pool:
            while failures < max_failures:
                pending = spool_pending(spool)
                if not pending:
                    if time.monotonic() - idle_since > idle_exit:
                        break
                    time.sleep(poll)
                    continue
                done = sum(pool.map(one, pending[: workers * 4]))
                uploaded += done
                if done:
                    failures = 0
                else:
                    failures += 1
                    time.sleep(min(2.0, 0.2 * 2**failures))
                idle_since = time.monotonic()
    return uploaded


def spool_take(spool: Path, name: str, dest: Path) -> bool:
    """Move a fetched-ahead WAL file from ``in/`` to *dest*; False if it is not there."""
    src = spool / "in" / name
    try:
        os.replace(src, dest)
    except FileNotFoundError:
        return False
    except OSError:  # another file system: copy, then remove
        try:
            _copy_durably(src, dest)
        except FileNotFoundError:
            return False
        src.unlink(missing_ok=True)
    return True
