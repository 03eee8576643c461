"""
A storage server that dies or hangs in the middle of a backup.

The backup must end with a clear storage error within its retry budget, the
repository must still pass ``check`` with earlier snapshots intact, and a
retry once the server is back must finish and reuse what was uploaded.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from safehold.repo import KdfParams, Repository, backup_paths, check, restore
from safehold.storage import Storage, StorageError
from safehold.storage.retry import RetryingStorage
from tests.conftest import tree_state
from tests.storage import servers

pytestmark = pytest.mark.slow
PASSWORD = "fault test password"


class _BreakAfterIndex:
    """
    A storage that breaks its server right after the first index file is stored.

    Breaking there, rather than at some byte count, makes "data was uploaded and
    indexed before the outage" certain, so the retry must reuse it.
    """

    def __init__(self, inner: Storage, brk: Callable[[], None]) -> None:
        self._inner = inner
        self._brk = brk
        self.fired = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def put(self, name: str, data: bytes) -> None:
        self._inner.put(name, data)
        if name.startswith("index/") and not self.fired.is_set():
            self.fired.set()
            self._brk()


def _azure(server: servers.Server, container: str) -> Storage:
    from safehold.storage.azure import AzureStorage

    return AzureStorage(
        container,
        "repo",
        connection_string=servers.azurite_connection_string(server),
        connect_timeout=2.0,
        timeout=4.0,
    )


def _s3(server: servers.Server, bucket: str) -> Storage:
    from safehold.storage.s3 import S3Storage

    return S3Storage(
        bucket,
        "repo",
        access_key_id="test",
        secret_access_key="test",
        endpoint_url=f"http://{servers.HOST}:{server.port}",
        connect_timeout=2.0,
        timeout=4.0,
    )


@pytest.fixture(params=["azure", "s3"])
def faulty(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Callable[[], Storage], Callable[[], None], Callable[[], None]]]:
    """
    (make a storage, break the server, mend it).

    The server is frozen with SIGSTOP, not killed: moto keeps its data in memory,
    and Azurite writes its metadata to disk only every few seconds, so killing
    either would lose writes it had acknowledged, which no real store does.
    """
    state = tmp_path / "server-state"
    state.mkdir()
    if request.param == "azure":
        server = servers.azurite(state)
        make = _azure
    else:
        server = servers.moto(state)
        make = _s3
    server.start()
    name = servers.unique()
    try:
        yield (
            (lambda: RetryingStorage(make(server, name), budget=3.0, first_delay=0.2)),
            server.pause,
            server.resume,
        )
    finally:
        server.resume()
        server.stop()


def _data(root: Path, files: int, size: int) -> Path:
    root.mkdir(parents=True)
    for i in range(files):
        (root / f"f{i:02}").write_bytes(os.urandom(size))
    return root


def test_backup_survives_a_storage_outage(
    faulty: tuple[Callable[[], Storage], Callable[[], None], Callable[[], None]], tmp_path: Path
) -> None:
    """Outage mid-backup: clear failure, repository still checks clean, the retry reuses uploads."""
    make, brk, mend = faulty
    kdf = KdfParams(n=1024)
    repo = Repository.init(make(), PASSWORD, pack_size=256 * 1024, kdf=kdf)
    first_src = _data(tmp_path / "first" / "data", 4, 100_000)
    first = backup_paths(repo, [first_src]).snapshot

    src = _data(tmp_path / "second" / "data", 24, 1_000_000)
    breaking = _BreakAfterIndex(make(), brk)
    with pytest.raises(StorageError) as err:
        backup_paths(Repository.open(breaking, PASSWORD), [src])  # type: ignore[arg-type]
    assert breaking.fired.is_set()
    assert PASSWORD not in str(err.value)

    mend()
    again = Repository.open(make(), PASSWORD, load_index=False)
    report = check(again, read_data=1.0)
    assert [] == report.errors
    out = tmp_path / "out-first"
    restore(Repository.open(make(), PASSWORD), first, out)
    assert tree_state(first_src) == tree_state(out / "data")

    done = backup_paths(Repository.open(make(), PASSWORD), [src]).snapshot
    assert done.sizes.new < done.sizes.logical  # what reached the store before the outage is reused
    out = tmp_path / "out-second"
    restore(Repository.open(make(), PASSWORD), done, out)
    assert tree_state(src) == tree_state(out / "data")
