"""
Restoring a PostgreSQL cluster to a point: a base backup plus archived WAL.

``restore`` picks the base backup for the target, restores its files into a
new data directory, writes the recovery settings (``recovery.signal``,
``restore_command``, ``recovery_target_*``, ``recovery_target_action =
'promote'``), starts PostgreSQL and serves WAL to it from a prefetching spool
(``prefetch``) until recovery is over and the server accepts writes.

Targets: ``Latest()`` (all archived WAL), ``BackupId(id)`` (the backup's own
consistent point), ``Time(t)`` (every transaction committed at or before *t*),
``Lsn(lsn)``, ``Name(name)`` (a ``pg_create_restore_point``).

With ``delta=True`` the target may be an existing, stopped data directory of the
same cluster (an older copy): only the chunks whose content differs from the
backup's are read from the repository (``pgdelta``), then WAL is replayed as usual.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from safehold.core.progress import ProgressSink
from safehold.core.snapshot import Snapshot, format_time
from safehold.db.catalog import PgBackup, pg_backups
from safehold.db.errors import DbError, DbToolError, RecoveryTargetError
from safehold.db.pgdelta import DeltaResult, delta_restore
from safehold.db.pgwal import format_lsn, parse_lsn
from safehold.db.prefetch import WalPrefetcher, write_restore_script
from safehold.db.server import LocalServer, _ids, find_bindir, free_port
from safehold.db.walstore import WalArchive
from safehold.repo import restore as restore_snapshot
from safehold.repo.repository import Repository

__all__ = [
    "BackupId",
    "DeltaResult",
    "Latest",
    "Lsn",
    "Name",
    "PgRestoreResult",
    "Target",
    "Time",
    "choose_backup",
    "restore_postgres",
]

_NOT_REACHED = "recovery ended before configured recovery target was reached"
_BEFORE_CONSISTENT = "requested recovery stop point is before consistent recovery point"


@dataclass(frozen=True)
class Latest:
    """Replay every archived WAL segment."""


@dataclass(frozen=True)
class BackupId:
    """Stop as soon as this base backup is consistent (a snapshot id or prefix)."""

    snapshot: str


@dataclass(frozen=True)
class Time:
    """Stop after the last transaction that committed at or before *at* (aware datetime)."""

    at: datetime


@dataclass(frozen=True)
class Lsn:
    """Stop at this WAL position (``"0/3000028"``)."""

    lsn: str


@dataclass(frozen=True)
class Name:
    """Stop at the restore point of this name (``pg_create_restore_point``)."""

    name: str


Target = Latest | BackupId | Time | Lsn | Name


@dataclass
class PgRestoreResult:
    """What a restore did: the backup used, the target, and the server left running (if any)."""

    backup: PgBackup
    target: Target
    datadir: Path
    server: LocalServer | None
    wal_fetched: int
    delta: DeltaResult | None = None
    """What a delta restore read and wrote; None for a restore into an empty directory."""


def choose_backup(backups: Sequence[PgBackup], to: Target, repo: Repository) -> PgBackup:
    """
    The newest base backup from which *to* can be reached.

    Raises:
        RecoveryTargetError: no backup is old enough (the message gives the
            earliest reachable time or LSN), or there is no base backup at all.
    """
    if not backups:
        raise RecoveryTargetError("there is no PostgreSQL base backup to restore from")
    if isinstance(to, BackupId):
        snap = repo.find_snapshot(to.snapshot)
        match = [b for b in backups if b.snapshot.id == snap.id]
        if not match:
            raise RecoveryTargetError(f"snapshot {snap.short_id} is not a PostgreSQL base backup")
        return match[0]
    if isinstance(to, Time):
        if to.at.tzinfo is None:
            raise RecoveryTargetError("the recovery target time needs a time zone (or Z)")
        ok = [b for b in backups if b.stop_time <= to.at]
        if not ok:
            raise RecoveryTargetError(
                f"{format_time(to.at)} is before the recoverable window, which starts at "
                f"{format_time(backups[0].stop_time)} (the end of the oldest base backup)"
            )
        return ok[-1]
    if isinstance(to, Lsn):
        lsn = _lsn(to.lsn)
        ok = [b for b in backups if b.stop_lsn <= lsn]
        if not ok:
            first = min(b.stop_lsn for b in backups)
            raise RecoveryTargetError(
                f"LSN {to.lsn} is before the recoverable window, "
                f"which starts at {format_lsn(first)}"
            )
        return max(ok, key=lambda b: b.stop_lsn)
    return backups[-1]


def _lsn(text: str) -> int:
    try:
        return parse_lsn(text)
    except ValueError as exc:
        raise RecoveryTargetError(str(exc)) from exc


def _settings(to: Target, script: Path, *, port: int, archiving: bool) -> list[str]:
    lines = [
        f'restore_command = \'{script} "%f" "%p"\'',
        "recovery_target_action = 'promote'",
        "recovery_target_timeline = 'latest'",
        f"port = {port}",
    ]
    if not archiving:
        lines.append("archive_mode = 'off'")
    if isinstance(to, BackupId):
        lines.append("recovery_target = 'immediate'")
    elif isinstance(to, Time):
        at = to.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        lines += [f"recovery_target_time = '{at}'", "recovery_target_inclusive = on"]
    elif isinstance(to, Lsn):
        lines.append(f"recovery_target_lsn = '{format_lsn(_lsn(to.lsn))}'")
    elif isinstance(to, Name):
        if "'" in to.name or "\\" in to.name:
            raise RecoveryTargetError("a restore point name must not contain quotes or backslashes")
        lines.append(f"recovery_target_name = '{to.name}'")
    return lines


_RESET = (
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_inclusive",
    "recovery_target_action",
    "recovery_target_timeline",
)


def restore_postgres(
    repo: Repository,
    target_dir: Path,
    *,
    to: Target | None = None,
    stanza: str | None = None,
    snapshots: Sequence[Snapshot] | None = None,
    port: int | None = None,
    os_user: str = "postgres",
    bindir: str | None = None,
    keep_archiving: bool = False,
    keep_running: bool = True,
    progress: ProgressSink | None = None,
    timeout: float = 1800.0,
    delta: bool = False,
) -> PgRestoreResult:
    """
    Restore a cluster into *target_dir* (which must not exist or be empty) and
    bring it to *to*, ready for queries.

    With *delta*, *target_dir* may instead hold a stopped copy of the same
    cluster: its files are compared chunk by chunk with the backup's (keyed
    hashes against the backup's blob ids), only differing chunks are fetched,
    files the backup lacks are deleted; then recovery runs as usual. If the
    restore fails the directory is left as it is (run the delta restore again).

    Args:
        stanza: restrict the choice to this cluster's backups (needed when the
            repository holds several clusters).
        snapshots: the snapshots to choose from (a partition's); all by default.
        port: the port to start on; a free one by default.
        keep_archiving: leave ``archive_mode`` as backed up; by default the
            restored server does not archive (it is a copy, not the primary).
        keep_running: leave the server running (the result holds it); else
            stop it once it is ready.
        delta: restore over an existing data directory, fetching only what differs.

    Raises:
        RecoveryTargetError: the target is before the oldest backup, or WAL
            does not reach it (PostgreSQL says so; the restored directory is removed).
        DbToolError: the server failed to start or recover (its log's tail).
        DbError: the target is not empty (without *delta*), or (with *delta*) a
            server runs in it, it is not a data directory, or it is another cluster's.
    """
    to = to or Latest()
    all_snaps = repo.snapshots() if snapshots is None else snapshots
    backups = pg_backups(all_snaps, stanza)
    if stanza is None and len({b.stanza for b in backups}) > 1:
        raise DbError("the repository holds backups of several clusters: name the stanza")
    # A restore point's position is unknown until WAL is replayed: try the newest
    # backups first, each until PostgreSQL finds the point or reports it missed it.
    candidates = [choose_backup(backups, to, repo)]
    if isinstance(to, Name):
        candidates = backups[-3:][::-1]
    target_dir = Path(target_dir).absolute()
    if target_dir.exists() and any(target_dir.iterdir()):
        if not delta:
            raise DbError(f"the restore target {target_dir} is not empty")
        _check_delta_target(target_dir, candidates[0], bindir)
    else:
        delta = False  # nothing to compare with: an ordinary restore
    last: RecoveryTargetError | None = None
    for backup in candidates:
        try:
            return _restore_one(
                repo, backup, target_dir, to, port, os_user, bindir,
                keep_archiving, keep_running, progress, timeout, delta,
            )  # fmt: skip
        except RecoveryTargetError as exc:
            last = exc
    assert last is not None
    raise last


def _restore_one(
    repo: Repository,
    backup: PgBackup,
    target_dir: Path,
    to: Target,
    port: int | None,
    os_user: str,
    bindir: str | None,
    keep_archiving: bool,
    keep_running: bool,
    progress: ProgressSink | None,
    timeout: float,
    delta: bool = False,
) -> PgRestoreResult:
    parent = target_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.restore-", dir=parent))
    spool = work / "wal"
    server = LocalServer(target_dir, port or free_port(), find_bindir(bindir), os_user)
    prefetcher: WalPrefetcher | None = None
    delta_result: DeltaResult | None = None
    ok = False
    try:
        delta_result = _lay_files(repo, backup, target_dir, work, delta, progress)
        script = write_restore_script(spool)
        server.chown(work)
        server.append_config(*_settings(to, script, port=server.port, archiving=keep_archiving))
        (target_dir / "recovery.signal").touch()
        server.chown(target_dir)
        prefetcher = WalPrefetcher(
            WalArchive(repo, backup.stanza), spool, segment_size=backup.segment_size
        )
        if os.geteuid() == 0:
            prefetcher.give_to(*_ids(os_user))
        prefetcher.start()
        try:
            server.start(wait=False)
            server.wait_ready(timeout)
        except DbToolError as exc:
            log = server.log_tail(50)
            if _BEFORE_CONSISTENT in log:
                raise RecoveryTargetError(
                    f"the target {_describe(to)} is before base backup "
                    f"{backup.snapshot.short_id} became consistent (is the agent's clock "
                    "ahead of the database server's?): choose an earlier backup"
                ) from exc
            if _NOT_REACHED in log:
                raise RecoveryTargetError(
                    f"the archived WAL does not reach the target {_describe(to)}: it is after "
                    f"the end of the recoverable window (base backup {backup.snapshot.short_id})"
                ) from exc
            raise
        with server.connect() as conn:
            for key in _RESET:
                conn.execute(f"ALTER SYSTEM RESET {key}")
        if not keep_running:
            server.stop()
        ok = True
        return PgRestoreResult(
            backup,
            to,
            target_dir,
            server if keep_running else None,
            prefetcher.fetched,
            delta_result,
        )
    finally:
        if prefetcher is not None:
            prefetcher.stop()
        if not ok:
            server.stop("immediate")
            if not delta:  # a delta restore's target is the operator's: left for a rerun
                shutil.rmtree(target_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def _lay_files(
    repo: Repository,
    backup: PgBackup,
    target_dir: Path,
    work: Path,
    delta: bool,
    progress: ProgressSink | None,
) -> DeltaResult | None:
    """Put the backup's files into *target_dir*: over what is there, or through *work*."""
    delta_result = None
    if delta:
        delta_result = delta_restore(repo, backup.snapshot, target_dir, progress=progress)
    else:
        restore_snapshot(repo, backup.snapshot, work, progress=progress)
        if target_dir.exists():
            target_dir.rmdir()
        (work / "pgdata").rename(target_dir)
    target_dir.chmod(0o700)
    (target_dir / "pg_wal").mkdir(mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (target_dir / "backup_manifest").unlink()
    return delta_result


def _check_delta_target(target_dir: Path, backup: PgBackup, bindir: str | None) -> None:
    """Refuse a data directory that a server runs in, or that is not this cluster's."""
    if LocalServer(target_dir, 0, find_bindir(bindir)).running():
        raise DbError(
            f"a PostgreSQL server is running in {target_dir} (postmaster.pid): stop it first"
        )
    try:
        control = (target_dir / "global" / "pg_control").read_bytes()
    except OSError:
        control = b""
    if len(control) < 8:
        raise DbError(
            f"{target_dir} is not empty and holds no global/pg_control: "
            "a delta restore needs a data directory of the same cluster, or an empty one"
        )
    sysid = int.from_bytes(control[:8], "little")
    if sysid != backup.sysid:
        raise DbError(
            f"{target_dir} holds cluster {sysid}, not {backup.sysid} (the backup's): "
            "a delta restore needs a copy of the same cluster"
        )


def _describe(to: Target) -> str:
    if isinstance(to, Time):
        return format_time(to.at)
    if isinstance(to, Lsn):
        return f"LSN {to.lsn}"
    if isinstance(to, Name):
        return f"restore point {to.name!r}"
    return "latest"
