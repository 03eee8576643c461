"""An unchanged directory's tree is the parent snapshot's, taken as it is; a changed one is not."""

from __future__ import annotations

import os
from pathlib import Path

from safehold.repo import Repository, backup_paths, check, restore
from tests.conftest import reopen, tree_state


def _make(src: Path) -> None:
    for d in ("a", "b", "b/c"):
        (src / d).mkdir(parents=True)
        for i in range(3):
            (src / d / f"f{i}").write_bytes(os.urandom(2_000) + d.encode())


def test_unchanged_backup_reuses_every_tree(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """Nothing changed: the new snapshot has the same root tree, and no tree was rebuilt."""
    src = tmp_path / "src"
    _make(src)
    first = backup_paths(repo, [src])
    second = backup_paths(reopen(repo_path), [src])
    assert first.snapshot.tree == second.snapshot.tree
    assert 5 == second.trees_reused  # src, a, b, b/c and the snapshot's root
    out = tmp_path / "out"
    restore(reopen(repo_path), second.snapshot, out)
    assert tree_state(src) == tree_state(out / "src")


def test_changes_rebuild_their_directory_and_its_ancestors(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """A file changed in b/c, and a mode changed in a: only what holds no change is reused."""
    src = tmp_path / "src"
    _make(src)
    backup_paths(repo, [src])
    (src / "b" / "c" / "f1").write_bytes(b"new content")
    second = backup_paths(reopen(repo_path), [src])
    assert 1 == second.trees_reused  # a; b/c changed, so b, src and the root did
    (src / "a" / "f0").chmod(0o600)
    third = backup_paths(reopen(repo_path), [src])
    assert 2 == third.trees_reused  # b/c and b
    for snap in (second.snapshot, third.snapshot):
        out = tmp_path / f"out-{snap.id[:8]}"
        restore(reopen(repo_path), snap, out)
        assert b"new content" == (out / "src" / "b" / "c" / "f1").read_bytes()
    last = tmp_path / f"out-{third.snapshot.id[:8]}" / "src"
    assert 0o600 == os.stat(last / "a" / "f0").st_mode & 0o777
    assert tree_state(src) == tree_state(last)
    assert check(reopen(repo_path)).ok
