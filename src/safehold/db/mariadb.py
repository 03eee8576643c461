"""
MariaDB as a backup source: physical backups with ``mariadb-backup``, archived
binary logs, and restores to a backup, the latest archived state, or a time.

    src = MariaDbSource("mysql://root@127.0.0.1:3306")
    src.backup(repo, meta=SnapshotMeta(...))     # archives closed binlogs, then a base backup
    src.archive_binlogs(repo)                     # FLUSH BINARY LOGS; every closed binlog stored
    restore_mariadb(repo, Path("/srv/mysql/new"), to=Time(t), stanza=src.archive_stanza())

**Backups** run ``mariadb-backup --backup --stream=mbstream`` where the server's
data directory is (mariadb-backup reads its files; it cannot work remotely) and
store the stream as one file, ``mariadb.mbstream``, cut by the repository's
content-defined chunker: nothing is staged. The binlog position at which the
backup is consistent (mariadb-backup prints it when it has finished) becomes the
snapshot's tags (``mariadb-base``, ``mariadb-stanza``, ``mariadb-binlog=FILE:POS``,
``mariadb-gtid``, ``mariadb-stop-time``).

**Binary logs** are archived whole and closed (``BinlogArchive``: one object per
file): each backup first runs ``FLUSH BINARY LOGS`` and stores every closed binlog
not yet archived, read over the replication protocol (``mariadb-binlog
--read-from-remote-server --raw``), so the agent needs no access to the binlog
directory. Calling ``archive_binlogs`` more often than backups shortens the RPO.

**Restore** extracts the stream (``mbstream -x``), prepares it (``mariadb-backup
--prepare``: the InnoDB redo is applied, the files are consistent at the backup's
binlog position), starts ``mariadbd`` on it, and for ``Latest`` or ``Time`` pipes
the archived binlogs from that position through ``mariadb-binlog`` into it.
MariaDB stamps binlog events in whole seconds, so ``Time(t)`` applies every
transaction whose binlog timestamp is at or before *t* truncated to the second
(``--stop-datetime`` = that second + 1): transactions in the same second as *t*
but after it are included. A time after the last archived event is refused
(``RecoveryTargetError``), as is one before the oldest backup.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, cast

from safehold.core.progress import ProgressSink
from safehold.core.snapshot import Snapshot, SnapshotMeta, format_time, parse_time
from safehold.db.binlog import BinlogArchive, binlog_number
from safehold.db.errors import DbError, DbToolError, RecoveryTargetError
from safehold.db.mysqld import ClientOptions, MariaDbServer, binlog_times, run_tool
from safehold.db.recovery import BackupId, Latest, Target, Time
from safehold.db.server import free_port
from safehold.repo import BackupResult, backup_stream
from safehold.repo import dump as dump_snapshot
from safehold.repo.repository import Repository

__all__ = [
    "MariaDbBackup",
    "MariaDbRestoreResult",
    "MariaDbSource",
    "expire_binlogs",
    "mariadb_backups",
    "restore_mariadb",
]

BASE_TAG = "mariadb-base"
STREAM_NAME = "mariadb.mbstream"
_POS_RE = re.compile(
    r"binlog position: filename '([^']+)', position '(\d+)'(?:, GTID of the last change '([^']*)')?"
)


@dataclass(frozen=True)
class MariaDbBackup:
    """A stored MariaDB backup: its snapshot, archive, and binlog position."""

    snapshot: Snapshot
    stanza: str
    stop_time: datetime
    binlog_file: str | None
    binlog_pos: int | None
    gtid: str | None

    @classmethod
    def from_snapshot(cls, snap: Snapshot) -> MariaDbBackup | None:
        """Read a backup's tags; None for any other snapshot."""
        if BASE_TAG not in snap.tags:
            return None
        kv = dict(t.split("=", 1) for t in snap.tags if "=" in t)
        file, _, pos = kv.get("mariadb-binlog", "").rpartition(":")
        try:
            return cls(
                snapshot=snap,
                stanza=kv["mariadb-stanza"],
                stop_time=parse_time(kv["mariadb-stop-time"]),
                binlog_file=file or None,
                binlog_pos=int(pos) if pos else None,
                gtid=kv.get("mariadb-gtid") or None,
            )
        except (KeyError, ValueError):
            return None


def mariadb_backups(
    snapshots: Sequence[Snapshot], stanza: str | None = None
) -> list[MariaDbBackup]:
    """The MariaDB backups among *snapshots* (of *stanza* if given), oldest first."""
    out = [b for s in snapshots if (b := MariaDbBackup.from_snapshot(s)) is not None]
    if stanza is not None:
        out = [b for b in out if b.stanza == stanza]
    return sorted(out, key=lambda b: b.stop_time)


@dataclass
class MariaDbSource:
    """
    A MariaDB server reached through ``mysql://user[:password]@host:port``.

    Attributes:
        stanza: the name of the server's binlog archive; by default
            ``mariadb-<host>-<port>``.
        datadir: the server's data directory for mariadb-backup (by default it
            asks the server).
        parallel: mariadb-backup's ``--parallel`` copy threads.
    """

    url: str
    stanza: str | None = None
    datadir: str | None = None
    parallel: int = 2

    @property
    def client(self) -> ClientOptions:
        """How to reach the server."""
        return ClientOptions.from_url(self.url)

    def archive_stanza(self) -> str:
        """The stanza of this server's binlog archive."""
        if self.stanza:
            return self.stanza
        c = self.client
        return re.sub(r"[^a-z0-9_-]", "-", f"mariadb-{c.host}-{c.port}".lower())[:63]

    def archive_binlogs(self, repo: Repository, *, flush: bool = True) -> list[str]:
        """
        Store every closed binlog not yet archived; return their names.

        With *flush*, ``FLUSH BINARY LOGS`` first closes the current one (needs
        RELOAD; reading binlogs needs REPLICATION SLAVE). Nothing when the
        server's binary log is off.
        """
        c = self.client
        if c.query("SELECT @@log_bin")[0][0] != "1":
            return []
        if flush:
            c.query("FLUSH BINARY LOGS")
        closed = [row[0] for row in c.query("SHOW BINARY LOGS")][:-1]
        archive = BinlogArchive(repo, self.archive_stanza())
        have = archive.list()
        pushed = []
        with tempfile.TemporaryDirectory(prefix="safehold-binlog-") as tmp, c.args() as opts:
            for name in closed:
                if name in have:
                    continue
                binlog_number(name)  # a name safe to use as a file name
                run_tool(
                    ["mariadb-binlog", *opts, "--read-from-remote-server", "--raw",
                     f"--result-file={tmp}/", name],
                    what="mariadb-binlog",
                )  # fmt: skip
                path = Path(tmp) / name
                if archive.push(name, path.read_bytes()):
                    pushed.append(name)
                path.unlink()
        return pushed

    def backup(
        self,
        repo: Repository,
        *,
        meta: SnapshotMeta | None = None,
        tags: Sequence[str] = (),
        progress: ProgressSink | None = None,
    ) -> BackupResult:
        """
        Archive the closed binlogs, then take a physical backup into *repo*.

        Raises:
            DbToolError: mariadb-backup failed (its stderr's tail is in the message).
        """
        meta = meta or SnapshotMeta()
        stanza = self.archive_stanza()
        self.archive_binlogs(repo)
        c = self.client
        with (
            tempfile.TemporaryDirectory(prefix="safehold-mariadb-") as tmp,
            tempfile.TemporaryFile() as err,
            c.args() as opts,
        ):
            argv = ["mariadb-backup", *opts, "--backup", "--stream=mbstream",
                    f"--target-dir={tmp}", f"--parallel={self.parallel}"]  # fmt: skip
            if self.datadir:
                argv.append(f"--datadir={self.datadir}")
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
            assert proc.stdout is not None

            def finish() -> SnapshotMeta:
                code = proc.wait()
                err.seek(0)
                text = err.read().decode(errors="replace")
                if code != 0:
                    raise DbToolError(
                        f"mariadb-backup of {c.where} exited with status {code}: "
                        f"{text[-600:].strip()}"
                    )
                now = datetime.now(UTC)
                more = [
                    BASE_TAG,
                    f"mariadb-stanza={stanza}",
                    f"mariadb-stop-time={format_time(now)}",
                ]
                if m := _POS_RE.search(text):
                    more.append(f"mariadb-binlog={m.group(1)}:{m.group(2)}")
                    if m.group(3):
                        more.append(f"mariadb-gtid={m.group(3)}")
                return replace(meta, tags=(*meta.tags, *tags, *more), time=meta.time or now)

            try:
                return backup_stream(
                    repo, cast(BinaryIO, proc.stdout), name=STREAM_NAME, finish=finish,
                    progress=progress,
                )  # fmt: skip
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.stdout.close()
                proc.wait()


@dataclass
class MariaDbRestoreResult:
    """What a restore did: the backup, the binlogs replayed, the server if left running."""

    backup: MariaDbBackup
    target: Target
    datadir: Path
    server: MariaDbServer | None
    binlogs: list[str]


def _choose(backups: Sequence[MariaDbBackup], to: Target) -> MariaDbBackup:
    if not backups:
        raise RecoveryTargetError("there is no MariaDB backup to restore from")
    if isinstance(to, BackupId):
        found = [b for b in backups if b.snapshot.id.startswith(to.snapshot)]
        if len(found) != 1:
            raise RecoveryTargetError(f"backup {to.snapshot!r} is not one MariaDB backup")
        return found[0]
    if isinstance(to, Time):
        before = [b for b in backups if b.stop_time <= to.at]
        if not before:
            raise RecoveryTargetError(
                f"{format_time(to.at)} is before the oldest MariaDB backup, which ends at "
                f"{format_time(backups[0].stop_time)}"
            )
        return before[-1]
    if isinstance(to, Latest):
        return backups[-1]
    raise RecoveryTargetError("a MariaDB restore goes to the latest state, a backup or a time")


def _binlogs_after(archive: BinlogArchive, backup: MariaDbBackup) -> list[tuple[str, str]]:
    """The archived binlogs from the backup's file on, without a gap: (name, object)."""
    if backup.binlog_file is None:
        return []
    listing = archive.list()
    # A complete file wins over the part of it a stream saved (``.partial``).
    by_number = {
        binlog_number(n): (n, k) for n, k in sorted(listing.items(), key=lambda nk: -len(nk[0]))
    }
    n = binlog_number(backup.binlog_file)
    out = []
    while n in by_number:
        out.append(by_number[n])
        n += 1
    return out


def restore_mariadb(
    repo: Repository,
    target_dir: Path,
    *,
    to: Target | None = None,
    stanza: str | None = None,
    snapshots: Sequence[Snapshot] | None = None,
    port: int | None = None,
    os_user: str = "mysql",
    client: ClientOptions | None = None,
    keep_running: bool = False,
) -> MariaDbRestoreResult:
    """
    Restore a MariaDB backup into *target_dir* (absent or empty) and bring it to *to*.

    *client* gives the user and password to replay binlogs as (the restored
    server has the backed-up accounts; root without a password by default).

    Raises:
        RecoveryTargetError: no backup before the time, or the archived
            binlogs end before it (the restored directory is removed).
        DbToolError: mbstream, mariadb-backup --prepare, mariadbd or the replay failed.
    """
    to = to or Latest()
    backups = mariadb_backups(repo.snapshots() if snapshots is None else snapshots, stanza)
    if stanza is None and len({b.stanza for b in backups}) > 1:
        raise DbError("the repository holds backups of several MariaDB servers: name the stanza")
    backup = _choose(backups, to)
    target_dir = Path(target_dir).absolute()
    if target_dir.exists() and any(target_dir.iterdir()):
        raise DbError(f"the restore target {target_dir} is not empty")
    archive = BinlogArchive(repo, backup.stanza)
    logs = [] if isinstance(to, BackupId) else _binlogs_after(archive, backup)
    when = to.at if isinstance(to, Time) else None
    stop = None
    if when is not None:
        stop = when.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
    server = MariaDbServer(target_dir, port or free_port(), os_user)
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.restore-", dir=target_dir.parent))
    ok = False
    try:
        files = []
        last_event = 0
        for name, key in logs:
            data = archive.get(name, key)
            times = binlog_times(data)
            last_event = max(last_event, times[1] if times else 0)
            (work / name).write_bytes(data)
            files.append(name)
        if when is not None and stop is not None and last_event < stop.timestamp():
            end = format_time(datetime.fromtimestamp(last_event, UTC)) if last_event else "none"
            raise RecoveryTargetError(
                f"the archived binary logs do not reach {format_time(when)}: it is after the "
                f"end of the recoverable window (the last archived binlog event: {end})"
            )
        _extract(repo, backup.snapshot, target_dir)
        run_tool(["mariadb-backup", "--prepare", f"--target-dir={target_dir}"], what="prepare")
        server.chown(target_dir)
        server.start()
        if files:
            _replay(server, work, files, backup, stop, client or ClientOptions())
        if not keep_running:
            server.stop()
        ok = True
        return MariaDbRestoreResult(backup, to, target_dir, server if keep_running else None, files)
    finally:
        if not ok:
            server.stop()
            shutil.rmtree(target_dir, ignore_errors=True)
            shutil.rmtree(server.run_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def _extract(repo: Repository, snap: Snapshot, target_dir: Path) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            ["mbstream", "-x", "-C", str(target_dir)], stdin=subprocess.PIPE, stderr=err
        )
        assert proc.stdin is not None
        try:
            dump_snapshot(repo, snap, proc.stdin, STREAM_NAME)
        finally:
            proc.stdin.close()
            code = proc.wait()
        if code != 0:
            err.seek(0)
            raise DbToolError(f"mbstream exited with status {code}: {err.read()[-600:]!r}")


def _replay(
    server: MariaDbServer,
    work: Path,
    files: list[str],
    backup: MariaDbBackup,
    stop: datetime | None,
    client: ClientOptions,
) -> None:
    """Pipe the binlogs from the backup's position (to *stop*) into the restored server."""
    argv = ["mariadb-binlog", f"--start-position={backup.binlog_pos or 4}"]
    if stop is not None:
        argv.append(f"--stop-datetime={stop:%Y-%m-%d %H:%M:%S}")
    argv += [str(work / f) for f in files]
    local = replace(client, socket=str(server.socket))
    with tempfile.TemporaryFile() as err, local.args() as opts:
        decode = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=err, env={**os.environ, "TZ": "UTC"}
        )
        assert decode.stdout is not None
        try:
            apply = subprocess.run(
                ["mariadb", *opts, "--binary-mode"],
                stdin=decode.stdout,
                capture_output=True,
                check=False,
            )
        finally:
            decode.stdout.close()
            code = decode.wait()
        if code != 0:
            err.seek(0)
            raise DbToolError(f"mariadb-binlog exited with status {code}: {err.read()[-600:]!r}")
        if apply.returncode != 0:
            tail = apply.stderr.decode(errors="replace")[-600:].strip()
            raise DbToolError(f"replaying the binary logs failed: {tail}")


def expire_binlogs(archive: BinlogArchive, kept: Sequence[MariaDbBackup]) -> int:
    """
    Delete archived binlogs older than the oldest kept backup's binlog file; return how many.

    With no kept backup that has a binlog position, nothing is deleted.
    """
    starts = [binlog_number(b.binlog_file) for b in kept if b.binlog_file]
    if not starts:
        return 0
    oldest = min(starts)
    return archive.delete([n for n in archive.list() if binlog_number(n) < oldest])
