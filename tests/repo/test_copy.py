"""Copying snapshots between repositories, and moving a repository."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from safehold.repo import Repository, backup_paths, copy_snapshots, restore
from safehold.storage.file import FileStorage
from tests.conftest import FAST_KDF, reopen, tree_state


def _data(root: Path, n: int, seed: bytes = b"") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"f{i}").write_bytes(seed + os.urandom(50_000))
    return root


def test_copy_is_exact_incremental_and_rerunnable(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """A copy restores identically; a rerun copies nothing; later, only new data moves."""
    src = _data(tmp_path / "src" / "data", 10)
    backup_paths(repo, [src])
    dst = Repository.init(FileStorage(tmp_path / "dst"), "other password", kdf=FAST_KDF)
    first = copy_snapshots(reopen(repo_path), dst)
    assert 1 == len(first.copied)
    assert first.bytes_uploaded > 500_000
    out = tmp_path / "out"
    copied = dst.find_snapshot(first.copied[0])
    restore(dst, copied, out)
    assert tree_state(src) == tree_state(out / "data")
    assert repo.find_snapshot("latest").id == copied.original

    again = copy_snapshots(reopen(repo_path), dst)
    assert ([], 1, 0) == (again.copied, len(again.skipped), again.bytes_uploaded)

    (src / "f0").write_bytes(os.urandom(50_000))
    backup_paths(reopen(repo_path), [src])
    third = copy_snapshots(reopen(repo_path), dst)
    assert 1 == len(third.copied)
    assert third.bytes_uploaded < 100_000  # one changed file, not ten
    assert 2 == len(dst.snapshots())


def test_moved_repository_continues_its_chain(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """After a repository moves and its password changes, the next backup still uses its parent."""
    src = _data(tmp_path / "src" / "data", 5)
    first = backup_paths(repo, [src]).snapshot
    repo.key_store.passwd(repo.keys, "new password", FAST_KDF)
    moved = tmp_path / "elsewhere" / "repo"
    moved.parent.mkdir()
    shutil.move(repo_path, moved)
    again = backup_paths(Repository.open(FileStorage(moved), "new password"), [src])
    assert first.id == again.snapshot.parent
    assert 5 == again.files_unmodified
    assert 0 == again.bytes_read
