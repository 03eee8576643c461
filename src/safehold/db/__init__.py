"""
The database layer: databases as backup sources, with point-in-time restore.

Public API (the design is in ``docs/databases.md``)::

    PostgresSource(url, *, stanza=None, chunk_size=16384, bindir=None, wal_timeout=120)
        .backup(repo, *, meta=None, tags=(), progress=None) -> BackupResult
        .restore(repo, target_dir, *, to=Latest() | BackupId(id) | Time(t) | Lsn(l) | Name(n),
                 port=None, os_user="postgres", keep_running=True, ...) -> PgRestoreResult
        .backups(repo) -> list[PgBackup]
    restore_postgres(repo, target_dir, *, to, stanza, snapshots, ...) -> PgRestoreResult
    recoverable_window(repo, stanza, snapshots=None) -> Window | None
    PgBackup.from_snapshot(snapshot) -> PgBackup | None;  pg_backups(snapshots, stanza)
    WalArchive(repo, stanza): push(name, bytes), get(name), list(), delete(objs)
    check_wal(archive, backups) -> WalCheck      # gaps, named
    expire_wal(archive, kept_backups) -> int     # WAL no kept backup needs
    spool_push / run_pusher / spool_take         # archive-push's local spool
    SqliteSource(path).backup(repo, meta=, tags=) -> BackupResult; .restore(repo, snapshot, target)
    WalReceiver(url, spool, open_archive, synchronous=False).start() / .stop()   # pg_receivewal
    MariaDbSource(url).backup(repo, ...) / .archive_binlogs(repo); restore_mariadb(repo, dir, to=)
    RedisSource(url).backup(repo, ...); restore_redis(repo, snapshot, dir)
    safehold.db.binlogstream.BinlogReceiver      # MariaDB binlog streaming
    safehold.db.groups: backup_group / restore_group / blob_paths_exist   # consistency groups

It builds on ``safehold.repo`` (the engine) and ``safehold.storage``; nothing
below it imports it.

The names load lazily: ``archive_command`` and ``restore_command`` start one
process per WAL file, and ``safehold.db.hook`` must not pay for the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safehold.db.catalog import PgBackup, pg_backups
    from safehold.db.errors import (
        BackupIncomplete,
        DbError,
        DbToolError,
        RecoveryTargetError,
        WalConflict,
        WalMissing,
    )
    from safehold.db.mariadb import MariaDbSource, restore_mariadb
    from safehold.db.postgres import (
        PostgresSource,
        WalCheck,
        Window,
        check_wal,
        expire_wal,
        recoverable_window,
        stanza_for,
    )
    from safehold.db.receivewal import WalReceiver
    from safehold.db.recovery import (
        BackupId,
        Latest,
        Lsn,
        Name,
        PgRestoreResult,
        Target,
        Time,
        restore_postgres,
    )
    from safehold.db.redis import RedisSource, restore_redis
    from safehold.db.server import LocalServer, find_bindir, free_port
    from safehold.db.spool import run_pusher, spool_push, spool_take
    from safehold.db.sqlite import SqliteSource
    from safehold.db.walstore import WalArchive

_WHERE = {
    "safehold.db.catalog": ("PgBackup", "pg_backups"),
    "safehold.db.errors": (
        "BackupIncomplete",
        "DbError",
        "DbToolError",
        "RecoveryTargetError",
        "WalConflict",
        "WalMissing",
    ),
    "safehold.db.postgres": (
        "PostgresSource",
        "WalCheck",
        "Window",
        "check_wal",
        "expire_wal",
        "recoverable_window",
        "stanza_for",
    ),
    "safehold.db.recovery": (
        "BackupId",
        "Latest",
        "Lsn",
        "Name",
        "PgRestoreResult",
        "Target",
        "Time",
        "restore_postgres",
    ),
    "safehold.db.mariadb": ("MariaDbSource", "restore_mariadb"),
    "safehold.db.receivewal": ("WalReceiver",),
    "safehold.db.redis": ("RedisSource", "restore_redis"),
    "safehold.db.server": ("LocalServer", "find_bindir", "free_port"),
    "safehold.db.spool": ("run_pusher", "spool_push", "spool_take"),
    "safehold.db.sqlite": ("SqliteSource",),
    "safehold.db.walstore": ("WalArchive",),
}
_MODULE_OF = {name: mod for mod, names in _WHERE.items() for name in names}

__all__ = [
    "BackupId",
    "BackupIncomplete",
    "DbError",
    "DbToolError",
    "Latest",
    "LocalServer",
    "Lsn",
    "MariaDbSource",
    "Name",
    "PgBackup",
    "PgRestoreResult",
    "PostgresSource",
    "RecoveryTargetError",
    "RedisSource",
    "SqliteSource",
    "Target",
    "Time",
    "WalArchive",
    "WalCheck",
    "WalConflict",
    "WalMissing",
    "WalReceiver",
    "Window",
    "check_wal",
    "expire_wal",
    "find_bindir",
    "free_port",
    "pg_backups",
    "recoverable_window",
    "restore_mariadb",
    "restore_postgres",
    "restore_redis",
    "run_pusher",
    "spool_push",
    "spool_take",
    "stanza_for",
]


def __getattr__(name: str) -> Any:
    mod = _MODULE_OF.get(name)
    if mod is None:
        raise AttributeError(f"module 'safehold.db' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)
