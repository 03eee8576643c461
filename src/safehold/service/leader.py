"""
Which controller replica runs the scheduler and the sweeps: PostgreSQL decides.

Every replica serves the API; one at a time, the *leader*, also ticks. On
PostgreSQL the leader is whoever holds a session-level advisory lock on a
dedicated connection (``pg_try_advisory_lock``). When the leader dies, its
connection closes, PostgreSQL releases the lock, and the next replica to try
takes it: within one tick interval. A leader whose connection breaks stops
leading at its next check. Two leaders at once (a half-dead connection) cost
nothing but work: every slot and every job change is a conditional update.

On SQLite the controller is the only one, and always leads.

``KeyLocks`` are named *try*-locks on the same principle, for work that one
replica at a time must do (creating a storage's repository): a replica that does
not get the lock does not wait for it, it answers "try again".
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Iterator
from typing import Protocol

import sqlalchemy as sa

__all__ = [
    "AdvisoryKeyLocks",
    "AdvisoryLeader",
    "KeyLocks",
    "Leadership",
    "LocalKeyLocks",
    "SoleLeader",
    "key_locks_for",
    "leadership_for",
]

log = logging.getLogger("safehold.leader")

#: The advisory lock's key: "safehold" in ASCII, as a signed 64-bit integer.
LOCK_KEY = int.from_bytes(b"safehold", "big", signed=True)


class Leadership(Protocol):
    """**Protocol**: whether this replica leads now."""

    def acquire(self) -> bool:
        """Lead if no one else does; return whether this replica leads."""
        ...

    def release(self) -> None:
        """Stop leading (at shutdown), so another replica takes over at once."""
        ...


class SoleLeader:
    """The single controller of an embedded (SQLite) catalog: always the leader."""

    def acquire(self) -> bool:
        """Always lead."""
        return True

    def release(self) -> None:
        """Nothing to release."""


class AdvisoryLeader:
    """Leadership through a PostgreSQL session-level advisory lock."""

    def __init__(self, engine: sa.Engine, key: int = LOCK_KEY) -> None:
        self._engine = engine
        self._key = key
        self._conn: sa.Connection | None = None

    @property
    def leading(self) -> bool:
        """Whether this replica held the lock at its last check."""
        return self._conn is not None

    def acquire(self) -> bool:
        """Check the held lock is still ours, or try to take it; never waits for it."""
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT 1"))
                return True
            except sa.exc.SQLAlchemyError:
                log.warning("lost the catalog connection that held the leader lock")
                self._drop()
        try:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except sa.exc.SQLAlchemyError as exc:
            log.warning("cannot reach the catalog to take the leader lock: %s", exc)
            return False
        try:
            got = bool(
                conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}).scalar()
            )
        except sa.exc.SQLAlchemyError:
            conn.close()
            return False
        if not got:
            conn.close()
            return False
        log.info("this controller now leads (runs the scheduler and the sweeps)")
        self._conn = conn
        return True

    def release(self) -> None:
        """Unlock and close the connection."""
        if self._conn is None:
            return
        # If this fails, the connection is going away, which releases the lock as well.
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
            finally:
                conn.close()


def leadership_for(engine: sa.Engine) -> Leadership:
    """The leadership a controller on *engine*'s catalog uses."""
    return AdvisoryLeader(engine) if engine.dialect.name == "postgresql" else SoleLeader()


class KeyLocks(Protocol):
    """
    **Protocol**: non-blocking named locks shared by every replica.

    ``try_hold(name)`` yields whether this replica got *name*; nobody ever waits
    for one, so holding it while talking to a storage blocks no one.
    """

    def try_hold(self, name: str) -> contextlib.AbstractContextManager[bool]:
        """Hold lock *name* for the block if it is free; yield whether it was."""
        ...


class LocalKeyLocks:
    """Named try-locks within one process (the embedded, single-controller catalog)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: set[str] = set()

    @contextlib.contextmanager
    def try_hold(self, name: str) -> Iterator[bool]:
        """Yield True and hold *name*, or yield False if it is held."""
        with self._guard:
            got = name not in self._held
            self._held.add(name)
        try:
            yield got
        finally:
            if got:
                with self._guard:
                    self._held.discard(name)


class AdvisoryKeyLocks:
    """Named try-locks as PostgreSQL advisory locks, seen by every replica."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._local = LocalKeyLocks()

    @contextlib.contextmanager
    def try_hold(self, name: str) -> Iterator[bool]:
        """Yield True while holding the advisory lock for *name*, or False if another holds it."""
        key = int.from_bytes(
            hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
        )
        with self._local.try_hold(name) as mine:
            if not mine:
                yield False
                return
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                got = bool(
                    conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
                )
                try:
                    yield got
                finally:
                    if got:
                        with contextlib.suppress(sa.exc.SQLAlchemyError):
                            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            finally:
                conn.close()


def key_locks_for(engine: sa.Engine) -> KeyLocks:
    """The named try-locks replicas on *engine*'s catalog share."""
    return AdvisoryKeyLocks(engine) if engine.dialect.name == "postgresql" else LocalKeyLocks()
