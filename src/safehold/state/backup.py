"""
Backups of a state store: what they are, and how their bytes are produced and read.

A **full backup** is a SQLite database file: a consistent copy of the store taken
with SQLite's online backup while writers go on, with the change log emptied. Its ``meta``
row says which partition, epoch and LSN it holds.

An **incremental backup** is UTF-8 JSON lines: a header, one line per transaction
committed since the previous backup (its parent), and a trailer::

    {"format": "safehold-state-incremental", "version": 1, "partition": "p1",
     "chain_id": "<uuid>", "parent": "<snapshot id>", "epoch": [0, 0],
     "from_lsn": 10, "to_lsn": 12}
    {"lsn": 11, "epoch": [0, 0], "time": "2026-11-22T03:55:12.123456Z", "ops": [...]}
    {"lsn": 12, "epoch": [0, 0], "time": "2026-11-22T03:55:12.125001Z", "ops": [...]}
    {"end": true, "records": 2, "to_lsn": 12}

It holds the transactions with LSN in (from_lsn, to_lsn], so its size follows what
changed, not the size of the store. ``docs/state.md`` has the details.

The producers here are blocking and read through their own connection, so they
run in a worker thread while the store's writer goes on.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from safehold.core.snapshot import Epoch, Snapshot
from safehold.state._db import LIVE_LSN, Meta, connect, read_meta, write_meta
from safehold.state.errors import InvalidBackup, MissingFullBackup

__all__ = [
    "INCREMENTAL_FORMAT",
    "BackupCallback",
    "BackupInfo",
    "BackupOption",
    "IncrementalHeader",
    "LogRecord",
    "begin_view",
    "check_database",
    "open_view",
    "read_incremental",
    "write_full",
    "write_incremental",
]

INCREMENTAL_FORMAT = "safehold-state-incremental"


class BackupOption(enum.Enum):
    """What a backup holds: the whole state, or what changed since the previous backup."""

    FULL = "full"
    INCREMENTAL = "incremental"


@dataclass(frozen=True)
class BackupInfo:
    """
    One backup, as the store reports it and the post-backup callback sees it.

    Attributes:
        backup_id: the snapshot's id in the repository.
        option: full or incremental.
        partition: the partition id.
        chain_id: the id shared by a full backup and the incrementals that follow it.
        parent_id: the previous backup of the chain (None for a full backup).
        epoch: the partition's epoch when the backup was taken.
        lsn: the last LSN the backup holds.
        start_lsn: an incremental holds the transactions after this LSN (its parent's);
            a full backup holds everything, and this is 0.
        time: when the consistent view was taken; every transaction it holds committed
            before this time.
        size: the backup's size in bytes, as produced (before dedup and compression).
        path: a local copy of the backup. It exists only while the post-backup
            callback runs: copy it from there to keep it.
        location: where the repository is.
        snapshot: the repository's manifest of the backup.
    """

    backup_id: str
    option: BackupOption
    partition: str
    chain_id: str
    parent_id: str | None
    epoch: Epoch
    lsn: int
    start_lsn: int
    time: datetime
    size: int
    path: Path
    location: str
    snapshot: Snapshot


BackupCallback = Callable[[BackupInfo], Awaitable[bool]]
"""``async def callback(info) -> bool``: return False (or raise) to veto the backup."""


@dataclass(frozen=True)
class IncrementalHeader:
    """The first line of an incremental backup."""

    partition: str
    chain_id: str
    parent: str
    epoch: Epoch
    from_lsn: int
    to_lsn: int

    def to_json(self) -> dict[str, Any]:
        """The header line's JSON object."""
        return {
            "format": INCREMENTAL_FORMAT,
            "version": 1,
            "partition": self.partition,
            "chain_id": self.chain_id,
            "parent": self.parent,
            "epoch": [self.epoch.data_loss_number, self.epoch.configuration_number],
            "from_lsn": self.from_lsn,
            "to_lsn": self.to_lsn,
        }


@dataclass(frozen=True)
class LogRecord:
    """One committed transaction, as the log and incremental backups hold it."""

    lsn: int
    epoch: Epoch
    time: str
    ops: Any


def open_view(db: Path) -> sqlite3.Connection:
    """
    Open a read connection on *db* for a backup; ``begin_view`` then fixes its view.

    The store calls ``begin_view`` on its writer thread, between two commits, and
    stamps the backup's time there: so the view holds exactly the transactions
    stamped before that time, which point-in-time restores rely on.
    """
    return connect(db, wal=False)


def begin_view(view: sqlite3.Connection) -> int:
    """Start the read transaction that fixes *view*'s state; return its LSN."""
    view.execute("BEGIN")
    lsn: int = view.execute(LIVE_LSN).fetchone()[0]
    return lsn


def write_full(view: sqlite3.Connection, out: Path) -> Meta:
    """
    Write a full backup of *view*'s state to the new file *out*; return its meta.

    SQLite's online backup copies within *view*'s read transaction, so the copy is
    the state of that moment however many commits the writer makes meanwhile (WAL
    readers never block writers). The copy then leaves WAL mode, so it is one
    self-contained file, and loses its change log and its backup base, which mean
    nothing in a restored store. Ends *view*'s read transaction.
    """
    dst = connect(out, wal=False)
    try:
        # A scratch file: the engine stores it durably. No fsync here, so a backup
        # does not queue its syncs in front of the store's commits.
        dst.execute("PRAGMA synchronous = OFF")
        view.backup(dst)
        view.execute("COMMIT")
        dst.execute("PRAGMA journal_mode = MEMORY")
        meta = read_meta(dst).without_base()
        meta = replace(meta, log_floor=meta.lsn)
        dst.execute("BEGIN IMMEDIATE")
        dst.execute("DELETE FROM log")
        write_meta(dst, meta)
        dst.execute("COMMIT")
        (free,) = dst.execute("PRAGMA freelist_count").fetchone()
        (pages,) = dst.execute("PRAGMA page_count").fetchone()
        if free * 10 > pages:
            # The emptied log was large (the log is truncated at each accepted
            # backup, so usually it is not): do not carry its pages along.
            dst.execute("VACUUM")
    finally:
        dst.close()
    return meta


def write_incremental(
    view: sqlite3.Connection, out: IO[str], *, partition: str
) -> IncrementalHeader:
    """
    Write the transactions since the backup base to *out*; return the header.

    The base, the LSN and the log are all read in *view*'s read transaction, so the
    backup ends exactly at a committed transaction while writers go on. Ends the
    read transaction.

    Raises:
        MissingFullBackup: there is no base, the epoch moved since it, or the log
            was truncated past it.
    """
    meta = read_meta(view)
    header = _incremental_header(meta, partition)
    out.write(json.dumps(header.to_json()) + "\n")
    n = 0
    rows = view.execute(
        "SELECT lsn, epoch_dl, epoch_cfg, time, ops FROM log WHERE lsn > ? AND lsn <= ? "
        "ORDER BY lsn",
        (header.from_lsn, header.to_lsn),
    )
    for lsn, dl, cfg, time, ops in rows:
        if lsn != header.from_lsn + n + 1:
            raise MissingFullBackup(f"the change log has no transaction {header.from_lsn + n + 1}")
        # ops is already JSON text: splice it in rather than parse and re-encode it.
        out.write(f'{{"lsn":{lsn},"epoch":[{dl},{cfg}],"time":{json.dumps(time)},"ops":{ops}}}\n')
        n += 1
    if n != header.to_lsn - header.from_lsn:
        raise MissingFullBackup(
            f"the change log ends at {header.from_lsn + n}, not at {header.to_lsn}"
        )
    out.write(json.dumps({"end": True, "records": n, "to_lsn": header.to_lsn}) + "\n")
    view.execute("COMMIT")
    return header


def _incremental_header(meta: Meta, partition: str) -> IncrementalHeader:
    if meta.base_id is None or meta.base_lsn is None or meta.base_chain is None:
        raise MissingFullBackup(
            f"partition {partition}: no full backup has been taken in epoch "
            f"{_fmt(meta.epoch)}; take a full backup first"
        )
    if meta.base_epoch != meta.epoch:
        raise MissingFullBackup(
            f"partition {partition}: the epoch moved from {_fmt(meta.base_epoch)} to "
            f"{_fmt(meta.epoch)} since the last backup; take a full backup first"
        )
    if meta.log_floor > meta.base_lsn:
        raise MissingFullBackup(
            f"partition {partition}: the change log was truncated to LSN {meta.log_floor}, past "
            f"the last backup's LSN {meta.base_lsn}; take a full backup first"
        )
    return IncrementalHeader(
        partition=partition,
        chain_id=meta.base_chain,
        parent=meta.base_id,
        epoch=meta.epoch,
        from_lsn=meta.base_lsn,
        to_lsn=meta.lsn,
    )


def _fmt(epoch: Epoch | None) -> str:
    if epoch is None:
        return "(none)"
    return f"({epoch.data_loss_number}, {epoch.configuration_number})"


def read_incremental(
    lines: Iterator[str], *, name: str
) -> tuple[IncrementalHeader, Iterator[LogRecord]]:
    """
    Parse an incremental backup: its header now, its records lazily.

    The record iterator checks as it goes that LSNs follow each other from
    ``from_lsn + 1`` and that the trailer agrees; a reader that stops early (a
    restore to an LSN inside this backup) never needs the rest.

    Raises:
        InvalidBackup: the header, a record or the trailer is malformed, or the
            backup is truncated (raised by the iterator for what comes after the header).
    """
    try:
        doc = json.loads(next(lines))
        if doc.get("format") != INCREMENTAL_FORMAT or doc.get("version") != 1:
            raise InvalidBackup(f"{name}: not a state incremental backup")
        header = IncrementalHeader(
            partition=str(doc["partition"]),
            chain_id=str(doc["chain_id"]),
            parent=str(doc["parent"]),
            epoch=Epoch(int(doc["epoch"][0]), int(doc["epoch"][1])),
            from_lsn=int(doc["from_lsn"]),
            to_lsn=int(doc["to_lsn"]),
        )
    except StopIteration as exc:
        raise InvalidBackup(f"{name}: the backup is empty") from exc
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise InvalidBackup(f"{name}: malformed header: {exc}") from exc
    return header, _records(lines, header, name)


def _records(lines: Iterator[str], header: IncrementalHeader, name: str) -> Iterator[LogRecord]:
    expect = header.from_lsn + 1
    while True:
        try:
            line = next(lines, None)
            if line is None:
                raise InvalidBackup(f"{name}: the backup is truncated (no trailer)")
            doc = json.loads(line)
            if doc.get("end") is True:
                if doc.get("to_lsn") != header.to_lsn or expect != header.to_lsn + 1:
                    raise InvalidBackup(f"{name}: the trailer does not match the records")
                return
            rec = LogRecord(
                lsn=int(doc["lsn"]),
                epoch=Epoch(int(doc["epoch"][0]), int(doc["epoch"][1])),
                time=str(doc["time"]),
                ops=doc["ops"],
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise InvalidBackup(f"{name}: malformed record: {exc}") from exc
        if rec.lsn != expect:
            raise InvalidBackup(f"{name}: expected LSN {expect}, found {rec.lsn}")
        expect += 1
        yield rec


def check_database(path: Path) -> Meta:
    """
    Check that *path* is an intact state database and return its meta.

    Raises:
        InvalidBackup: it is not a database, it is damaged, or it is not a state store.
    """
    try:
        conn = connect(path, wal=False)
    except sqlite3.DatabaseError as exc:
        raise InvalidBackup(f"{path.name}: not a database: {exc}") from exc
    try:
        result = conn.execute("PRAGMA quick_check").fetchall()
        if result != [("ok",)]:
            raise InvalidBackup(f"{path.name}: damaged: {result[0][0]}")
        return read_meta(conn)
    except sqlite3.DatabaseError as exc:
        raise InvalidBackup(f"{path.name}: damaged: {exc}") from exc
    finally:
        conn.close()
