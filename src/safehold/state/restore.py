"""
Restores: which backups make up the state wanted, and building that state in a new file.

A restore point is a backup (by id, or the latest), an LSN, or a point in time.
``plan_restore`` turns it into a chain: a full backup, then incrementals in order,
each the parent of the next, and where to stop inside the last one.
``build_restore`` fetches the chain member by member into a new database file; the
store swaps that file in (see ``_files``), so a crash leaves the old state or the new.

Chain rules, checked from the manifests and again from the content: the head is
full; each incremental's parent is the previous member; one chain id, one epoch;
LSNs never go down; each incremental starts at its parent's LSN.
"""

from __future__ import annotations

import enum
import logging
import os
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from safehold.core.snapshot import Epoch, Snapshot, parse_time
from safehold.state._db import Changes, Meta, apply_changes, connect, write_meta
from safehold.state.backup import check_database, read_incremental
from safehold.state.errors import (
    InvalidBackup,
    InvalidBackupChain,
    NoBackupFound,
    RestoreSafetyCheckFailed,
)
from safehold.state.target import BackupSource

__all__ = [
    "RestorePlan",
    "RestorePolicy",
    "RestoreResult",
    "build_first",
    "build_restore",
    "check_safe",
    "partition_backups",
    "plan_restore",
]

log = logging.getLogger(__name__)

STATE_TAG = "safehold-state"


class RestorePolicy(enum.Enum):
    """
    What a restore does when the store already holds state.

    ``SAFE`` refuses (``RestoreSafetyCheckFailed``) when the store's last transaction
    has a higher epoch than the backup, or an LSN at or past the backup's: restoring
    would lose newer state. ``FORCE`` overwrites it. A store with no transaction
    (new, or just lost) is always safe to restore into.
    """

    SAFE = "safe"
    FORCE = "force"


@dataclass(frozen=True)
class RestorePlan:
    """
    The backups to merge, in order, and where to stop.

    Attributes:
        chain: the full backup, then the incrementals to apply, in order.
        stop_lsn: apply no transaction after this LSN (None: to the end).
        stop_time: apply no transaction that committed after this time (None: to the end).
        warnings: chains passed over because they were broken.
        conditional: the plan holds only if the state it builds has no transaction
            after ``stop_time`` (a full backup taken after the time; see ``_plan_time``).
        alternative: a conditional plan to try first; if it does not hold, this one.
    """

    chain: tuple[Snapshot, ...]
    stop_lsn: int | None = None
    stop_time: datetime | None = None
    warnings: tuple[str, ...] = ()
    conditional: bool = False
    alternative: RestorePlan | None = None

    @property
    def epoch(self) -> Epoch:
        """The chain's epoch."""
        epoch = self.chain[0].epoch
        assert epoch is not None  # partition_backups keeps only snapshots with one
        return epoch

    @property
    def max_lsn(self) -> int:
        """The highest LSN the restore can reach."""
        last = self.chain[-1].lsn
        assert last is not None  # partition_backups keeps only snapshots with one
        return last if self.stop_lsn is None else min(last, self.stop_lsn)


@dataclass(frozen=True)
class RestoreResult:
    """
    What a restore did.

    Attributes:
        backup_id: the last backup applied (the restore may stop inside it).
        chain: the ids of the backups applied, full first.
        lsn: the LSN of the restored state's last transaction.
        restored_epoch: the epoch of the backups restored.
        epoch: the store's new epoch: its data-loss number moved.
        previous_epoch: the store's epoch before the restore.
        previous_lsn: the store's LSN before the restore.
        warnings: broken chains passed over while choosing what to restore.
    """

    backup_id: str
    chain: tuple[str, ...]
    lsn: int
    restored_epoch: Epoch
    epoch: Epoch
    previous_epoch: Epoch
    previous_lsn: int
    warnings: tuple[str, ...] = field(default=())


def partition_backups(snapshots: Sequence[Snapshot], partition: str) -> list[Snapshot]:
    """The state backups of *partition* among *snapshots*, oldest first."""
    found = [
        s
        for s in snapshots
        if STATE_TAG in s.tags
        and s.partition is not None
        and s.partition.partition_id == partition
        and s.epoch is not None
        and s.lsn is not None
        and s.chain_id is not None
    ]
    return sorted(found, key=lambda s: (s.time, s.id))


def _chain_to(target: Snapshot, by_id: dict[str, Snapshot]) -> list[Snapshot]:
    """
    The chain ending at *target*, full first.

    Raises:
        InvalidBackupChain: a parent is missing, or a chain rule is broken.
    """
    chain = [target]
    seen = {target.id}
    while chain[-1].backup_type != "full":
        child = chain[-1]
        if child.parent is None:
            raise InvalidBackupChain(f"incremental backup {child.short_id} names no parent")
        parent = by_id.get(child.parent)
        if parent is None:
            raise InvalidBackupChain(
                f"incremental backup chain broken: parent {child.parent[:8]} of "
                f"{child.short_id} is missing"
            )
        if parent.id in seen:
            raise InvalidBackupChain(f"backup chain of {target.short_id} has a cycle")
        if parent.chain_id != child.chain_id or parent.epoch != child.epoch:
            raise InvalidBackupChain(
                f"backup {child.short_id} and its parent {parent.short_id} belong to "
                "different chains or epochs"
            )
        if (parent.lsn or 0) > (child.lsn or 0):
            raise InvalidBackupChain(f"backup {child.short_id} has a lower LSN than its parent")
        seen.add(parent.id)
        chain.append(parent)
    chain.reverse()
    return chain


def _valid_chains(backups: list[Snapshot]) -> tuple[dict[str, list[Snapshot]], list[str]]:
    by_id = {s.id: s for s in backups}
    chains: dict[str, list[Snapshot]] = {}
    warnings: list[str] = []
    for s in backups:
        try:
            chains[s.id] = _chain_to(s, by_id)
        except InvalidBackupChain as exc:
            warnings.append(str(exc))
    return chains, warnings


def plan_restore(
    backups: list[Snapshot],
    *,
    backup_id: str | None = None,
    lsn: int | None = None,
    time: datetime | None = None,
    epoch: Epoch | None = None,
) -> RestorePlan:
    """
    Choose the chain that restores to the point asked for; at most one of the three.

    - *backup_id* (an id or a unique prefix): exactly that backup's state.
    - *lsn*: the state at *lsn*, or, when no backup reaches it, the newest state
      before it that the backups hold. Among epochs, the highest whose chain starts
      at or before *lsn* (pass *epoch* to pick another): LSNs restart after a data
      loss that was not restored.
    - *time*: every transaction that committed at or before *time*.
    - none: the newest backup (by time) whose chain is intact.

    *backups* are one partition's, from ``partition_backups``.

    Raises:
        NoBackupFound: nothing matches.
        InvalidBackupChain: the chain of the backup asked for by id is broken, or
            every chain is broken.
        ValueError: more than one of *backup_id*, *lsn* and *time*.
    """
    if sum(x is not None for x in (backup_id, lsn, time)) > 1:
        raise ValueError("give at most one of backup_id, lsn and time")
    if epoch is not None:
        backups = [s for s in backups if s.epoch == epoch]
    if not backups:
        raise NoBackupFound(
            "there is no backup of this partition"
            + (f" in epoch {epoch}" if epoch is not None else "")
        )
    if backup_id is not None:
        matches = [s for s in backups if s.id.startswith(backup_id.lower())]
        if len(matches) != 1:
            raise NoBackupFound(
                f"{len(matches) or 'no'} backups of this partition match {backup_id!r}"
            )
        by_id = {s.id: s for s in backups}
        return RestorePlan(tuple(_chain_to(matches[0], by_id)))
    chains, warnings = _valid_chains(backups)
    if not chains:
        raise InvalidBackupChain(
            "every backup chain of this partition is broken: " + "; ".join(warnings)
        )
    if lsn is not None:
        return _plan_lsn(backups, chains, lsn, tuple(warnings))
    if time is not None:
        return _plan_time(backups, chains, time, tuple(warnings))
    newest = [s for s in backups if s.id in chains][-1]
    return RestorePlan(tuple(chains[newest.id]), warnings=tuple(warnings))


def _plan_lsn(
    backups: list[Snapshot], chains: dict[str, list[Snapshot]], lsn: int, warnings: tuple[str, ...]
) -> RestorePlan:
    best: tuple[tuple[int, int, int, int], list[Snapshot]] | None = None
    for s in backups:
        chain = chains.get(s.id)
        head_lsn = chain[0].lsn if chain else None
        if chain is None or head_lsn is None or head_lsn > lsn:
            continue
        ep = s.epoch or Epoch()
        reach = min(s.lsn or 0, lsn)
        # Highest epoch, then the furthest point, then the fewest backups to fetch.
        score = (ep.data_loss_number, ep.configuration_number, reach, -len(chain))
        if best is None or score > best[0]:
            best = (score, chain)
    if best is None:
        raise NoBackupFound(f"no backup of this partition holds a state at or before LSN {lsn}")
    return RestorePlan(tuple(best[1]), stop_lsn=lsn, warnings=warnings)


def _plan_time(
    backups: list[Snapshot],
    chains: dict[str, list[Snapshot]],
    time: datetime,
    warnings: tuple[str, ...],
) -> RestorePlan:
    # A backup's time is taken after its consistent view, so every transaction in a
    # full backup not after *time* is wanted. Replay then goes through the chain's
    # members and stops at the first transaction stamped after *time*: commit stamps
    # rise with LSNs (one writer stamps them in commit order), so every wanted
    # transaction the chain holds comes before it. A chain that goes past *time*
    # therefore restores it exactly; prefer those, then the newest head or end.
    ends: dict[str, Snapshot] = {}
    for s in backups:
        chain = chains.get(s.id)
        if chain is not None and chain[0].time <= time:
            ends[chain[0].id] = s  # backups are oldest first: the newest end wins
    best: tuple[tuple[bool, datetime], Snapshot] | None = None
    for head_id, end in ends.items():
        past = end.time > time
        score = (past, chains[head_id][0].time if past else end.time)
        if best is None or score > best[0]:
            best = (score, end)
    if best is not None and best[0][0]:
        return RestorePlan(tuple(chains[best[1].id]), stop_time=time, warnings=warnings)
    # No chain goes past *time*. The first full backup after it holds exactly the
    # state at *time* if nothing committed between the two; only its content says
    # (its last transaction's time), so it is a conditional plan, tried first.
    later = [s for s in backups if s.backup_type == "full" and s.time > time and s.id in chains]
    alternative = RestorePlan((later[0],), stop_time=time, conditional=True) if later else None
    if best is None:
        if alternative is None:
            raise NoBackupFound(f"no backup of this partition holds the state at {time}")
        return replace(alternative, warnings=warnings)
    return RestorePlan(
        tuple(chains[best[1].id]), stop_time=time, warnings=warnings, alternative=alternative
    )


def build_restore(
    plan: RestorePlan,
    source: BackupSource,
    dest: Path,
    *,
    partition: str,
    staging: Path,
    epoch: Epoch,
) -> Meta:
    """
    Build the planned state in the new file *dest*; return its meta.

    The result is in WAL mode, synced to disk, with an empty change log, no backup
    base, and *epoch* as its epoch (the restored transactions keep theirs as the
    tail's). Incremental backups are fetched one at a time into *staging*.

    Raises:
        InvalidBackup: a backup's content is damaged or does not match its manifest.
        InvalidBackupChain: the content breaks a chain rule.
    """
    full = plan.chain[0]
    with dest.open("xb") as f:
        source.fetch(full, f)
        f.flush()
        os.fsync(f.fileno())
    meta = check_database(dest)
    if meta.partition != partition:
        raise InvalidBackup(
            f"backup {full.short_id} holds partition {meta.partition}, not {partition}"
        )
    if meta.lsn != full.lsn or meta.epoch != full.epoch:
        raise InvalidBackup(f"backup {full.short_id}: its content does not match its manifest")
    conn = connect(dest, wal=False)
    try:
        conn.execute("PRAGMA synchronous = OFF")  # a crash leaves a stray file anyway
        if plan.stop_lsn is None or plan.stop_lsn > meta.lsn:
            meta = _replay(conn, plan, source, meta, staging)
        meta = replace(meta.without_base(), epoch=epoch, log_floor=meta.lsn)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM log")
        write_meta(conn, meta)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return meta


def build_first(
    plan: RestorePlan,
    source: BackupSource,
    dest: Path,
    *,
    partition: str,
    staging: Path,
    epoch: Epoch,
) -> tuple[RestorePlan, Meta]:
    """
    Build the plan's alternative if it holds, else the plan; return the plan built.

    Raises:
        NoBackupFound: the plan is conditional and does not hold.
        and what ``build_restore`` raises.
    """
    for p in (plan.alternative, plan):
        if p is None:
            continue
        meta = build_restore(p, source, dest, partition=partition, staging=staging, epoch=epoch)
        if not p.conditional or _committed_by(meta, p.stop_time):
            return p, meta
        for suffix in ("", "-wal", "-shm"):
            Path(f"{dest}{suffix}").unlink(missing_ok=True)
    raise NoBackupFound(f"no backup of this partition holds the state at {plan.stop_time}")


def _committed_by(meta: Meta, time: datetime | None) -> bool:
    """Whether the state's last transaction committed at or before *time*."""
    return time is None or meta.tail_time is None or parse_time(meta.tail_time) <= time


def _replay(
    conn: sqlite3.Connection, plan: RestorePlan, source: BackupSource, meta: Meta, staging: Path
) -> Meta:
    stop_time = plan.stop_time
    parent = plan.chain[0]
    for snap in plan.chain[1:]:
        tmp = staging / f"restore-{uuid.uuid4().hex}.jsonl"
        try:
            with tmp.open("w+b") as f:
                source.fetch(snap, f)
                f.seek(0)
                lines = (line.decode("utf-8") for line in f)
                header, records = read_incremental(lines, name=f"backup {snap.short_id}")
                if (
                    header.parent != parent.id
                    or header.chain_id != snap.chain_id
                    or header.from_lsn != meta.lsn
                    or header.to_lsn != snap.lsn
                    or header.epoch != snap.epoch
                    or header.partition != meta.partition
                ):
                    raise InvalidBackupChain(
                        f"incremental backup {snap.short_id} does not follow {parent.short_id}"
                    )
                conn.execute("BEGIN")
                done = False
                for rec in records:
                    if plan.stop_lsn is not None and rec.lsn > plan.stop_lsn:
                        done = True
                        break
                    if stop_time is not None and parse_time(rec.time) > stop_time:
                        done = True
                        break
                    apply_changes(conn, Changes.from_ops(rec.ops))
                    meta = replace(
                        meta,
                        lsn=rec.lsn,
                        tail_epoch=rec.epoch,
                        tail_time=rec.time,
                        log_floor=rec.lsn,
                    )
                    done = plan.stop_lsn is not None and rec.lsn >= plan.stop_lsn
                    if done:
                        break
                write_meta(conn, meta)
                conn.execute("COMMIT")
        finally:
            tmp.unlink(missing_ok=True)
        if done:
            break
        parent = snap
    return meta


def check_safe(live: Meta, backup_epoch: Epoch, backup_lsn: int) -> None:
    """``RestorePolicy.SAFE``: refuse if the store holds state newer than the backup's."""
    if live.lsn == 0:
        return  # nothing to lose
    tail = live.tail_epoch or live.epoch
    if tail.key() > backup_epoch.key():
        raise RestoreSafetyCheckFailed(
            f"the store's last transaction is in epoch {tail}, newer than the backup's "
            f"{backup_epoch}; use RestorePolicy.FORCE to overwrite it"
        )
    if live.lsn >= backup_lsn:
        raise RestoreSafetyCheckFailed(
            f"the store is at LSN {live.lsn}, at or past the backup's {backup_lsn}; "
            "use RestorePolicy.FORCE to overwrite it"
        )
