"""
How restore writes files: opened once while their blobs arrive, a bounded
number open at a time, metadata set on the descriptor, nothing left open.
"""

from __future__ import annotations

import importlib
import os
import random
import resource
import signal
from pathlib import Path

import pytest

from safehold.repo import ChunkerParams, Repository, backup_paths, restore
from safehold.repo.errors import RepoError
from safehold.storage.file import FileStorage
from tests.conftest import FAST_KDF, PASSWORD, tree_state

restore_module = importlib.import_module("safehold.repo.restore")  # the package exports restore()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def many_blobs(tmp_path: Path) -> tuple[Repository, Path]:
    """Files of many small blobs, spread over many packs."""
    small = ChunkerParams(min=16 * 1024, avg=16 * 1024, max=64 * 1024)
    repo = Repository.init(
        FileStorage(tmp_path / "repo"), PASSWORD, pack_size=64 * 1024, chunker=small, kdf=FAST_KDF
    )
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(3)
    for i in range(6):
        p = src / f"f{i}"
        p.write_bytes(rng.randbytes(200_000 + i * 10_000))
        os.chmod(p, 0o640 if i % 2 else 0o400)  # read-only ones too: written before the mode
        os.utime(p, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + i))
    (src / "empty").write_bytes(b"")
    backup_paths(repo, [src])
    return Repository.open(FileStorage(tmp_path / "repo"), PASSWORD), src


@pytest.mark.parametrize(("limit", "batch"), [(1, 1), (2, 3), (256, 1000)])
def test_every_descriptor_limit_restores_exactly(
    many_blobs: tuple[Repository, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    limit: int,
    batch: int,
) -> None:
    """
    With one descriptor or many, files are evicted and reopened, and come out exact;
    so do they when planned in batches of one file or a few (packs read more than once).
    """
    repo, src = many_blobs
    snap = repo.snapshots()[-1]
    monkeypatch.setattr(restore_module, "_OPEN_FILES", limit)
    monkeypatch.setattr(restore_module, "_BATCH_FILES", batch)
    before = _open_fds()
    out = tmp_path / "out"
    result = restore(repo, snap, out, workers=4)
    assert [] == result.warnings
    assert tree_state(src) == tree_state(out / "src")
    assert before == _open_fds()  # nothing left open


def test_a_file_that_cannot_be_written_leaves_nothing_open(
    many_blobs: tuple[Repository, Path], tmp_path: Path
) -> None:
    """A write that fails (files may not grow past 100 kB) ends the restore closing everything."""
    repo, _ = many_blobs
    snap = repo.snapshots()[-1]
    before = _open_fds()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with pytest.raises(RepoError, match="cannot write"):
            restore(repo, snap, tmp_path / "out", workers=2)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert before == _open_fds()
