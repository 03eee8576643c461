"""
SQLite databases of any application: an online, consistent backup.

``SqliteSource(path).backup(repo)`` copies the database with SQLite's online
backup API (``sqlite3.Connection.backup``) into a private temporary file and
stores that file as a one-file snapshot; the application may keep writing. The
copy is made in one step (``pages=-1``): SQLite holds a read transaction on the
source for its duration, so the copy is one committed state, whatever the
journal mode (in WAL mode, writers are not even blocked). Stepwise copying would
restart whenever another connection writes, and might never finish on a busy
database.

``restore`` writes the file beside the target, checks it with
``PRAGMA integrity_check`` and renames it into place, so the target is either the
old database or the whole restored one. Stop the application first: SQLite has
no way to swap a database under open connections.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from safehold.core.progress import ProgressSink
from safehold.core.snapshot import Snapshot, SnapshotMeta
from safehold.db.errors import DbError
from safehold.repo import BackupResult, backup_stream, dump
from safehold.repo.repository import Repository

__all__ = ["SQLITE_TAG", "SqliteSource"]

SQLITE_TAG = "sqlite"


def _connect(uri: str) -> sqlite3.Connection:
    try:
        return sqlite3.connect(uri, uri=True, timeout=30.0)
    except sqlite3.Error as exc:
        raise DbError(f"cannot open the SQLite database: {exc}") from exc


@dataclass(frozen=True)
class SqliteSource:
    """One SQLite database file, backed up online."""

    path: Path

    def backup(
        self,
        repo: Repository,
        *,
        meta: SnapshotMeta | None = None,
        tags: tuple[str, ...] = (),
        progress: ProgressSink | None = None,
    ) -> BackupResult:
        """
        Copy the database consistently and store it as a snapshot of one file.

        Raises:
            DbError: the file is missing or is not a SQLite database.
        """
        path = Path(self.path).absolute()
        if not path.is_file():
            raise DbError(f"the SQLite database {path} does not exist")
        meta = meta or SnapshotMeta()
        with tempfile.TemporaryDirectory(prefix="safehold-sqlite-") as tmp:
            copy = Path(tmp) / path.name
            src = _connect(f"file:{path}?mode=ro")
            dst = _connect(f"file:{copy}")
            try:
                src.backup(dst, pages=-1)
            except sqlite3.Error as exc:
                raise DbError(f"the online backup of {path} failed: {exc}") from exc
            finally:
                dst.close()
                src.close()
            meta = replace(meta, tags=(*meta.tags, *tags, SQLITE_TAG, f"sqlite-path={path}"))
            with copy.open("rb") as f:
                return backup_stream(repo, f, name=path.name, meta=meta, progress=progress)

    def restore(self, repo: Repository, snapshot: Snapshot, target: Path | None = None) -> Path:
        """
        Put the database of *snapshot* at *target* (this source's path by default).

        Raises:
            DbError: the snapshot is not a SQLite backup, or the restored file
                fails ``PRAGMA integrity_check`` (the target is left as it was).
        """
        if SQLITE_TAG not in snapshot.tags:
            raise DbError(f"snapshot {snapshot.short_id} is not a SQLite backup")
        target = Path(target or self.path).absolute()
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                dump(repo, snapshot, out)
                out.flush()
                os.fsync(out.fileno())
            conn = _connect(f"file:{tmp}?mode=ro")
            try:
                result = conn.execute("PRAGMA integrity_check").fetchone()
            except sqlite3.Error as exc:
                result = (str(exc),)
            finally:
                conn.close()
            if not result or result[0] != "ok":
                raise DbError(f"the restored database fails its integrity check: {result}")
            tmp.replace(target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target
