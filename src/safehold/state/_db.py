"""
The SQLite schema of a state store, and the few statements everything else uses.

One database file holds one partition's state (see ``docs/state.md``)::

    meta     one row: format, partition, epoch, the log floor, the backup that the next
             incremental follows, and the last LSN with its epoch and time *as of the
             last write of meta*: commits do not write it (see ``read_meta``)
    dict     (name, key) -> value            every dictionary, values as canonical JSON
    queue    (name, seq) -> value            every queue, FIFO by seq
    log      lsn -> epoch, time, ops          the change log: one row per committed transaction

An *op* is a JSON array, the same in the log, in incremental backups and in replay::

    ["set", dictionary, key, value]     ["del", dictionary, key]
    ["enq", queue, seq, value]          ["deq", queue, seq]

Every function here is blocking; callers run them in a worker thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from json.scanner import c_make_scanner  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, Literal

from safehold.core.snapshot import Epoch
from safehold.state.errors import InvalidBackup

__all__ = [
    "FORMAT_VERSION",
    "LIVE_LSN",
    "Changes",
    "Durability",
    "Meta",
    "apply_changes",
    "connect",
    "connect_reader",
    "create_schema",
    "decode",
    "encode",
    "read_meta",
    "uri_rw",
    "write_meta",
]

FORMAT_VERSION = 1
Durability = Literal["full", "normal"]

_SCHEMA = """
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    format INTEGER NOT NULL,
    partition TEXT NOT NULL,
    epoch_dl INTEGER NOT NULL,
    epoch_cfg INTEGER NOT NULL,
    lsn INTEGER NOT NULL,
    tail_dl INTEGER,
    tail_cfg INTEGER,
    tail_time TEXT,
    log_floor INTEGER NOT NULL,
    base_id TEXT,
    base_lsn INTEGER,
    base_chain TEXT,
    base_dl INTEGER,
    base_cfg INTEGER
);
CREATE TABLE dict (name TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                   PRIMARY KEY (name, key)) WITHOUT ROWID;
CREATE TABLE queue (name TEXT NOT NULL, seq INTEGER NOT NULL, value TEXT NOT NULL,
                    PRIMARY KEY (name, seq)) WITHOUT ROWID;
CREATE TABLE log (lsn INTEGER PRIMARY KEY, epoch_dl INTEGER NOT NULL,
                  epoch_cfg INTEGER NOT NULL, time TEXT NOT NULL, ops TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Meta:
    """
    The ``meta`` row.

    Attributes:
        partition: the partition id this state belongs to.
        epoch: the partition's current epoch; new transactions commit in it.
        lsn: the LSN of the last committed transaction (0: none yet).
        tail_epoch: the epoch the last transaction committed in; None when the
            store holds no transaction (a new or freshly lost store).
        tail_time: the commit time of the last transaction (format_time), or None.
        log_floor: the log holds every transaction with an LSN above this.
        base_id, base_lsn, base_chain, base_epoch: the accepted backup that the
            next incremental follows; None when there is none.
    """

    partition: str
    epoch: Epoch
    lsn: int = 0
    tail_epoch: Epoch | None = None
    tail_time: str | None = None
    log_floor: int = 0
    base_id: str | None = None
    base_lsn: int | None = None
    base_chain: str | None = None
    base_epoch: Epoch | None = None

    def advanced(self, lsn: int, time: str) -> Meta:
        """The meta after a commit at *lsn* and *time* in the current epoch (on every commit)."""
        return Meta(
            self.partition,
            self.epoch,
            lsn,
            self.epoch,
            time,
            self.log_floor,
            self.base_id,
            self.base_lsn,
            self.base_chain,
            self.base_epoch,
        )

    def without_base(self) -> Meta:
        """The same meta with no backup to follow (after a restore or a data loss)."""
        return replace(self, base_id=None, base_lsn=None, base_chain=None, base_epoch=None)


def connect(path: Path, *, durability: Durability = "full", wal: bool = True) -> sqlite3.Connection:
    """
    Open *path* in autocommit mode: callers issue ``BEGIN``/``COMMIT`` themselves.

    ``check_same_thread`` is off because the store's writer connection is created on
    one thread and closed on another when the store closes; it is never used by two
    threads at once.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    # FULL makes each commit durable against power loss, not just process death;
    # see docs/state.md ("Durability") for why the LSN guarantee needs it.
    conn.execute(f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}")
    return conn


def connect_reader(path: Path) -> sqlite3.Connection:
    """
    Open *path* for reading beside the writer (WAL readers never wait for it).

    Autocommit, so that each statement outside ``BEGIN`` reads the latest commit;
    callers fetch every row (``fetchall``) so that no statement keeps a stale read
    transaction open. ``query_only`` makes a misplaced write fail loudly.
    """
    conn = sqlite3.connect(uri_rw(path), uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA query_only = 1")
    return conn


def uri_rw(path: Path) -> str:
    """*path* as a ``mode=rw`` URI: opening it never creates a missing database."""
    return f"{path.resolve().as_uri()}?mode=rw"


def create_schema(conn: sqlite3.Connection, meta: Meta) -> None:
    """Create the tables in an empty database and write its meta row."""
    conn.executescript(_SCHEMA)
    conn.execute(
        "INSERT INTO meta (id, format, partition, epoch_dl, epoch_cfg, lsn, log_floor) "
        "VALUES (1, ?, ?, 0, 0, 0, 0)",
        (FORMAT_VERSION, meta.partition),
    )
    write_meta(conn, meta)


def read_meta(conn: sqlite3.Connection) -> Meta:
    """
    Read the meta row, with the last committed transaction as of now.

    A commit writes its log record and not the meta row (one statement and one
    page less per commit). So the last LSN, and its epoch and time, are the log's
    newest record when it is newer than the row's; the row's otherwise (the log is
    empty, or truncated up to the row's LSN: whatever writes the row while the log
    may lose its tail, truncation and backups' acceptance, writes the LSN with it).

    Raises:
        sqlite3.DatabaseError: the file is not a database, or is damaged.
        InvalidBackup: the file is a database, but not a state store of this format.
    """
    try:
        row = conn.execute(_READ_META).fetchone()
    except sqlite3.OperationalError as exc:
        raise InvalidBackup(f"not a safehold state database: {exc}") from exc
    if row is None:
        raise InvalidBackup("not a safehold state database: no meta row")
    if row[0] != FORMAT_VERSION:
        raise InvalidBackup(f"state format {row[0]} is not supported (this program reads 1)")
    lsn, tail_dl, tail_cfg, tail_time = row[4:8]
    if row[14] is not None and row[14] > lsn:  # the log's newest record is the tail
        lsn, tail_dl, tail_cfg, tail_time = row[14:18]
    return Meta(
        partition=row[1],
        epoch=Epoch(row[2], row[3]),
        lsn=lsn,
        tail_epoch=None if tail_dl is None else Epoch(tail_dl, tail_cfg),
        tail_time=tail_time,
        log_floor=row[8],
        base_id=row[9],
        base_lsn=row[10],
        base_chain=row[11],
        base_epoch=None if row[12] is None else Epoch(row[12], row[13]),
    )


# One statement, so that the meta row and the log's tail are read from one state.
_READ_META = (
    "SELECT m.format, m.partition, m.epoch_dl, m.epoch_cfg, m.lsn, m.tail_dl, m.tail_cfg, "
    "m.tail_time, m.log_floor, m.base_id, m.base_lsn, m.base_chain, m.base_dl, m.base_cfg, "
    "t.lsn, t.epoch_dl, t.epoch_cfg, t.time FROM meta AS m LEFT JOIN "
    "(SELECT lsn, epoch_dl, epoch_cfg, time FROM log ORDER BY lsn DESC LIMIT 1) AS t "
    "WHERE m.id = 1"
)

LIVE_LSN = (
    "SELECT max(lsn, coalesce((SELECT max(lsn) FROM log), 0)), epoch_dl, epoch_cfg "
    "FROM meta WHERE id = 1"
)
"""The last committed LSN and the current epoch, in one statement (see ``read_meta``)."""


def write_meta(conn: sqlite3.Connection, meta: Meta) -> None:
    """Overwrite the meta row (the caller holds a write transaction, or none at all)."""
    tail = meta.tail_epoch
    base = meta.base_epoch
    conn.execute(
        "UPDATE meta SET partition = ?, epoch_dl = ?, epoch_cfg = ?, lsn = ?, tail_dl = ?, "
        "tail_cfg = ?, tail_time = ?, log_floor = ?, base_id = ?, base_lsn = ?, base_chain = ?, "
        "base_dl = ?, base_cfg = ? WHERE id = 1",
        (
            meta.partition,
            meta.epoch.data_loss_number,
            meta.epoch.configuration_number,
            meta.lsn,
            None if tail is None else tail.data_loss_number,
            None if tail is None else tail.configuration_number,
            meta.tail_time,
            meta.log_floor,
            meta.base_id,
            meta.base_lsn,
            meta.base_chain,
            None if base is None else base.data_loss_number,
            None if base is None else base.configuration_number,
        ),
    )


def encode(value: Any) -> str:
    """
    Encode a value as canonical JSON: sorted keys, no spaces, no NaN.

    Canonical, so that a value replayed from a backup is stored byte for byte as it
    was; and encoded at once, so that a caller changing the object later changes
    nothing in the transaction.

    Raises:
        TypeError, ValueError: the value is not JSON-serialisable (or holds NaN/inf).
    """
    # ASCII-only, so that no value can carry a lone surrogate into SQLite's UTF-8.
    try:
        return "".join(_CANONICAL(value, 0))
    except RecursionError as exc:  # no marker dict: a cycle recurses until it stops
        raise ValueError("Circular reference detected (or a value nested too deeply)") from exc


def _not_serializable(o: object) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


# The C encoder that json.dumps(sort_keys=True, separators=(",", ":"), allow_nan=False)
# builds on every call, built once. Without the marker dict that detects cycles: it
# must be fresh for each call (an error leaves ids in it), and a cycle ends in
# RecursionError anyway.
_CANONICAL: Callable[[Any, int], Sequence[str]] = c_make_encoder(
    None, _not_serializable, encode_basestring_ascii, None, ":", ",", True, False, False
)
# The C scanner that json.loads runs, without its wrappers' checks (for our own texts).
_SCAN: Callable[[str, int], tuple[Any, int]] = c_make_scanner(json.JSONDecoder())


def decode(text: str) -> Any:
    """
    Decode a stored value.

    Raises:
        json.JSONDecodeError: *text* is not one JSON value.
    """
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return json.loads(text)  # raises the error that says where
    if end != len(text):
        return json.loads(text)
    return value


@dataclass
class Changes:
    """
    What one transaction changes, with values already encoded.

    Within one transaction each (name, key) and each (name, seq) appears at most
    once, so the order in which the four kinds are applied does not matter.
    """

    sets: list[tuple[str, str, str]] = field(default_factory=list)
    dels: list[tuple[str, str]] = field(default_factory=list)
    enqs: list[tuple[str, int, str]] = field(default_factory=list)
    deqs: list[tuple[str, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.sets or self.dels or self.enqs or self.deqs)

    def ops_json(self) -> str:
        """
        The ops as the JSON text of the log and of incremental backups.

        Values are spliced in as the canonical JSON they are stored as, so a value is
        encoded exactly once.
        """
        d = _dump_key
        if not (self.dels or self.deqs or self.enqs):  # the common case
            return "[" + ",".join([f'["set",{d(n)},{d(k)},{v}]' for n, k, v in self.sets]) + "]"
        parts = [f'["set",{d(n)},{d(k)},{v}]' for n, k, v in self.sets]
        parts += [f'["del",{d(n)},{d(k)}]' for n, k in self.dels]
        parts += [f'["deq",{d(n)},{s}]' for n, s in self.deqs]
        parts += [f'["enq",{d(n)},{s},{v}]' for n, s, v in self.enqs]
        return "[" + ",".join(parts) + "]"

    @classmethod
    def from_ops(cls, ops: Any) -> Changes:
        """
        Parse decoded ops (from a log record or an incremental backup).

        Raises:
            InvalidBackup: the ops are malformed.
        """
        if not isinstance(ops, list):
            raise InvalidBackup(f"malformed ops {ops!r}")
        ch = cls()
        for op in ops:
            try:
                match op:
                    case ["set", str(name), str(key), value]:
                        ch.sets.append((name, key, encode(value)))
                    case ["del", str(name), str(key)]:
                        ch.dels.append((name, key))
                    case ["enq", str(name), int(seq), value]:
                        ch.enqs.append((name, seq, encode(value)))
                    case ["deq", str(name), int(seq)]:
                        ch.deqs.append((name, seq))
                    case _:
                        raise InvalidBackup(f"malformed op {op!r}")
            except (TypeError, ValueError) as exc:
                raise InvalidBackup(f"malformed op {op!r}: {exc}") from exc
        return ch


_dump_key = encode_basestring_ascii  # json.dumps(s) for a str: the quoted ASCII escape


def apply_changes(conn: sqlite3.Connection, ch: Changes) -> None:
    """Apply *ch* inside the caller's write transaction."""
    if ch.sets:
        conn.executemany(
            "INSERT INTO dict (name, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (name, key) DO UPDATE SET value = excluded.value",
            ch.sets,
        )
    if ch.dels:
        conn.executemany("DELETE FROM dict WHERE name = ? AND key = ?", ch.dels)
    if ch.deqs:
        conn.executemany("DELETE FROM queue WHERE name = ? AND seq = ?", ch.deqs)
    if ch.enqs:
        conn.executemany("INSERT INTO queue (name, seq, value) VALUES (?, ?, ?)", ch.enqs)
