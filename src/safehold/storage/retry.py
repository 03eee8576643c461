"""
A storage that retries transient failures of another storage.

Backends never retry on their own (their SDKs' retries are off); this wrapper
is the one place that does, so one budget bounds how long an operation may
keep failing. A transient error (``StorageError`` with ``permanent = False``,
that is ``StorageUnavailable``) is retried after an exponentially growing,
jittered delay; any other error is raised at once. When the next wait would
end past the budget, the last error is raised as ``StorageUnavailable`` with
the number of attempts and the time spent.

Every operation of the Protocol is safe to repeat: ``put`` replaces whole,
``delete`` is idempotent, ``create`` too. A ``list`` that fails part way
resumes after the last name it yielded, so no name is yielded twice.

The budget bounds the waiting, not a single attempt: each attempt is bounded
by the backend's request timeouts, so an operation gives up at the latest
after *budget* plus one timeout.

The budget is also counted across operations: the wrapper remembers since when
the storage has failed without a single success in between (an outage). An
operation never waits past the budget counted from the outage's start, so a
backup whose packs are retried one after another, or eight at a time, fails
once the storage has been unreachable for the budget, not after a fresh budget
for each pack. Once an outage has used the budget up, an operation makes one
attempt (the storage may be back) and fails at once if that fails too.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from safehold.storage.base import ObjectInfo, Storage, StorageProperties
from safehold.storage.errors import StorageError, StorageUnavailable

__all__ = ["DEFAULT_BUDGET", "RetryingStorage"]

DEFAULT_BUDGET = 300.0
"""Seconds an operation may keep failing transiently before it gives up."""

_log = logging.getLogger(__name__)

T = TypeVar("T")

RetryHook = Callable[[str, int, float, StorageError], None]
"""Called before each wait with (operation, attempt number, delay, error)."""


class RetryingStorage:
    """
    Wrap *inner* so that its transient failures are retried within *budget* seconds.

    Args:
        inner: the storage to wrap.
        budget: seconds, from an operation's start, after which no new attempt
            is started.
        first_delay: the wait after the first failure; each further failure
            doubles it, up to *max_delay*. Each wait is jittered to between
            half and all of that, so that many clients do not retry in step.
        max_delay: the longest single wait.
        on_retry: called before each wait (for progress output and tests).
        sleep, clock, rand: injectable for tests; ``time.sleep``,
            ``time.monotonic`` and ``random.random`` by default.
    """

    def __init__(
        self,
        inner: Storage,
        *,
        budget: float = DEFAULT_BUDGET,
        first_delay: float = 0.5,
        max_delay: float = 30.0,
        on_retry: RetryHook | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if budget < 0 or first_delay <= 0 or max_delay < first_delay:
            raise ValueError("need budget >= 0 and 0 < first_delay <= max_delay")
        self._inner = inner
        self._budget = budget
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._on_retry = on_retry
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self._lock = threading.Lock()
        self._down_since: float | None = None  # start of the current outage, if any
        self._spent = False  # an operation gave up in this outage: the budget is used up

    @property
    def inner(self) -> Storage:
        """The wrapped storage."""
        return self._inner

    @property
    def properties(self) -> StorageProperties:
        """Describe the wrapped storage."""
        return self._inner.properties

    def _delay(self, failures: int) -> float:
        """Return the wait after the *failures*-th failure in a row."""
        ceiling = min(self._max_delay, self._first_delay * 2.0 ** min(failures - 1, 30))
        return ceiling / 2 + self._rand() * ceiling / 2

    def _backoff(self, what: str, failures: int, started: float, exc: StorageError) -> None:
        """
        Wait after the *failures*-th failure in a row, or raise if that is not worth it.

        Raises:
            StorageError: *exc* itself when it is permanent, else a
                ``StorageUnavailable`` saying the budget is spent.
        """
        if exc.permanent:
            raise exc
        delay = self._delay(failures)
        now = self._clock()
        with self._lock:
            if self._down_since is None:
                self._down_since = now
            down = now - self._down_since
            spent = now - started
            give_up = self._spent or max(spent, down) + delay > self._budget
            self._spent = self._spent or give_up
        if give_up:
            attempts = f"{failures} attempt{'s' if failures > 1 else ''}"
            if down > spent:  # an earlier operation already spent (most of) the budget
                raise StorageUnavailable(
                    f"{exc.message}; gave up: the storage has been unreachable for {down:.1f}s "
                    f"(retry budget {self._budget:.0f}s; {attempts} for this request)"
                ) from exc
            raise StorageUnavailable(
                f"{exc.message}; gave up after {attempts} in {spent:.1f}s"
            ) from exc
        # Backends' messages usually name the object already; do not name it twice.
        msg = exc.message if what in exc.message else f"{what}: {exc.message}"
        _log.warning("%s; retrying in %.1fs (attempt %d)", msg, delay, failures)
        if self._on_retry is not None:
            self._on_retry(what, failures, delay, exc)
        self._sleep(delay)

    def _up(self) -> None:
        """Note a success: any outage is over."""
        if self._down_since is not None:
            with self._lock:
                self._down_since = None
                self._spent = False

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        started = self._clock()
        failures = 0
        while True:
            try:
                result = fn()
            except StorageError as exc:
                failures += 1
                self._backoff(what, failures, started, exc)
            else:
                self._up()
                return result

    def create(self) -> None:
        """Create the container or directory, retrying transient failures."""
        self._call("create", self._inner.create)

    def stat(self, name: str) -> ObjectInfo:
        """Return the object's size, retrying transient failures."""
        return self._call(name, lambda: self._inner.stat(name))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield objects sorted by name; a failed listing resumes after the last name yielded."""
        last: str | None = None
        started = self._clock()
        failures = 0
        while True:
            try:
                for info in self._inner.list(prefix):
                    if last is not None and info.name <= last:
                        continue
                    self._up()
                    yield info
                    last = info.name
                    # Progress: the budget is for one stretch of failures.
                    started = self._clock()
                    failures = 0
                self._up()
                return
            except StorageError as exc:
                failures += 1
                self._backoff(f"list {prefix or '/'}", failures, started, exc)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Read a range of the object, retrying transient failures."""
        return self._call(name, lambda: self._inner.get(name, offset, length))

    def put(self, name: str, data: bytes) -> None:
        """Store the object, retrying transient failures (a put replaces whole)."""
        self._call(name, lambda: self._inner.put(name, data))

    def delete(self, name: str) -> None:
        """Remove the object, retrying transient failures (delete is idempotent)."""
        self._call(name, lambda: self._inner.delete(name))

    def close(self) -> None:
        """Close the wrapped storage; nothing to retry."""
        self._inner.close()
