"""
Durability at ``durability="full"``: one fsync of the WAL, shared by every commit before it.

The writer connection runs with ``synchronous=NORMAL`` at both durabilities, so a
commit writes its WAL frames into the OS cache and returns at once, on the event
loop. At FULL the transaction then waits (``WalSync.wait``) for an ``fdatasync`` of
the WAL file that *began after its commit*; only then does ``async with
store.transaction()`` return. That is what ``synchronous=FULL`` does inside
``COMMIT``, moved off the event loop:

- ``fdatasync`` writes every page of the file written before the call, whoever
  wrote it, and the metadata needed to read them back (the size). The WAL is
  appended in commit order, so a sync makes every earlier commit durable;
- at NORMAL SQLite writes the database file only in checkpoints, which sync the WAL
  before copying it back and the database after, so nothing of a commit reaches the
  database file before its WAL frames are durable;
- what SQLite writes at NORMAL without syncing (a restarted WAL's header) is what
  its recovery rejects by checksum when torn, as it does at FULL.

So the promise is unchanged, per transaction: once its block returns, the
transaction survives power loss. What changes is who waits: the next transaction
runs while the sync is under way, and every commit made while one sync runs shares
the next one (group commit, with no group to form: a sync starts as soon as one
is wanted and none is running). The price: a commit is visible in SQLite before it
is durable. Whatever must not see such a commit waits for the sync first: a
snapshot (``durable``), a backup's view (a backup must never hold an LSN that a
power cut could give to another transaction), and every write transaction's own
return. If an fsync fails, the state on disk is unknown: every waiting and later
transaction fails with ``StateError``, until the store is opened again.

Commits are counted (``written``, on the event loop); a sync covers the count as it
was when the sync began (``synced`` once it lands). The hand-off costs as little as
it can: the sync thread is started once and takes its work from a ``SimpleQueue``
(no executor future, no work item), and wakes the loop through an ``eventfd`` (a
pipe elsewhere) that the loop watches with ``add_reader``, its last act before it
waits again (no ``call_soon_threadsafe`` handle). While a sync runs, the writer
may hold back the transactions that only wrote and whose callers wait anyway
(``Writer.submit``): when the sync lands, *before_sync* commits them as one group,
in one SQLite transaction, and the next sync starts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from safehold.state.errors import StateError

__all__ = ["WalSync"]


class WalSync:
    """
    The WAL's syncs of one store at FULL; its loop-side methods run on the event loop.

    Args:
        partition: the partition id, for messages and the thread's name.
        before_sync: called on the loop when a sync lands, before the next starts.
    """

    def __init__(self, partition: str, before_sync: Callable[[], None] | None = None) -> None:
        self.partition = partition
        self._before_sync = before_sync
        self.written = 0  # SQLite commits made (the writer counts them)
        self.synced = 0  # commits known durable
        self.error: StateError | None = None
        self._fd: int | None = None
        self._fd_lock = threading.Lock()  # the fd is opened and closed on the writer thread
        self._jobs: queue.SimpleQueue[int | None] = queue.SimpleQueue()  # to the sync thread
        self._outcomes: deque[tuple[int, BaseException | None]] = deque()  # from it
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: tuple[int, int] | None = None  # (read end, write end): one eventfd, or a pipe
        self._size = 0  # the WAL file's size when ``grew`` last looked
        self._flight = 0  # the count the running sync covers (0: none runs)
        self._starting = False  # the next sync starts at the loop's next turn
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    # -- on the writer thread --------------------------------------------------------

    def open(self, wal: Path) -> None:
        """Sync *wal* from now on (the live generation's WAL; its directory entry synced)."""
        fd = os.open(wal, os.O_RDONLY)
        dfd = os.open(wal.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the WAL may have just been created
        finally:
            os.close(dfd)
        with self._fd_lock:
            old, self._fd = self._fd, fd
        if old is not None:
            os.close(old)

    def close(self) -> None:
        """Sync the WAL a last time and stop syncing it (before its connection closes)."""
        with self._fd_lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                try:
                    if self.error is None:  # else what is on disk is unknown anyway
                        os.fdatasync(fd)
                finally:
                    os.close(fd)

    def grew(self) -> bool:
        """
        Whether the WAL file grew past 4 MiB since the last call (on the loop, after commits).

        A growing WAL costs a second disk write per sync (the new size is journalled):
        the writer then checkpoints, so that the WAL starts again from its beginning
        (about every 1,000 pages, as SQLite's own automatic checkpoints).
        """
        fd = self._fd
        if fd is None:
            return False
        try:
            size = os.fstat(fd).st_size
        except OSError:  # closed meanwhile
            return False
        grew, self._size = size > self._size, size
        return grew and size >= _WAL_REUSED

    def sync_now(self) -> None:
        """Sync the WAL here (maintenance work: a truncation, a backup's acceptance)."""
        with self._fd_lock:
            if self._fd is not None:
                os.fdatasync(self._fd)

    # -- on the event loop -----------------------------------------------------------

    def committed(self) -> int:
        """Count one more SQLite commit; return its number."""
        self.written += 1
        return self.written

    async def wait(self, n: int) -> None:
        """
        Return once commit *n* (a ``committed`` number) is durable.

        A cancelled waiter cancels its own future, never the sync, which others share.

        Raises:
            StateError: an fsync failed (now or before): the store must be reopened.
        """
        if n <= self.synced:
            return
        if self.error is not None:
            raise self.error
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        if not (self._flight or self._starting):
            self._start()
        await fut

    async def all(self) -> None:
        """Return once every commit made so far is durable (``wait(written)``)."""
        await self.wait(self.written)

    @property
    def busy(self) -> bool:
        """Whether a sync is running or wanted."""
        return bool(self._flight or self._starting or self._waiters)

    def _start(self) -> None:
        if self._thread is None:
            self._spawn()
        self._flight = target = self.written
        self._jobs.put(target)

    def _spawn(self) -> None:
        """Start the sync thread, and watch its wake-ups on the running loop."""
        loop = asyncio.get_running_loop()
        if hasattr(os, "eventfd"):
            efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._wake = (efd, efd)
        else:  # pragma: no cover - not Linux
            r, w = os.pipe()
            os.set_blocking(r, False)
            self._wake = (r, w)
        loop.add_reader(self._wake[0], self._woken)
        self._loop = loop
        self._thread = threading.Thread(
            target=self._serve, name=f"state-sync-{self.partition}", daemon=True
        )
        self._thread.start()

    def _serve(self) -> None:
        """The sync thread: one ``fdatasync`` per job, its outcome queued, the loop woken."""
        wake = self._wake
        assert wake is not None
        while (target := self._jobs.get()) is not None:
            exc: BaseException | None = None
            try:
                with self._fd_lock:
                    if self._fd is not None:  # None: closed, and synced by ``close``
                        os.fdatasync(self._fd)
            except BaseException as e:  # the loop fails the waiters with it
                exc = e
            self._outcomes.append((target, exc))
            with contextlib.suppress(OSError):
                os.write(wake[1], _ONE)

    def _woken(self) -> None:
        """On the loop: the sync thread's wake-up; each outcome it queued lands."""
        assert self._wake is not None
        with contextlib.suppress(OSError):
            os.read(self._wake[0], 4096)
        while self._outcomes:
            self._landed(*self._outcomes.popleft())

    def _landed(self, target: int, exc: BaseException | None) -> None:
        """
        On the loop: a sync's outcome; its waiters go on, and the next sync is set up.

        The next sync starts at the loop's next turn, not now: the transactions this
        landing wakes run first (their commits held back meanwhile, ``busy``) and join it,
        so each waiting task commits once per sync.
        """
        self._flight = 0
        if exc is not None and self.error is None:
            self.error = StateError(
                f"the state store of partition {self.partition} could not sync its WAL "
                f"({exc!r}); what is on disk is unknown: reopen the store"
            )
        if self.error is None:
            self.synced = max(self.synced, target)
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for n, fut in self._waiters:
            if fut.done():
                continue
            if self.error is not None:
                fut.set_exception(self.error)
                fut.exception()  # retrieved: a waiter that went away is no error
            elif n <= self.synced:
                fut.set_result(None)
            else:
                keep.append((n, fut))
        self._waiters = keep
        self._starting = True
        asyncio.get_running_loop().call_soon(self._next)

    def _next(self) -> None:
        self._starting = False
        if self._before_sync is not None:
            # The group held back while the last sync ran (after a failure too: its
            # callers then get the error, rather than waiting for ever).
            self._before_sync()
        if self._waiters or self.written > self.synced:
            self._start()  # the commits made meanwhile

    def shutdown(self) -> None:
        """Stop the sync thread (after ``close``; nothing is waiting)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._jobs.put(None)
        thread.join()
        wake, self._wake = self._wake, None
        assert wake is not None
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(wake[0])
        for fd in set(wake):
            os.close(fd)


_WAL_REUSED = 4 << 20  # a WAL this large is checkpointed when it grows, to be rewritten
_ONE = (1).to_bytes(8, sys.byteorder)  # an eventfd takes 8 bytes; a pipe, any
