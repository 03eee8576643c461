"""
Database sources of a partition, as the agent runs them (``safehold.db`` does the work).

Sources, and the restore target each takes (options after ``#``, ``&``-separated)::

    postgres:URL[#stanza=S&wal_timeout=SECONDS&chunk_size=BYTES&bindir=DIR]
        RestoreTo pgdata:PATH[#port=N&os_user=postgres&start=1]
    mariadb:mysql://USER@HOST:PORT[#stanza=S&datadir=DIR&parallel=N]
        RestoreTo mysqldata:PATH[#port=N&os_user=mysql&start=1]
    redis:redis://HOST:PORT
        RestoreTo dir:PATH          (PATH/dump.rdb, for redis-server --dir PATH)

No source carries a password: the catalog shows sources. The password lives on
the agent host (``~/.pgpass`` or ``PGPASSFILE``; ``~/.my.cnf``; ``REDISCLI_AUTH``).
The archive of a source with one (PostgreSQL's WAL, MariaDB's binlogs) is in
the partition's storage, beside the backups.

A restore job restores the backup it names; when the controller sends
``restore_time`` (SF's ``RestorePointTime``), PostgreSQL and MariaDB replay their
archive to exactly that instant (MariaDB: to its second). A data directory is
restored and recovered beside ``PATH`` (the server runs on port *N*, a free
one by default, while it recovers), stopped, and swapped in for ``PATH``; with
``start=1`` it is started again there. A server running at ``PATH`` is never
replaced: the job fails and nothing is touched.

After a backup's retention removed snapshots, the archive is trimmed to what
the kept backups need (``expire_wal``, ``expire_binlogs``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from safehold.core.errors import SafeholdError
from safehold.core.progress import ProgressSink
from safehold.core.snapshot import Snapshot, SnapshotMeta, parse_time
from safehold.core.work import WorkItem
from safehold.repo.repository import Repository
from safehold.storage.base import Storage

__all__ = [
    "DB_SOURCES",
    "DbSourceError",
    "after_backup",
    "backup_db",
    "expire_db",
    "is_db_source",
    "parse_spec",
    "restore_db",
    "swap_in",
]

#: The source kinds this module runs.
DB_SOURCES = ("postgres:", "mariadb:", "redis:")

log = logging.getLogger("safehold.agent")


class DbSourceError(SafeholdError):
    """A database source or its restore target cannot be used."""

    code = "SAFEHOLD_E_SOURCE"


class _RepositoryOpener(Protocol):
    def open_repository(self, storage: Storage, *, create: bool = False) -> Repository: ...


def is_db_source(source: str) -> bool:
    """Whether *source* is a database source this module runs."""
    return source.startswith(DB_SOURCES)


def parse_spec(spec: str, allowed: Sequence[str]) -> tuple[str, dict[str, str]]:
    """
    Split ``KIND:VALUE#k=v&k=v`` into VALUE and its options.

    Raises:
        DbSourceError: an option not in *allowed*.
    """
    value = spec.split(":", 1)[1]
    value, _, tail = value.partition("#")
    options = dict(parse_qsl(tail, keep_blank_values=True)) if tail else {}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DbSourceError(
            f"unknown option {unknown[0]!r} in {spec.split(':', 1)[0]}: "
            f"(known: {', '.join(allowed) or 'none'})"
        )
    return value, options


def _number(options: dict[str, str], key: str, kind: type[int] | type[float]) -> Any:
    if key not in options:
        return None
    try:
        return kind(options[key])
    except ValueError as exc:
        raise DbSourceError(f"option {key}={options[key]!r} is not a number") from exc


def _open(engine: object, storage: Storage, *, create: bool) -> Repository:
    if not hasattr(engine, "open_repository"):
        raise DbSourceError("this agent's engine cannot run database sources")
    opener: _RepositoryOpener = engine
    return opener.open_repository(storage, create=create)


def after_backup(engine: object, repo: Repository) -> None:
    """Let the engine tidy *repo* after a backup into it (index compaction), if it can."""
    hook = getattr(engine, "after_backup", None)
    if hook is not None:
        hook(repo)


def _source(spec: str) -> Any:
    """The ``safehold.db`` source object of a partition source."""
    kind = spec.split(":", 1)[0]
    allowed = {
        "postgres": ("stanza", "wal_timeout", "chunk_size", "bindir"),
        "mariadb": ("stanza", "datadir", "parallel"),
        "redis": (),
    }[kind]
    url, opts = parse_spec(spec, allowed)
    if urlsplit(url).password:
        raise DbSourceError(
            f"a {kind}: source must not carry a password (the catalog shows sources): "
            "keep it on the agent host (see docs/databases.md)"
        )
    if kind == "redis":
        from safehold.db.redis import RedisSource

        return RedisSource(url)
    if kind == "mariadb":
        from safehold.db.mariadb import MariaDbSource

        return MariaDbSource(
            url,
            stanza=opts.get("stanza") or None,
            datadir=opts.get("datadir") or None,
            parallel=_number(opts, "parallel", int) or 2,
        )
    from safehold.db import PostgresSource

    kw: dict[str, Any] = {"stanza": opts.get("stanza") or None, "bindir": opts.get("bindir")}
    if (timeout := _number(opts, "wal_timeout", float)) is not None:
        kw["wal_timeout"] = timeout
    if (chunk := _number(opts, "chunk_size", int)) is not None:
        kw["chunk_size"] = chunk
    return PostgresSource(url, **kw)


def backup_db(
    item: WorkItem, engine: object, storage: Storage, meta: SnapshotMeta, progress: ProgressSink
) -> Snapshot:
    """Back up the partition's database source into *storage*; return the snapshot."""
    source = _source(item.Partition.Source)
    from safehold.db import PostgresSource

    with _open(engine, storage, create=True) as repo:
        if isinstance(source, PostgresSource):
            # The catalog's previous backup: no listing of a shared repository's snapshots.
            parent = item.backup().previous_snapshot
            result = source.backup(repo, meta=meta, progress=progress, parent=parent)
        else:
            result = source.backup(repo, meta=meta, progress=progress)
        after_backup(engine, repo)
        snap: Snapshot = result.snapshot
        return snap


def restore_db(item: WorkItem, engine: object, storage: Storage, progress: ProgressSink) -> None:
    """
    Restore the job's backup of a database source (to ``restore_time`` if sent).

    Raises:
        DbSourceError: no usable restore target, a server running there, or the
            backup is not one of this kind of source.
        RecoveryTargetError: the time is outside the recoverable window.
    """
    kind = item.Partition.Source.split(":", 1)[0]
    want = {"postgres": "pgdata:", "mariadb": "mysqldata:", "redis": "dir:"}[kind]
    target = item.Partition.RestoreTo
    if target is None or not target.startswith(want):
        raise DbSourceError(
            f"a {kind}: partition restores into a directory: register its restore target "
            f"as {want}PATH (see docs/databases.md)"
        )
    where, opts = parse_spec(target, () if kind == "redis" else ("port", "os_user", "start"))
    dest = Path(where)
    if not dest.is_absolute():
        raise DbSourceError(f"the restore target {where!r} must be an absolute path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    params = item.restore()
    source = _source(item.Partition.Source)
    with _open(engine, storage, create=False) as repo:
        snap = repo.find_snapshot(params.snapshot_id)
        if kind == "redis":
            from safehold.db.redis import restore_redis

            restore_redis(repo, snap, dest)
        elif kind == "mariadb":
            _restore_mariadb(repo, snap, source, dest, opts, params.restore_time)
        else:
            _restore_postgres(repo, snap, source, dest, opts, params.restore_time, progress)
    log.info(
        "restored %s backup %s to %s in %s",
        kind,
        snap.short_id,
        params.restore_time or "the backup's end",
        dest,
    )


def _target_of(snap: Snapshot, restore_time: str | None) -> Any:
    from safehold.db import BackupId, Time

    return Time(parse_time(restore_time)) if restore_time else BackupId(snap.id)


@contextmanager
def _beside(dest: Path) -> Iterator[Path]:
    """A scratch directory beside *dest*, readable by a server's OS user; removed after."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.restore-", dir=dest.parent))
    try:
        tmp.chmod(0o755)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _restore_postgres(
    repo: Repository,
    snap: Snapshot,
    source: Any,
    dest: Path,
    opts: dict[str, str],
    restore_time: str | None,
    progress: ProgressSink,
) -> None:
    from safehold.db import LocalServer, PgBackup, find_bindir, restore_postgres

    os_user = opts.get("os_user") or "postgres"
    bindir = find_bindir(source.bindir)
    port = _number(opts, "port", int)
    if LocalServer(dest, 0, bindir, os_user).running():
        raise DbSourceError(f"a PostgreSQL server is running in {dest}: stop it first")
    backup = PgBackup.from_snapshot(snap)
    if backup is None:
        raise DbSourceError(f"backup {snap.short_id} is not a PostgreSQL base backup")
    with _beside(dest) as tmp:
        restore_postgres(
            repo,
            tmp / "pgdata",
            to=_target_of(snap, restore_time),
            stanza=backup.stanza,
            snapshots=repo.snapshots(),
            bindir=source.bindir,
            port=port,
            os_user=os_user,
            keep_running=False,
            progress=progress,
        )
        swap_in(tmp / "pgdata", dest)
    if _yes(opts.get("start")):
        LocalServer(dest, port or _configured_port(dest), bindir, os_user).start()


def _restore_mariadb(
    repo: Repository,
    snap: Snapshot,
    source: Any,
    dest: Path,
    opts: dict[str, str],
    restore_time: str | None,
) -> None:
    from safehold.db.mariadb import MariaDbBackup, restore_mariadb
    from safehold.db.mysqld import MariaDbServer

    os_user = opts.get("os_user") or "mysql"
    port = _number(opts, "port", int)
    if MariaDbServer(dest, 0, os_user).running():
        raise DbSourceError(f"a MariaDB server is running in {dest}: stop it first")
    backup = MariaDbBackup.from_snapshot(snap)
    if backup is None:
        raise DbSourceError(f"backup {snap.short_id} is not a MariaDB backup")
    with _beside(dest) as tmp:
        restore_mariadb(
            repo,
            tmp / "data",
            to=_target_of(snap, restore_time),
            stanza=backup.stanza,
            snapshots=repo.snapshots(),
            port=port,
            os_user=os_user,
            client=source.client,
        )
        swap_in(tmp / "data", dest)
    if _yes(opts.get("start")):
        MariaDbServer(dest, port or 3306, os_user).start()


def _yes(value: str | None) -> bool:
    return value in ("1", "yes", "true")


def _configured_port(datadir: Path) -> int:
    """The last ``port = N`` of the restored cluster's ``postgresql.auto.conf``."""
    port = 5432
    for line in (datadir / "postgresql.auto.conf").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "port":
            port = int(value.strip().strip("'"))
    return port


def swap_in(restored: Path, target: Path) -> None:
    """Put *restored* where *target* was (the old one kept aside until then), durably."""
    old = target.with_name(f".{target.name}.safehold-old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    restored.rename(target)
    if old.exists():
        shutil.rmtree(old)
    os.sync()


def expire_db(item: WorkItem, engine: object, storage: Storage) -> int:
    """After retention: delete the archived logs that no kept backup of the source needs."""
    kind = item.Partition.Source.split(":", 1)[0]
    if kind == "redis":
        return 0
    _source(item.Partition.Source)  # checks the source
    pid = item.Partition.PartitionId
    removed = 0
    with _open(engine, storage, create=False) as repo:
        snaps = repo.snapshots()
        mine = {s.id for s in snaps if s.partition is not None and s.partition.partition_id == pid}
        if kind == "mariadb":
            from safehold.db.binlog import BinlogArchive
            from safehold.db.mariadb import expire_binlogs, mariadb_backups

            mb = mariadb_backups(snaps)
            for stanza in sorted({b.stanza for b in mb if b.snapshot.id in mine}):
                kept = [b for b in mb if b.stanza == stanza]  # any partition's backup counts
                removed += expire_binlogs(BinlogArchive(repo, stanza), kept)
            return removed
        from safehold.db import WalArchive, expire_wal, pg_backups

        pg = pg_backups(snaps, None)
        for stanza in sorted({b.stanza for b in pg if b.snapshot.id in mine}):
            kept_pg = [b for b in pg if b.stanza == stanza]
            removed += expire_wal(WalArchive(repo, stanza), kept_pg)
    return removed
