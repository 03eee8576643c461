"""
Opening a store's directory: is the state there, absent, or lost? And starting again.

Data loss is detected here, by what is on disk:

- ``CURRENT`` cannot be read, or is missing while database files exist;
- the database ``CURRENT`` names is missing;
- the database is not a database, fails ``PRAGMA quick_check``, or is not this
  partition's state.

A directory with neither ``CURRENT`` nor a database is *absent*: a new store,
unless the partition has backups.

Every function here but ``attach`` is blocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from safehold.core.errors import UsageError
from safehold.core.snapshot import Epoch, Snapshot
from safehold.state._db import Durability, Meta, connect, create_schema, read_meta
from safehold.state._files import (
    Current,
    DamagedPointer,
    database_files,
    fsync_dir,
    fsync_file,
    move_aside,
    read_current,
    remove_strays,
    write_current,
)
from safehold.state.backup import check_database
from safehold.state.dataloss import DataLossMode
from safehold.state.errors import InvalidBackup

__all__ = ["Inspection", "attach", "create_database", "damage", "inspect"]

log = logging.getLogger(__name__)


@dataclass
class Inspection:
    """
    What ``inspect`` found.

    Attributes:
        state: ``ok`` (the live database is intact), ``absent`` (nothing there),
            ``lost`` (see ``reason``), or ``pending`` (intact, but a loss's hook has
            not yet finished; ``reason`` is that loss's).
        current: what ``CURRENT`` says, when it could be read.
        epochs: every epoch the remains tell of, so that a new one can be higher.
        generation: the highest database generation seen (0: none).
    """

    state: Literal["ok", "absent", "lost", "pending"]
    reason: str = ""
    current: Current | None = None
    epochs: list[Epoch] = field(default_factory=list)
    generation: int = 0


def inspect(root: Path, partition: str, *, verify: bool) -> Inspection:
    """
    Look at the directory and say what state it is in.

    With *verify*, the live database is checked with ``PRAGMA quick_check``, which
    reads it whole; without, only its header and ``meta`` row are read.

    Raises:
        UsageError: ``CURRENT`` names another partition: this is the wrong directory,
            not a loss, and nothing is touched.
    """
    gens = database_files(root)
    top = max(gens, default=0)
    try:
        cur = read_current(root)
    except DamagedPointer as exc:
        return Inspection("lost", str(exc), epochs=_epochs_of(root, gens), generation=top)
    if cur is None:
        if gens:
            return Inspection(
                "lost",
                "CURRENT is missing, but database files exist",
                epochs=_epochs_of(root, gens),
                generation=top,
            )
        return Inspection("absent")
    if cur.partition != partition:
        raise UsageError(f"{root} holds the state of partition {cur.partition}, not {partition}")
    found = Inspection("ok", current=cur, epochs=[cur.epoch], generation=max(top, cur.generation))
    _inspect_database(root, cur, partition, found, verify=verify)
    if found.state == "ok":
        remove_strays(root, keep=cur.generation)
        if cur.pending_loss is not None:
            found.state, found.reason = "pending", cur.pending_loss
    return found


def _inspect_database(
    root: Path, cur: Current, partition: str, found: Inspection, *, verify: bool
) -> None:
    """Mark *found* lost if the database ``CURRENT`` names is missing, damaged or foreign."""
    db = root / cur.db_name
    if not db.exists():
        found.state, found.reason = "lost", f"the database {db.name} is missing"
        return
    try:
        meta = check_database(db) if verify else _read_meta(db)
    except InvalidBackup as exc:
        found.state, found.reason = "lost", f"the database {db.name} is damaged: {exc}"
        return
    found.epochs.append(meta.epoch)
    if meta.partition != partition:
        found.state = "lost"
        found.reason = f"the database {db.name} holds partition {meta.partition}, not {partition}"


def _read_meta(db: Path) -> Meta:
    try:
        conn = connect(db, wal=False)
        try:
            return read_meta(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise InvalidBackup(str(exc)) from exc


def _epochs_of(root: Path, gens: dict[int, list[Path]]) -> list[Epoch]:
    epochs = []
    for gen in gens:
        db = root / f"state-{gen}.db"
        if db.exists():
            with contextlib.suppress(InvalidBackup):  # damaged: it tells of no epoch
                epochs.append(_read_meta(db).epoch)
    return epochs


def create_database(root: Path, current: Current, durability: Durability) -> None:
    """
    Create an empty database for ``current`` and then make ``CURRENT`` name it.

    A crash before ``CURRENT`` is written leaves a database file without a pointer,
    which the next open treats as a loss again: the same outcome, retried.
    """
    db = root / current.db_name
    for p in database_files(root).get(current.generation, []):
        p.unlink()  # a stray of an earlier attempt
    conn = connect(db, durability=durability)
    try:
        create_schema(conn, Meta(partition=current.partition, epoch=current.epoch))
    finally:
        conn.close()
    fsync_file(db)
    fsync_dir(root)
    write_current(root, current)


def damage(root: Path, current: Current, mode: DataLossMode) -> None:
    """
    Damage the live database on purpose, for a drill; the store's connection is closed.

    ``FULL`` deletes the database and its WAL; ``PARTIAL`` overwrites the database's
    100-byte header, so SQLite no longer recognises it, and deletes the WAL.
    """
    db = root / current.db_name
    for suffix in ("-wal", "-shm"):
        (root / f"{current.db_name}{suffix}").unlink(missing_ok=True)
    if mode is DataLossMode.FULL:
        db.unlink(missing_ok=True)
    else:
        with db.open("r+b") as f:
            f.write(b"\xde\xad" * 50)
            f.flush()
    fsync_dir(root)


async def attach(
    root: Path,
    partition: str,
    *,
    backups: Callable[[], Awaitable[list[Snapshot]]] | None,
    verify: bool,
    durability: Durability,
) -> tuple[Current, tuple[str, Path | None] | None]:
    """
    Make the directory hold a usable database; say which, and what loss is pending.

    A new store gets an empty database in epoch (0, 0). After a loss, the remains go
    to ``lost/`` and an empty database starts in a data-loss number above every
    epoch known (the remains', ``CURRENT``'s, the backups'), with the loss recorded
    in ``CURRENT`` until the hook has run.

    Args:
        backups: lists the partition's backups (None: no target to ask).

    Returns:
        ``CURRENT``, and for a loss (found now or still pending) its reason and
        where the remains went (None when nothing was moved now).

    Raises:
        UsageError: the directory holds another partition.
        and what *backups* raises, for an absent store (new or lost cannot be told).
    """
    insp = await asyncio.to_thread(inspect, root, partition, verify=verify)
    if insp.state == "absent" and backups is not None:
        known = await backups()
        if known:
            insp = Inspection(
                "lost",
                f"the store's files are missing, but the partition has {len(known)} backups",
                epochs=[s.epoch for s in known if s.epoch],
            )
    if insp.state == "absent":
        current = Current(1, partition, Epoch())
        await asyncio.to_thread(create_database, root, current, durability)
        return current, None
    if insp.state == "lost":
        epochs = list(insp.epochs)
        if backups is not None:
            try:
                epochs += [s.epoch for s in await backups() if s.epoch is not None]
            except Exception:
                log.exception(
                    "partition %s: cannot list backups to choose the new epoch", partition
                )
        top = max((e.data_loss_number for e in epochs), default=0)
        cfg = max((e.configuration_number for e in epochs), default=0)
        current = Current(
            insp.generation + 1, partition, Epoch(top + 1, cfg), pending_loss=insp.reason
        )
        lost = await asyncio.to_thread(move_aside, root, insp.reason)
        await asyncio.to_thread(create_database, root, current, durability)
        log.error(
            "partition %s: data loss: %s; starting again in epoch %s (remains in %s)",
            partition,
            insp.reason,
            current.epoch.key(),
            lost,
        )
        return current, (insp.reason, lost)
    assert insp.current is not None  # "ok" and "pending" have read it
    return insp.current, (insp.reason, None) if insp.state == "pending" else None
