"""
The local files cache: what a file's chunks were, the last time it was backed up
unchanged (``docs/format.md`` § Local files cache).

A host with a write-only key cannot read its parent snapshot, so without this it
would read and chunk every file at every backup. The cache maps a path and its
(size, mtime, ctime, inode) to the chunk ids stored for it. Rows are keyed-MAC'd
(a row changed by anyone without the index key is ignored), written in one
SQLite transaction that commits only once the snapshot is saved, and dropped
after ``KEEP_BACKUPS`` backups that did not see them.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sqlite3
import struct
import threading
from pathlib import Path

import blake3

from safehold.repo.tree import Node

__all__ = ["KEEP_BACKUPS", "FilesCache"]

log = logging.getLogger("safehold.repo")

KEEP_BACKUPS = 10
FILE_NAME = "files-v1.sqlite"
_STAT = struct.Struct("<QqqQ")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER, mtime INTEGER, ctime INTEGER, inode INTEGER,
    content BLOB, gen INTEGER, mac BLOB);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER);
"""


class FilesCache:
    """One backup's view of the files cache. Thread-safe; ``commit`` or ``close`` it."""

    def __init__(self, path: Path, index_key: bytes, repo_id: str) -> None:
        data = b"safehold files cache v1" + repo_id.encode()
        self._key = blake3.blake3(data, key=index_key).digest()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._db.executescript(_SCHEMA)
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT v FROM meta WHERE k = 'gen'").fetchone()
        except sqlite3.Error:
            self._db.close()
            raise
        self._gen = (int(row[0]) if row else 0) + 1
        self.hits = 0

    @classmethod
    def open(
        cls, cache_dir: Path | None, index_key: bytes, repo_id: str | None
    ) -> FilesCache | None:
        """The repository's files cache, or None if there is no usable cache directory."""
        if cache_dir is None or not repo_id or not repo_id.isalnum():
            return None
        directory = cache_dir / repo_id
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            return cls(directory / FILE_NAME, index_key, repo_id)
        except (OSError, sqlite3.Error) as exc:
            log.warning("no local files cache (%s): unchanged files are read again", exc)
            return None

    def _mac(self, path: str, stat: bytes, content: bytes) -> bytes:
        h = blake3.blake3(key=self._key, max_threads=1)
        for part in (path.encode("utf-8", "surrogateescape"), stat, content):
            h.update(struct.pack("<Q", len(part)))
            h.update(part)
        return h.digest(length=16)

    def previous(self, path: str, node: Node) -> Node | None:
        """
        A node with the chunk ids stored for *path* if its size, mtime, ctime and
        inode are still those of *node*; else None. The caller still checks that
        every chunk is indexed before reusing them.
        """
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT size, mtime, ctime, inode, content, mac FROM files WHERE path = ?",
                    (path,),
                ).fetchone()
            except sqlite3.Error:
                return None
        if row is None:
            return None
        size, mtime, ctime, inode, content, mac = row
        stat = _STAT.pack(size, mtime, ctime, inode)
        if not secrets.compare_digest(self._mac(path, stat, content), mac):
            return None
        if (size, mtime, ctime, inode) != (node.size, node.mtime_ns, node.ctime_ns, node.inode):
            return None
        ids = [content[i : i + 32] for i in range(0, len(content), 32)]
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.execute("UPDATE files SET gen = ? WHERE path = ?", (self._gen, path))
        self.hits += 1
        return Node(
            node.name, "file", size=size, mtime_ns=mtime, ctime_ns=ctime, inode=inode, content=ids
        )

    def record(self, path: str, node: Node) -> None:
        """Remember the chunks just stored for *path* (read whole and unchanged)."""
        content = b"".join(node.content)
        stat = _STAT.pack(node.size, node.mtime_ns, node.ctime_ns, node.inode)
        mac = self._mac(path, stat, content)
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    path,
                    node.size,
                    node.mtime_ns,
                    node.ctime_ns,
                    node.inode,
                    content,
                    self._gen,
                    mac,
                ),
            )

    def commit(self) -> None:
        """Keep this backup's rows (call once its snapshot is saved), and close."""
        with self._lock:
            try:
                self._db.execute("DELETE FROM files WHERE gen < ?", (self._gen - KEEP_BACKUPS,))
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('gen', ?)", (self._gen,))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                log.warning("the local files cache was not updated: %s", exc)
            finally:
                self._db.close()

    def close(self) -> None:
        """Drop this backup's rows (it failed) and close; harmless after ``commit``."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._db.close()
