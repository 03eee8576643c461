"""
``--limit-upload`` / ``--limit-download``: the limiter wrapper around a real
file storage, with an injected clock (no timing asserted), and the options
end to end.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from safehold.cli.common import parse_rate
from safehold.core.errors import UsageError
from safehold.storage.file import FileStorage
from safehold.storage.limiter import LimitedStorage, TokenBucket
from tests.cli.conftest import Run


class FakeTime:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.slept.append(seconds)
            self.now += seconds


def test_bucket_keeps_the_average_rate() -> None:
    t = FakeTime()
    bucket = TokenBucket(1000, sleep=t.sleep, clock=t.clock)
    bucket.take(1000)  # the first second's burst is free
    assert [] == t.slept
    for _ in range(10):
        bucket.take(500)
    assert pytest.approx(5.0) == t.now  # 5,000 bytes more at 1,000 bytes/s


def test_bucket_shares_the_limit_between_threads() -> None:
    """Eight threads at once do not get eight times the rate: each queues behind the others."""
    bucket = TokenBucket(100, sleep=lambda _: None, clock=lambda: 0.0)  # time stands still
    bucket.take(100)
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        w = bucket.take(100)
        with lock:
            waits.append(w)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0] == sorted(waits)


def test_limited_storage_counts_bodies(tmp_path: Path) -> None:
    t = FakeTime()
    storage = LimitedStorage(
        FileStorage(tmp_path / "s"),
        upload=TokenBucket(10_000, sleep=t.sleep, clock=t.clock),
        download=TokenBucket(20_000, sleep=t.sleep, clock=t.clock),
    )
    storage.create()
    storage.put("data/obj", b"x" * 30_000)  # 10,000 of burst, then 2 s
    assert pytest.approx(2.0) == t.now
    assert b"x" * 30_000 == storage.get("data/obj")  # 20,000 of burst, 0.5 s
    assert pytest.approx(2.5) == t.now
    assert b"xx" == storage.get("data/obj", 0, 2)
    assert ["data/obj"] == [i.name for i in storage.list("data/")]
    assert 30_000 == storage.stat("data/obj").size
    storage.delete("data/obj")
    storage.close()


def test_parse_rate() -> None:
    assert 500 * 1024 == parse_rate("500")  # KiB/s, as restic reads it
    assert 2 * 1024 * 1024 == parse_rate("2M")
    assert 1536 * 1024 == parse_rate("1.5MiB/s")
    assert 100 == parse_rate("100B")
    for bad in ("", "fast", "-1", "0", "1X"):
        with pytest.raises(UsageError):
            parse_rate(bad)


def test_limits_end_to_end(run: Run, tmp_path: Path) -> None:
    """A backup and restore under limits give back the same bytes."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "ünï\nfile").write_bytes(bytes(range(256)) * 512)
    run("init", check=True)
    run("--limit-upload", "64M", "backup", str(data), check=True)
    target = tmp_path / "r"
    env = {"SAFEHOLD_LIMIT_DOWNLOAD": "64M"}
    run("restore", "latest", "-t", str(target), env=env, check=True)
    assert (data / "ünï\nfile").read_bytes() == (target / "data" / "ünï\nfile").read_bytes()
    proc = run("--limit-download", "fast", "snapshots")
    assert 2 == proc.returncode
    assert "'fast' is not a rate" in proc.stderr
