"""Prune and `repair index` write the complete index as several bounded files, and lose nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safehold.repo import Repository, backup_paths, check, forget, prune, rebuild_index, restore
from safehold.repo import index as index_module
from safehold.repo.index import read_index_file
from tests.conftest import reopen, tree_state


def _index_files(repo_path: Path) -> list[Path]:
    return sorted(p for p in (repo_path / "index").rglob("*") if p.is_file())


def _two_snapshots(repo: Repository, src: Path) -> None:
    src.mkdir()
    for i in range(40):
        (src / f"f{i}").write_bytes(os.urandom(20_000))
    backup_paths(repo, [src])
    for i in range(10):
        (src / f"f{i}").write_bytes(os.urandom(20_000))
    backup_paths(repo, [src])


@pytest.mark.parametrize("how", ["prune", "repair"])
def test_a_complete_index_is_written_in_bounded_files(
    repo: Repository,
    repo_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    """With at most 10 blobs a file, the new index is many files; everything still restores."""
    src = tmp_path / "src"
    _two_snapshots(repo, src)
    monkeypatch.setattr(index_module, "FILE_MAX_BLOBS", 10)
    r = reopen(repo_path)
    if how == "prune":
        oldest = min(r.snapshots(), key=lambda s: s.time)
        forget(r, [oldest.id])
        prune(r)
    else:
        rebuild_index(r)
    fresh = reopen(repo_path)
    contents = [
        read_index_file(fresh.storage, i.name, fresh.keys.index_key)
        for i in fresh.storage.list("index/")
    ]
    # How many packs the data fills varies from run to run; the bound does not:
    # a file holds at most 10 blobs, or one pack that alone holds more.
    every = [p for c in contents for p in c]
    assert len(every) > 1  # several packs, and more blobs than one file may hold
    assert sum(len(p.blobs) for p in every) > 10
    assert len(contents) >= 2
    for packs in contents:
        assert len(packs) == 1 or sum(len(p.blobs) for p in packs) <= 10
    assert check(fresh).ok
    out = tmp_path / "out"
    restore(fresh, fresh.find_snapshot("latest"), out)
    assert tree_state(src) == tree_state(out / "src")


def test_a_crash_between_two_index_files_loses_nothing(
    repo: Repository, repo_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the first new file: the old index files are still there, and suffice."""
    src = tmp_path / "src"
    _two_snapshots(repo, src)
    before = _index_files(repo_path)
    real = index_module.write_index_file
    calls = 0

    def dies_second_time(*args: object, **kwargs: object) -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt  # as a kill would, between two files
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(index_module, "FILE_MAX_BLOBS", 10)
    monkeypatch.setattr(index_module, "write_index_file", dies_second_time)
    with pytest.raises(KeyboardInterrupt):
        rebuild_index(reopen(repo_path))
    monkeypatch.undo()
    assert set(before) <= set(_index_files(repo_path))  # nothing old was deleted
    fresh = reopen(repo_path)
    assert check(fresh).ok
    out = tmp_path / "out"
    restore(fresh, fresh.find_snapshot("latest"), out)
    assert tree_state(src) == tree_state(out / "src")
