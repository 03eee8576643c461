"""
The store's writer thread: the one thread that writes, the connection it owns, the live meta.

Every SQLite write of the live database, and every read inside a transaction, runs
here, one at a time, so commits are serialised without any lock on the event loop
side and a commit's job finishes even if the task that awaited it is cancelled.
Methods without ``async`` run on the writer thread; the store calls them through
``call``. ``meta`` and ``generation`` change only there; other threads only read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from safehold.core.snapshot import Epoch, format_time
from safehold.state import _files
from safehold.state._db import Changes, Durability, Meta, apply_changes, connect, read_meta
from safehold.state.backup import BackupInfo
from safehold.state.errors import StateError, StoreClosed

__all__ = ["Writer", "remove_db_files"]

T = TypeVar("T")


class Writer:
    """
    The writer thread of the store in *root*.

    Args:
        root: the store's directory.
        partition: the partition id, for messages and ``CURRENT``.
        durability: the writer connection's synchronous level.
        truncate_log: whether accepting a backup drops the log up to it.
    """

    def __init__(
        self, root: Path, partition: str, durability: Durability, truncate_log: bool
    ) -> None:
        self.root = root
        self.partition = partition
        self.durability: Durability = durability
        self.truncate = truncate_log
        self.generation = 0
        self.meta: Meta | None = None
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix=f"state-{partition}"
        )

    @property
    def running(self) -> bool:
        """Whether the thread still takes work."""
        return self._executor is not None

    async def call(self, fn: Callable[[], T]) -> T:
        """Run *fn* on the writer thread; SQLite errors become ``StateError``."""
        if self._executor is None:
            raise StoreClosed(f"the state store of partition {self.partition} is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, _translated, fn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run *fn* with the connection on the writer thread (a ``transaction.Runner``)."""
        return await self.call(lambda: fn(self.conn()))

    async def shutdown(self) -> None:
        """Close the connection and stop the thread."""
        if self._executor is not None:
            await self.call(self.close_conn)
            self._executor.shutdown()
            self._executor = None

    # -- on the writer thread --------------------------------------------------------

    def db_path(self, gen: int | None = None) -> Path:
        """The database file of generation *gen* (by default the live one)."""
        return self.root / f"state-{self.generation if gen is None else gen}.db"

    def open_conn(self, gen: int) -> None:
        """Open generation *gen* as the live database."""
        conn = connect(self.db_path(gen), durability=self.durability)
        try:
            self.meta = read_meta(conn)
        except BaseException:
            conn.close()
            raise
        self._conn, self.generation = conn, gen

    def close_conn(self) -> None:
        """Close the live connection, if open."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def conn(self) -> sqlite3.Connection:
        """The live connection."""
        if self._conn is None:
            raise StoreClosed(f"the state store of partition {self.partition} is closed")
        return self._conn

    def live_meta(self) -> Meta:
        """The live meta."""
        if self.meta is None or self._executor is None:
            raise StoreClosed(f"the state store of partition {self.partition} is not open")
        return self.meta

    def commit(self, ch: Changes, enqueues: list[tuple[str, list[str]]]) -> int:
        """Apply a transaction's changes, log them, and take the next LSN; return it."""
        conn, meta = self.conn(), self.live_meta()
        lsn = meta.lsn + 1
        now = format_time(datetime.now(UTC))
        dl, cfg = meta.epoch.data_loss_number, meta.epoch.configuration_number
        with _write_transaction(conn):
            for name, values in enqueues:
                (top,) = conn.execute(
                    "SELECT MAX(seq) FROM queue WHERE name = ?", (name,)
                ).fetchone()
                base = top or 0
                ch.enqs.extend((name, base + i, v) for i, v in enumerate(values, 1))
            apply_changes(conn, ch)
            conn.execute(
                "INSERT INTO log (lsn, epoch_dl, epoch_cfg, time, ops) VALUES (?, ?, ?, ?, ?)",
                (lsn, dl, cfg, now, ch.ops_json()),
            )
            conn.execute(
                "UPDATE meta SET lsn = ?, tail_dl = ?, tail_cfg = ?, tail_time = ? WHERE id = 1",
                (lsn, dl, cfg, now),
            )
        self.meta = replace(meta, lsn=lsn, tail_epoch=meta.epoch, tail_time=now)
        return lsn

    def truncate_log(self, up_to: int | None) -> int:
        """Drop the log up to *up_to* (default: the backup base); return how many went."""
        conn, meta = self.conn(), self.live_meta()
        if up_to is None:
            up_to = meta.base_lsn if meta.base_lsn is not None else meta.lsn
        up_to = min(up_to, meta.lsn)
        if up_to <= meta.log_floor:
            return 0
        with _write_transaction(conn):
            n = conn.execute("DELETE FROM log WHERE lsn <= ?", (up_to,)).rowcount
            conn.execute("UPDATE meta SET log_floor = ? WHERE id = 1", (up_to,))
        self.meta = replace(meta, log_floor=up_to)
        return int(n)

    def accept(self, gen: int, info: BackupInfo) -> bool:
        """
        Make *info* the base of the next incremental; False if the store moved on.

        The store moved on when a restore or a loss replaced the database (a new
        generation) or the epoch changed while the backup ran.
        """
        meta = self.live_meta()
        if gen != self.generation or meta.epoch != info.epoch or self._conn is None:
            return False
        floor = max(meta.log_floor, info.lsn) if self.truncate else meta.log_floor
        conn = self._conn
        e = info.epoch
        with _write_transaction(conn):
            if floor > meta.log_floor:
                conn.execute("DELETE FROM log WHERE lsn <= ?", (floor,))
            conn.execute(
                "UPDATE meta SET base_id = ?, base_lsn = ?, base_chain = ?, base_dl = ?, "
                "base_cfg = ?, log_floor = ? WHERE id = 1",
                (
                    info.backup_id,
                    info.lsn,
                    info.chain_id,
                    e.data_loss_number,
                    e.configuration_number,
                    floor,
                ),
            )
        self.meta = replace(
            meta,
            base_id=info.backup_id,
            base_lsn=info.lsn,
            base_chain=info.chain_id,
            base_epoch=e,
            log_floor=floor,
        )
        return True

    def swap(self, gen: int, epoch: Epoch) -> None:
        """Make the built database of generation *gen* the live one, atomically."""
        self.close_conn()
        try:
            _files.failpoint("restore-before-swap")
            _files.write_current(self.root, _files.Current(gen, self.partition, epoch))
        except BaseException:
            self.open_conn(self.generation)
            raise
        _files.failpoint("restore-after-swap")
        old = self.generation
        self.open_conn(gen)
        remove_db_files(self.root, old)


@contextlib.contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _translated(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except sqlite3.Error as exc:
        raise StateError(f"the state database failed: {exc}") from exc


def remove_db_files(root: Path, gen: int) -> None:
    """Delete generation *gen*'s database and its companions."""
    for p in _files.database_files(root).get(gen, []):
        p.unlink(missing_ok=True)
