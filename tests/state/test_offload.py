"""
``RepositoryTarget`` stores backup files from a child process (``_offload``) when its
storage can be described to one: the backups restore, the password and keys are in
neither argv nor the environment, failures come back, a dead child is replaced.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from safehold.core.snapshot import SnapshotMeta
from safehold.repo import Repository
from safehold.state import BackupOption, RepositoryTarget, RestorePolicy, StateStore
from safehold.storage.file import FileStorage
from safehold.storage.memory import MemoryStorage

PASSWORD = "offload-secret-3b7f"


def _target(tmp_path: Path) -> RepositoryTarget:
    return RepositoryTarget(Repository.init(FileStorage(tmp_path / "repo"), PASSWORD))


def _child_pid(target: RepositoryTarget) -> int:
    child = target._child
    assert child is not None
    assert child._proc is not None
    return child._proc.pid


async def test_backups_stored_by_the_child_restore_exactly(tmp_path: Path) -> None:
    target = _target(tmp_path)
    try:
        async with StateStore.open(tmp_path / "s", partition="p", target=target) as store:
            d = store.dictionary("d")
            async with store.transaction() as tx:
                await d.set(tx, "a", 1)
            full = await store.backup(BackupOption.FULL)
            pid = _child_pid(target)
            assert pid != os.getpid()
            for blob in (Path(f"/proc/{pid}/cmdline"), Path(f"/proc/{pid}/environ")):
                assert PASSWORD.encode() not in blob.read_bytes()
            async with store.transaction() as tx:
                await d.set(tx, "b", 2)
            inc = await store.backup(BackupOption.INCREMENTAL)
            assert _child_pid(target) == pid  # reused
            assert inc.parent_id == full.backup_id
            async with store.transaction() as tx:
                await d.set(tx, "c", 3)
            restored = await store.restore(lsn=inc.lsn, policy=RestorePolicy.FORCE)
            assert restored.lsn == inc.lsn
            async with store.snapshot() as snap:
                assert {k: v async for k, v in d.items(snap)} == {"a": 1, "b": 2}
    finally:
        target.close()
    assert target._child is not None
    assert target._child._proc is None


async def test_a_dead_child_is_replaced_and_failures_come_back(tmp_path: Path) -> None:
    target = _target(tmp_path)
    try:
        async with StateStore.open(tmp_path / "s", partition="p", target=target) as store:
            d = store.dictionary("d")
            async with store.transaction() as tx:
                await d.set(tx, "a", 1)
            await store.backup(BackupOption.FULL)
            first = _child_pid(target)
            os.kill(first, signal.SIGKILL)
            assert target._child is not None
            assert target._child._proc is not None
            target._child._proc.wait()  # it died between two backups
            info = await store.backup(BackupOption.INCREMENTAL)
            assert _child_pid(target) != first
            assert info.snapshot.id in {s.id for s in await store.backups()}
        with pytest.raises(FileNotFoundError):
            target.store_file(tmp_path / "missing", name="x.jsonl", meta=SnapshotMeta())
    finally:
        target.close()


def test_a_storage_a_child_cannot_open_stays_in_process() -> None:
    repo = Repository.init(MemoryStorage(), PASSWORD)
    assert RepositoryTarget(repo)._child is None
    file_repo_target = RepositoryTarget(repo, offload=False)
    assert file_repo_target._child is None
