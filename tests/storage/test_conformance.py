"""The storage contract, run against every backend in ``conftest.BACKENDS``."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
from datetime import UTC, datetime, timedelta

import pytest

from safehold.core.errors import UsageError
from safehold.storage import (
    LOCK_POLICY_NAME,
    ImmutabilityUnsupported,
    ImmutableStorage,
    LockPolicy,
    ObjectInfo,
    ObjectLocked,
    ObjectNotFound,
    ReadRangeError,
    Storage,
    immutable,
)


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


def test_objects_deleted_during_a_listing_are_left_out_not_an_error(storage: Storage) -> None:
    """Another process deletes what a listing has yet to reach (a lock file, say)."""
    names = [f"d/x{i:02d}" for i in range(20)]
    for n in names:
        storage.put(n, b"lock")
    listing = storage.list("d/")
    first = next(listing)
    for n in names:
        if n != first.name:
            storage.delete(n)
    rest = [i.name for i in listing]  # no ObjectNotFound for the ones that went
    assert set(rest) <= set(names)


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


# The object-lock capability (``ImmutableStorage``): every backend that has it.


def _locked(storage: Storage) -> ImmutableStorage:
    """Turn holds on with a mode the backend keeps; skip where the server keeps none."""
    cap = immutable(storage)
    assert cap is not None, "every backend offers the object-lock capability"
    for policy in (LockPolicy("compliance", 1), LockPolicy("append-only")):
        try:
            cap.enable_lock(policy)
        except ImmutabilityUnsupported:
            continue
        assert policy == cap.lock_policy()
        return cap
    # Only Azurite gets here (it keeps no immutability policy): test_immutability
    # checks that it is refused rather than faked.
    pytest.skip(f"{storage.properties.location} keeps no hold (Azurite)")


def test_nothing_is_held_without_a_lock_policy(storage: Storage) -> None:
    """Until a policy is enabled, objects are not held and delete as before."""
    cap = immutable(storage)
    assert cap is not None
    assert cap.lock_policy() is None
    storage.put("snapshots/s1", b"x")
    assert cap.hold("snapshots/s1") is None
    storage.delete("snapshots/s1")
    with pytest.raises(ObjectNotFound):
        storage.stat("snapshots/s1")


def test_a_held_object_cannot_be_deleted_or_replaced(storage: Storage) -> None:
    """Delete raises ObjectLocked; a replacement fails or is not seen; the bytes stay."""
    cap = _locked(storage)
    data = os.urandom(5000)
    storage.put("data/ab/ab01", data)
    hold = cap.hold("data/ab/ab01")
    assert hold is not None
    assert hold.until is None or hold.until > datetime.now(UTC) + timedelta(hours=23)
    with pytest.raises(ObjectLocked, match="data/ab/ab01"):
        storage.delete("data/ab/ab01")
    with contextlib.suppress(ObjectLocked):
        storage.put("data/ab/ab01", b"ransom")
    storage.put("data/ab/ab01", data)  # a retried write of the same bytes is fine
    assert data == storage.get("data/ab/ab01")
    assert data[10:20] == storage.get("data/ab/ab01", offset=10, length=10)
    assert ObjectInfo("data/ab/ab01", 5000) == storage.stat("data/ab/ab01")
    assert [ObjectInfo("data/ab/ab01", 5000)] == list(storage.list("data/"))
    assert cap.hold(LOCK_POLICY_NAME) is not None, "the policy object is held too"


def test_lock_files_stay_mutable_under_a_lock_policy(storage: Storage) -> None:
    """Lock files are written, replaced and deleted as ever; they are never held."""
    cap = _locked(storage)
    storage.put("locks/l1", b"one")
    storage.put("locks/l1", b"two")
    assert storage.get("locks/l1") == b"two"
    assert cap.hold("locks/l1") is None
    storage.delete("locks/l1")
    assert list(storage.list("locks/")) == []


def test_a_hold_can_be_extended_never_shortened(storage: Storage) -> None:
    """extend_hold moves the end later; an earlier date leaves it as it was."""
    cap = _locked(storage)
    storage.put("index/i1", b"idx")
    before = cap.hold("index/i1")
    assert before is not None
    later = datetime.now(UTC) + timedelta(days=3)
    cap.extend_hold("index/i1", later)
    cap.extend_hold("index/i1", datetime.now(UTC) + timedelta(hours=1))
    after = cap.hold("index/i1")
    assert after is not None
    if before.until is None:  # append-only: held for good already
        assert after.until is None
    else:
        assert after.until is not None
        assert abs((after.until - later).total_seconds()) < 2
