"""
Object holds seen from a repository (``docs/format.md`` § Immutable repositories).

A repository on a storage with a lock policy (S3 Object Lock, Azure blob
immutability, an append-only file or SMB repository) holds what it writes.
``forget`` and ``prune`` ask here what is held, so that they never try to
delete it and can say until when; ``prune`` also moves the holds of
everything the held snapshots need to the newest snapshot's hold, so that no
pack can be deleted while a held snapshot still needs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from safehold.repo.repository import Repository
from safehold.storage import Hold, ImmutableStorage, LockPolicy, ObjectNotFound, immutable

__all__ = ["extend_holds", "holds_of", "lock_of", "snapshot_holds"]


def lock_of(repo: Repository) -> tuple[ImmutableStorage, LockPolicy] | None:
    """Return the storage's lock capability and policy, or ``None`` when nothing is held."""
    cap = immutable(repo.storage)
    if cap is None:
        return None
    policy = cap.lock_policy()
    return None if policy is None else (cap, policy)


def _workers(repo: Repository) -> int:
    return max(2, repo.storage.properties.connections)


def holds_of(repo: Repository, names: Iterable[str]) -> dict[str, Hold]:
    """
    Return the holds in force on *names*, by name; missing objects are not held.

    One request per name (in parallel) on a locked storage; none otherwise.
    """
    lock = lock_of(repo)
    wanted = list(names)
    if lock is None or not wanted:
        return {}
    cap, _ = lock

    def one(name: str) -> Hold | None:
        try:
            return cap.hold(name)
        except ObjectNotFound:
            return None

    with ThreadPoolExecutor(_workers(repo)) as pool:
        found = list(pool.map(one, wanted))
    return {h.name: h for h in found if h is not None}


def snapshot_holds(repo: Repository, snapshot_ids: Iterable[str]) -> dict[str, Hold]:
    """Return the holds on the given snapshots, by snapshot id."""
    holds = holds_of(repo, (f"snapshots/{sid}" for sid in snapshot_ids))
    return {name.removeprefix("snapshots/"): h for name, h in holds.items()}


def extend_holds(repo: Repository, names: Iterable[str], until: datetime) -> int:
    """
    Hold each of *names* at least until *until*; return how many were asked.

    Objects that are gone are skipped. Holds that end later are left alone
    (a hold is never shortened).
    """
    lock = lock_of(repo)
    wanted = list(names)
    if lock is None or lock[1].mode == "append-only" or not wanted:
        return 0  # append-only holds never end: nothing to extend
    cap, _ = lock

    def one(name: str) -> None:
        with contextlib.suppress(ObjectNotFound):
            cap.extend_hold(name, until)

    with ThreadPoolExecutor(_workers(repo)) as pool:
        list(pool.map(one, wanted))
    return len(wanted)
