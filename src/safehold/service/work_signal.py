"""
Wake-ups for long-polled claims: "there may be work now".

An agent's claim may wait for work (``ClaimRequest.WaitSeconds``) instead of
polling, so a new job starts within milliseconds and an idle fleet costs the
controller almost nothing. The claimer takes a *ticket* before it looks for a
job, so a job created between its empty claim and its wait still wakes it;
``notify(n)`` wakes the *n* oldest tickets. A woken claimer that finds nothing
takes a new ticket and waits again; one whose wake-up came while it was
claiming, and that got a job anyway, passes the wake-up on.

Where the wake-ups come from: the catalog's unit of work notifies after its
commit when it created jobs or ended one (SQLite: in this process). On
PostgreSQL the same transaction sends ``NOTIFY safehold_work`` instead, and each
replica's ``PgWorkListener`` turns the notifications into local wake-ups, so an
agent waiting on one replica hears of work accepted by another.

Nothing depends on a wake-up arriving: a waiting claim looks again every
``RECHECK`` seconds, and a listener that reconnects wakes every waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque

import sqlalchemy as sa

__all__ = [
    "CHANNEL",
    "MAX_WAIT",
    "RECHECK",
    "PgWorkListener",
    "Ticket",
    "WorkSignal",
    "listener_for",
]

log = logging.getLogger("safehold.work")

#: The PostgreSQL notification channel; the payload is the number of new jobs.
CHANNEL = "safehold_work"
#: The longest a claim waits, whatever the agent asks (under its HTTP timeout).
MAX_WAIT = 25.0
#: A waiting claim looks for work at least this often, wake-up or not.
RECHECK = 5.0


class Ticket:
    """One claimer's place in the queue; woken at most once."""

    __slots__ = ("_event", "_future", "_loop", "_signal", "woken")

    def __init__(self, signal: WorkSignal, loop: asyncio.AbstractEventLoop | None) -> None:
        self._signal = signal
        self._loop = loop
        self._future: asyncio.Future[None] | None = loop.create_future() if loop else None
        self._event = threading.Event()
        self.woken = False

    def _wake(self) -> None:
        # Called with the signal's lock held, from any thread.
        self.woken = True
        self._event.set()
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing: nobody waits
                self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    async def wait(self, timeout: float) -> bool:
        """Wait (in the ticket's event loop) until woken or *timeout*; return whether woken."""
        assert self._future is not None, "an async wait needs a ticket taken with its loop"
        await asyncio.wait({self._future}, timeout=timeout)
        return self.woken

    def wait_blocking(self, timeout: float) -> bool:
        """Wait in this thread until woken or *timeout*; return whether woken."""
        return self._event.wait(timeout)

    def release(self, got_work: bool) -> None:
        """Leave the queue; a wake-up this claimer did not need goes to the next one."""
        self._signal._release(self, got_work)


class WorkSignal:
    """
    The queue of claimers waiting for work in this process.

    *capped*: the fleet runs at most so many jobs at once, so any job that ends
    may let a waiting claim through. Without a cap, an ended job makes new work
    claimable only when its partition has another job queued (one job runs per
    partition), and only then is a wake-up sent (``sql_jobs.JobRepo.update_if``).
    """

    def __init__(self, *, capped: bool = True) -> None:
        self.capped = capped
        self._lock = threading.Lock()
        self._queue: deque[Ticket] = deque()
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether the process is shutting down (waits return at once)."""
        return self._closed

    @property
    def waiting(self) -> int:
        """How many claimers wait now."""
        return len(self._queue)

    def ticket(self, loop: asyncio.AbstractEventLoop | None = None) -> Ticket:
        """Join the queue; give *loop* to wait with ``await``, none to wait in a thread."""
        t = Ticket(self, loop)
        with self._lock:
            if self._closed:
                t._wake()
            else:
                self._queue.append(t)
        return t

    def notify(self, n: int = 1) -> None:
        """Wake the *n* claimers that have waited longest."""
        with self._lock:
            for _ in range(min(n, len(self._queue))):
                self._queue.popleft()._wake()

    def notify_all(self) -> None:
        """Wake every claimer (work may have been missed)."""
        self.notify(len(self._queue))

    def close(self) -> None:
        """Wake everyone and make later waits return at once (shutdown)."""
        with self._lock:
            self._closed = True
            while self._queue:
                self._queue.popleft()._wake()

    def open(self) -> None:
        """Accept waits again (a controller started after a stop)."""
        with self._lock:
            self._closed = False

    def _release(self, t: Ticket, got_work: bool) -> None:
        with self._lock:
            if not t.woken:
                with contextlib.suppress(ValueError):
                    self._queue.remove(t)
            elif got_work and self._queue and not self._closed:
                self._queue.popleft()._wake()


class PgWorkListener:
    """
    Turns ``NOTIFY safehold_work`` from any replica into wake-ups in this one.

    Runs a thread with a connection of its own (taken out of the pool), which
    ``LISTEN``s; after every (re)connection it wakes all waiters, since
    notifications sent while it was away are lost.
    """

    def __init__(self, engine: sa.Engine, signal: WorkSignal) -> None:
        self._engine = engine
        self._signal = signal
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Set while the listener's ``LISTEN`` is in place.
        self.listening = threading.Event()

    def start(self) -> None:
        """Start listening in a background thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="work-listener", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening (within about a second)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as exc:  # the catalog went away: listen again shortly
                log.warning("work notifications interrupted: %s", exc)
                self._stop.wait(1.0)

    def _listen(self) -> None:
        raw = self._engine.raw_connection()
        conn = raw.driver_connection
        raw.detach()  # ours for good: the pool opens another in its place
        try:
            conn.autocommit = True  # type: ignore[union-attr]
            conn.execute(f"LISTEN {CHANNEL}")  # type: ignore[union-attr]
            self.listening.set()
            self._signal.notify_all()
            while not self._stop.is_set():
                for note in conn.notifies(timeout=1.0):  # type: ignore[union-attr]
                    try:
                        n = max(1, int(note.payload or 1))
                    except ValueError:
                        n = 1
                    self._signal.notify(n)
        finally:
            self.listening.clear()
            raw.close()


def listener_for(engine: sa.Engine, signal: WorkSignal) -> PgWorkListener | None:
    """The listener a controller on *engine*'s catalog needs (none on SQLite)."""
    return PgWorkListener(engine, signal) if engine.dialect.name == "postgresql" else None
