"""
The writer's work besides commits: log truncation, a backup's acceptance, a restore's swap.

Each runs on the writer thread (``Writer.call``) holding the writer connection's
lock, so no commit is under way; each writes what may drop the log's tail together
with the tail (``write_tail``, see ``_writer``). At FULL each ends with a sync of the
WAL (``_durable``), as every commit's caller waits for one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from safehold.core.snapshot import Epoch
from safehold.state import _files
from safehold.state._commit import write_tail, write_transaction
from safehold.state._writer import Writer
from safehold.state.backup import BackupInfo

__all__ = ["accept", "remove_db_files", "swap", "truncate_log"]


def truncate_log(w: Writer, up_to: int | None) -> int:
    """Drop the log up to *up_to* (default: the backup base); return how many went."""
    with w.conn_lock:
        conn, meta = w.conn(), w.live_meta()
        if up_to is None:
            up_to = meta.base_lsn if meta.base_lsn is not None else meta.lsn
        up_to = min(up_to, meta.lsn)
        if up_to <= meta.log_floor:
            return 0
        with write_transaction(conn):
            n = conn.execute("DELETE FROM log WHERE lsn <= ?", (up_to,)).rowcount
            conn.execute("UPDATE meta SET log_floor = ? WHERE id = 1", (up_to,))
            write_tail(conn, meta)
        if w.sync is not None:
            w.sync.sync_now()
        w.set_meta(replace(meta, log_floor=up_to))
        return int(n)


def accept(w: Writer, gen: int, info: BackupInfo) -> bool:
    """
    Make *info* the base of the next incremental; False if the store moved on.

    The store moved on when a restore or a loss replaced the database (a new
    generation) or the epoch changed while the backup ran.
    """
    with w.conn_lock:
        meta = w.live_meta()
        if gen != w.generation or meta.epoch != info.epoch or not w.connected:
            return False
        floor = max(meta.log_floor, info.lsn) if w.truncate else meta.log_floor
        conn = w.conn()
        e = info.epoch
        with write_transaction(conn):
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
            write_tail(conn, meta)
        if w.sync is not None:
            w.sync.sync_now()
        w.set_meta(
            replace(
                meta,
                base_id=info.backup_id,
                base_lsn=info.lsn,
                base_chain=info.chain_id,
                base_epoch=e,
                log_floor=floor,
            )
        )
        return True


def swap(w: Writer, gen: int, epoch: Epoch) -> None:
    """Make the built database of generation *gen* the live one, atomically."""
    with w.conn_lock:
        w.close_conn()
        try:
            _files.failpoint("restore-before-swap")
            _files.write_current(w.root, _files.Current(gen, w.partition, epoch))
        except BaseException:
            w.open_conn(w.generation)
            raise
        _files.failpoint("restore-after-swap")
        old = w.generation
        w.open_conn(gen)
        remove_db_files(w.root, old)


def remove_db_files(root: Path, gen: int) -> None:
    """Delete generation *gen*'s database and its companions."""
    for p in _files.database_files(root).get(gen, []):
        p.unlink(missing_ok=True)
