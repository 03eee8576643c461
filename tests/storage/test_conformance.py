"""The storage contract, run against every backend in ``conftest.BACKENDS``."""

from __future__ import annotations

import concurrent.futures
import os

import pytest

from safehold.core.errors import UsageError
from safehold.storage import ObjectInfo, ObjectNotFound, ReadRangeError, Storage


def test_put_then_get_returns_the_same_bytes(storage: Storage) -> None:
    """An object reads back exactly as it was written."""
    data = os.urandom(100_000)
    storage.put("data/ab/abcdef", data)
    assert data == storage.get("data/ab/abcdef")


def test_get_range(storage: Storage) -> None:
    """A ranged read returns exactly the bytes asked for."""
    storage.put("obj", b"0123456789")
    assert storage.get("obj", offset=3, length=3) == b"345"
    assert storage.get("obj", offset=7) == b"789"
    assert storage.get("obj", offset=10, length=0) == b""


def test_short_read_is_an_error(storage: Storage) -> None:
    """Asking for more than the object holds raises ReadRangeError, not a short result."""
    storage.put("obj", b"0123456789")
    with pytest.raises(ReadRangeError):
        storage.get("obj", offset=8, length=5)


def test_missing_object(storage: Storage) -> None:
    """get and stat of a missing object raise ObjectNotFound."""
    with pytest.raises(ObjectNotFound):
        storage.get("nope")
    with pytest.raises(ObjectNotFound):
        storage.stat("nope")


def test_stat_reports_size(storage: Storage) -> None:
    """stat gives the object's size in bytes."""
    storage.put("keys/k1", b"x" * 1234)
    assert ObjectInfo("keys/k1", 1234) == storage.stat("keys/k1")


def test_put_replaces_whole_object(storage: Storage) -> None:
    """Writing a name again replaces the object entirely."""
    storage.put("config", b"long old content")
    storage.put("config", b"new")
    assert storage.get("config") == b"new"


def test_empty_object(storage: Storage) -> None:
    """Empty objects are stored and listed like any other."""
    storage.put("locks/empty", b"")
    assert storage.get("locks/empty") == b""
    assert [ObjectInfo("locks/empty", 0)] == list(storage.list("locks/"))


def test_delete_is_idempotent(storage: Storage) -> None:
    """Deleting removes the object; deleting it again is not an error."""
    storage.put("snapshots/s1", b"x")
    storage.delete("snapshots/s1")
    storage.delete("snapshots/s1")
    with pytest.raises(ObjectNotFound):
        storage.get("snapshots/s1")


def test_list_is_sorted_and_filtered_by_prefix(storage: Storage) -> None:
    """list yields only names under the prefix, in sorted order, with sizes."""
    names = ["data/ab/ab01", "data/ab-c", "data/00/0001", "index/i1", "data/ab/ab00", "config"]
    for i, name in enumerate(names):
        storage.put(name, b"x" * i)
    listed = list(storage.list("data/"))
    assert sorted(n for n in names if n.startswith("data/")) == [o.name for o in listed]
    assert {o.name: o.size for o in listed}["data/ab-c"] == 1
    assert sorted(names) == [o.name for o in storage.list()]
    assert list(storage.list("nothing/")) == []


def test_invalid_names_are_refused(storage: Storage) -> None:
    """Names that could escape the store or clash on case-insensitive stores are refused."""
    for bad in ["", "/abs", "a/../b", "..", "A", "a//b", "a/", "sp ace"]:
        with pytest.raises(UsageError):
            storage.put(bad, b"x")


def test_concurrent_puts(storage: Storage) -> None:
    """Many threads can write different objects at once; all arrive whole."""
    blobs = {f"data/{i:02x}/{i:064x}": os.urandom(10_000 + i) for i in range(64)}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: storage.put(*kv), blobs.items()))
    for name, data in blobs.items():
        assert data == storage.get(name)
    assert sorted(blobs) == [o.name for o in storage.list("data/")]


def test_create_is_idempotent(storage: Storage) -> None:
    """Creating an existing storage again changes nothing."""
    storage.put("config", b"x")
    storage.create()
    assert storage.get("config") == b"x"


def test_put_takes_a_view_when_it_says_so(storage: Storage) -> None:
    """A storage whose properties say accepts_views stores a memoryview's bytes."""
    if not storage.properties.accepts_views:
        pytest.skip("this storage takes bytes only")
    buffer = bytearray(os.urandom(50_000))
    storage.put("data/00/view", memoryview(buffer)[1000:40_000])
    expected = bytes(buffer[1000:40_000])
    buffer[:] = bytes(len(buffer))  # the storage must not hold on to the buffer
    assert expected == storage.get("data/00/view")
