"""The retry wrapper, against a flaky in-memory storage and a fake clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from safehold.core.errors import UsageError
from safehold.storage import (
    ObjectInfo,
    ObjectNotFound,
    ReadRangeError,
    Storage,
    StorageError,
    StorageFull,
    StorageNotFound,
    StoragePermissionDenied,
    StorageProperties,
    StorageUnavailable,
)
from safehold.storage.memory import MemoryStorage
from safehold.storage.retry import RetryingStorage


class FlakyStorage:
    """
    A memory storage that raises queued errors, one per call, before working.

    ``list_fails_after`` makes the next listing raise ``StorageUnavailable``
    after yielding that many objects.
    """

    def __init__(self) -> None:
        self.inner = MemoryStorage()
        self.errors: list[BaseException] = []
        self.calls: Counter[str] = Counter()
        self.list_fails_after: int | None = None

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        if self.errors:
            raise self.errors.pop(0)

    @property
    def properties(self) -> StorageProperties:
        return StorageProperties(location="flaky:", connections=3)

    def create(self) -> None:
        self._enter("create")
        self.inner.create()

    def stat(self, name: str) -> ObjectInfo:
        self._enter("stat")
        return self.inner.stat(name)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._enter("list")
        fail_after, self.list_fails_after = self.list_fails_after, None
        for n, info in enumerate(self.inner.list(prefix)):
            if n == fail_after:
                raise StorageUnavailable("connection reset while listing")
            yield info

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self._enter("get")
        return self.inner.get(name, offset, length)

    def put(self, name: str, data: bytes) -> None:
        self._enter("put")
        self.inner.put(name, data)

    def delete(self, name: str) -> None:
        self._enter("delete")
        self.inner.delete(name)

    def close(self) -> None:
        self.calls["close"] += 1


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def flaky() -> FlakyStorage:
    return FlakyStorage()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def wrap(
    flaky: FlakyStorage, fake_time: FakeTime, *, rand: float = 1.0, **kwargs: Any
) -> RetryingStorage:
    """Wrap *flaky* with the fake clock; ``rand`` fixes the jitter (1.0: the full delay)."""
    return RetryingStorage(
        flaky,
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        rand=lambda: rand,
        **kwargs,
    )


def transient(n: int) -> list[BaseException]:
    return [StorageUnavailable(f"503 number {i}") for i in range(n)]


def test_is_a_storage(flaky: FlakyStorage, fake_time: FakeTime) -> None:
    """The wrapper implements the Protocol and describes the storage it wraps."""
    store = wrap(flaky, fake_time)
    assert isinstance(store, Storage)
    assert flaky.properties == store.properties
    assert flaky is store.inner
    store.close()
    assert flaky.calls["close"] == 1


def test_transient_errors_are_retried_until_success(
    flaky: FlakyStorage, fake_time: FakeTime
) -> None:
    """Three transient failures, then success: the caller sees only the result."""
    flaky.inner.put("config", b"hello")
    flaky.errors = transient(3)
    store = wrap(flaky, fake_time, first_delay=0.5)
    expected = b"hello"
    assert expected == store.get("config")
    assert flaky.calls["get"] == 4
    assert fake_time.sleeps == [0.5, 1.0, 2.0]


def test_delays_double_up_to_the_maximum(flaky: FlakyStorage, fake_time: FakeTime) -> None:
    """Each wait doubles the previous one until max_delay caps it."""
    flaky.errors = transient(6)
    store = wrap(flaky, fake_time, first_delay=1.0, max_delay=8.0)
    store.put("a", b"x")
    assert fake_time.sleeps == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_jitter_keeps_each_wait_between_half_and_all(
    flaky: FlakyStorage, fake_time: FakeTime
) -> None:
    """With the lowest jitter, each wait is half the nominal delay."""
    flaky.errors = transient(3)
    store = wrap(flaky, fake_time, rand=0.0, first_delay=1.0)
    store.put("a", b"x")
    assert fake_time.sleeps == [0.5, 1.0, 2.0]


def test_real_jitter_stays_in_bounds(flaky: FlakyStorage, fake_time: FakeTime) -> None:
    """With the default random source, waits stay within [delay/2, delay]."""
    flaky.errors = transient(5)
    store = RetryingStorage(flaky, sleep=fake_time.sleep, clock=fake_time.clock, first_delay=1.0)
    store.delete("a")
    for n, slept in enumerate(fake_time.sleeps):
        nominal = 2.0**n
        assert nominal / 2 <= slept <= nominal


@pytest.mark.parametrize(
    "error",
    [
        StorageNotFound("container missing"),
        StoragePermissionDenied("HTTP 403 AuthenticationFailed"),
        ObjectNotFound("no such object"),
        StorageFull("no space left"),
        ReadRangeError("short read"),
        StorageError("something permanent"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent_errors_fail_at_once(
    flaky: FlakyStorage, fake_time: FakeTime, error: StorageError
) -> None:
    """A permanent error is raised as it is, after one attempt and no wait."""
    flaky.errors = [error]
    store = wrap(flaky, fake_time)
    with pytest.raises(type(error)) as caught:
        store.stat("config")
    assert error is caught.value
    assert flaky.calls["stat"] == 1
    assert fake_time.sleeps == []


def test_permanent_error_after_transient_ones(flaky: FlakyStorage, fake_time: FakeTime) -> None:
    """Retrying stops at the first permanent error."""
    flaky.errors = [*transient(2), StoragePermissionDenied("key revoked")]
    store = wrap(flaky, fake_time)
    with pytest.raises(StoragePermissionDenied):
        store.put("a", b"x")
    assert flaky.calls["put"] == 3
    assert len(fake_time.sleeps) == 2


@pytest.mark.parametrize("error", [UsageError("bad name"), ValueError("a bug")])
def test_other_exceptions_are_not_retried(
    flaky: FlakyStorage, fake_time: FakeTime, error: Exception
) -> None:
    """Only storage errors are retried; anything else passes through at once."""
    flaky.errors = [error]
    store = wrap(flaky, fake_time)
    with pytest.raises(type(error)):
        store.create()
    assert flaky.calls["create"] == 1


def test_gives_up_when_the_budget_is_spent(flaky: FlakyStorage, fake_time: FakeTime) -> None:
    """A storage that keeps failing ends in StorageUnavailable once the budget is spent."""
    flaky.errors = transient(1000)
    store = wrap(flaky, fake_time, budget=60.0, first_delay=1.0, max_delay=16.0)
    with pytest.raises(StorageUnavailable) as caught:
        store.get("config")
    # Waits 1+2+4+8+16+16 = 47s; the next 16s wait would end past 60s.
    assert fake_time.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0]
    assert flaky.calls["get"] == 7
    assert "gave up after 7 attempts in 47.0s" in str(caught.value)
    assert "503 number 6" in str(caught.value)
    assert isinstance(caught.value.__cause__, StorageUnavailable)
    assert not caught.value.permanent


def test_zero_budget_means_one_attempt(flaky: FlakyStorage, fake_time: FakeTime) -> None:
    """With no budget, a transient error is reported after the first attempt."""
    flaky.errors = transient(1)
    store = wrap(flaky, fake_time, budget=0.0)
    with pytest.raises(StorageUnavailable, match="gave up after 1 attempt in"):
        store.put("a", b"x")
    assert fake_time.sleeps == []


def test_on_retry_is_told_each_wait(flaky: FlakyStorage, fake_time: FakeTime) -> None:
    """The hook receives the operation, the attempt number, the delay and the error."""
    seen: list[tuple[str, int, float, str]] = []
    flaky.errors = transient(2)
    store = wrap(
        flaky,
        fake_time,
        first_delay=0.5,
        on_retry=lambda what, n, delay, exc: seen.append((what, n, delay, exc.message)),
    )
    store.put("locks/l1", b"x")
    assert seen == [("locks/l1", 1, 0.5, "503 number 0"), ("locks/l1", 2, 1.0, "503 number 1")]


def test_every_operation_is_retried(flaky: FlakyStorage, fake_time: FakeTime) -> None:
    """create, stat, get, put, delete and list all survive one transient failure."""
    store = wrap(flaky, fake_time)
    flaky.errors = transient(1)
    store.create()
    flaky.errors = transient(1)
    store.put("a", b"xyz")
    flaky.errors = transient(1)
    assert ObjectInfo("a", 3) == store.stat("a")
    flaky.errors = transient(1)
    assert store.get("a", 1, 1) == b"y"
    flaky.errors = transient(1)
    assert [ObjectInfo("a", 3)] == list(store.list())
    flaky.errors = transient(1)
    store.delete("a")
    expected = {"create": 2, "put": 2, "stat": 2, "get": 2, "list": 2, "delete": 2}
    assert expected == dict(flaky.calls)


def test_list_resumes_after_the_last_name(flaky: FlakyStorage, fake_time: FakeTime) -> None:
    """A listing cut off part way is started again, and no name is yielded twice."""
    names = [f"data/{i:02x}" for i in range(10)]
    for name in names:
        flaky.inner.put(name, b"x")
    flaky.list_fails_after = 4
    store = wrap(flaky, fake_time)
    assert names == [o.name for o in store.list("data/")]
    assert flaky.calls["list"] == 2
    assert len(fake_time.sleeps) == 1


def test_list_gives_up_like_the_others(flaky: FlakyStorage, fake_time: FakeTime) -> None:
    """A listing that cannot start raises StorageUnavailable once the budget is spent."""
    flaky.errors = transient(100)
    store = wrap(flaky, fake_time, budget=5.0, first_delay=1.0)
    with pytest.raises(StorageUnavailable, match="gave up"):
        list(store.list())
    assert sum(fake_time.sleeps) <= 5.0


def test_bad_settings_are_refused(flaky: FlakyStorage) -> None:
    """Negative budgets and inverted delays are programming errors."""
    with pytest.raises(ValueError, match="budget"):
        RetryingStorage(flaky, budget=-1)
    with pytest.raises(ValueError, match="delay"):
        RetryingStorage(flaky, first_delay=2, max_delay=1)


def test_the_budget_counts_across_operations(flaky: FlakyStorage, fake_time: FakeTime) -> None:
    """
    Once the storage has been unreachable for the budget, the next operation fails at once.

    A backup retries its packs one after another; each must not get a fresh budget.
    """
    flaky.errors = transient(1000)
    store = wrap(flaky, fake_time, budget=60.0, first_delay=1.0, max_delay=16.0)
    with pytest.raises(StorageUnavailable):
        store.put("data/aa/pack1", b"x")
    sleeps_before = len(fake_time.sleeps)
    with pytest.raises(StorageUnavailable) as caught:
        store.put("data/bb/pack2", b"y")
    assert len(fake_time.sleeps) == sleeps_before  # no wait: the outage has spent the budget
    assert flaky.calls["put"] == 8  # seven for the first, one (the storage may be back) for this
    assert "unreachable for 47.0s" in str(caught.value)


def test_a_success_ends_the_outage(flaky: FlakyStorage, fake_time: FakeTime) -> None:
    """A storage that comes back gets a whole budget again for its next outage."""
    flaky.errors = transient(5)  # 1+2+4+8+16 = 31s of a 40s budget, then success
    store = wrap(flaky, fake_time, budget=40.0, first_delay=1.0, max_delay=16.0)
    store.put("a", b"x")
    flaky.errors = transient(5)
    store.put("b", b"y")  # would give up if the first outage still counted
    assert flaky.inner.get("b") == b"y"


def test_a_later_operation_shares_the_outage(flaky: FlakyStorage, fake_time: FakeTime) -> None:
    """An operation that starts during an outage only has what is left of the budget."""
    store = wrap(flaky, fake_time, budget=60.0, first_delay=1.0, max_delay=16.0)
    flaky.errors = transient(4)
    # First operation: fails 4 times (1+2+4+8 = 15s of waiting), then gives up on a
    # permanent error, leaving the storage "down since" its first failure.
    flaky.errors.append(StoragePermissionDenied("denied"))
    with pytest.raises(StoragePermissionDenied):
        store.get("x")
    flaky.errors = transient(1000)
    with pytest.raises(StorageUnavailable, match="unreachable for"):
        store.get("y")
    # 15s spent already: 1+2+4+8+16 = 31 more makes 46; the next 16 would pass 60.
    assert fake_time.sleeps == [1.0, 2.0, 4.0, 8.0, 1.0, 2.0, 4.0, 8.0, 16.0]


def test_a_retry_line_names_the_object_once(
    flaky: FlakyStorage, fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    """A backend message that names the object already is not prefixed with it again."""
    flaky.errors = [StorageUnavailable("data/6f/6f01: cannot reach the endpoint")]
    store = wrap(flaky, fake_time)
    with caplog.at_level("WARNING", logger="safehold.storage.retry"):
        store.put("data/6f/6f01", b"x")
    assert len(caplog.messages) == 1
    assert caplog.messages[0].count("data/6f/6f01") == 1
