"""Write-only hosts: the local files cache spares reading unchanged files again."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from safehold.repo import Repository, backup_paths
from safehold.repo.filescache import FILE_NAME
from safehold.storage import StorageError
from safehold.storage.file import FileStorage
from tests.conftest import FAST_KDF


@pytest.fixture
def writer(repo: Repository, repo_path: Path, tmp_path: Path) -> Repository:
    """The repository opened with a write-only key, with its cache under tmp_path."""
    repo.key_store.add(repo.keys, "backup-host", "write-only", FAST_KDF)
    wo = Repository.open(FileStorage(repo_path), "backup-host")
    wo.cache_dir = tmp_path / "cache"
    assert not wo.keys.can_read
    return wo


def _src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(200_000))
    return src


def test_unchanged_files_are_not_read_again(writer: Repository, tmp_path: Path) -> None:
    """Second backup: only the changed file is read; the others reuse their chunks."""
    src = _src(tmp_path)
    first = backup_paths(writer, [src])
    assert first.bytes_read == 1_000_000
    (src / "f2").write_bytes(os.urandom(200_000))
    second = backup_paths(writer, [src])
    assert second.bytes_read == 200_000
    assert second.files_unmodified == 4


def test_a_tampered_row_is_ignored(writer: Repository, tmp_path: Path) -> None:
    """A row changed without the key (here: other chunk ids) is not trusted: the file is read."""
    src = _src(tmp_path)
    backup_paths(writer, [src])
    db = tmp_path / "cache" / writer.config["id"] / FILE_NAME
    with sqlite3.connect(db) as con:
        (other,) = con.execute("SELECT content FROM files WHERE path LIKE '%f1'").fetchone()
        con.execute("UPDATE files SET content = ? WHERE path LIKE '%f0'", (other,))
    con.close()
    second = backup_paths(writer, [src])
    assert second.bytes_read == 200_000
    assert second.files_unmodified == 4


def test_a_failed_backup_leaves_no_rows(
    writer: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """Rows are kept only once the snapshot is saved."""
    src = _src(tmp_path)
    snapshots = repo_path / "snapshots"
    if snapshots.exists():
        snapshots.rmdir()
    snapshots.write_bytes(b"in the way")  # saving the snapshot fails
    with pytest.raises(StorageError):
        backup_paths(writer, [src])
    db = tmp_path / "cache" / writer.config["id"] / FILE_NAME
    with sqlite3.connect(db) as con:
        assert [] == con.execute("SELECT path FROM files").fetchall()
    con.close()
