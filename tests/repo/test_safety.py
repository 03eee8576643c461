"""Restore never escapes its target; changing files are reported; check samples honestly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safehold.core.snapshot import Snapshot
from safehold.repo import Repository, backup_paths, check, restore
from safehold.repo.errors import IntegrityError
from safehold.repo.pack import TREE
from safehold.repo.tree import Node, Tree
from safehold.repo.writer import BlobWriter
from tests.conftest import reopen, scribbling


def _forged_snapshot(repo: Repository, nodes: list[Node]) -> Snapshot:
    """Store a snapshot whose tree says whatever a malicious writer wants."""
    from datetime import UTC, datetime

    raw = Tree(nodes).serialize()
    with BlobWriter(repo) as w:
        tree_id, _ = w.save(TREE, raw)
        w.flush()
    return repo.save_snapshot(
        Snapshot(
            id="", time=datetime.now(UTC), host="evil", user="x", paths=("/",), tree=tree_id.hex()
        )
    )


@pytest.mark.parametrize("name", ["..", "../escape", "a/b", "", "."])
def test_restore_refuses_names_that_escape(repo: Repository, tmp_path: Path, name: str) -> None:
    """Names like '..', 'a/b' or '' in a snapshot are refused; nothing is written outside."""
    snap = _forged_snapshot(repo, [Node(name=name, type="file", mode=0o100644, size=0)])
    target = tmp_path / "target"
    with pytest.raises(IntegrityError, match="unsafe name"):
        restore(repo, snap, target)
    assert not (tmp_path / "escape").exists()


def test_restore_does_not_follow_symlinks_in_target(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """A symlink in the target where the snapshot has a directory is replaced, not followed."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("inside")
    snap = backup_paths(repo, [src]).snapshot
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "t"
    (target / "src").mkdir(parents=True)
    (target / "src" / "d").symlink_to(outside)
    restore(reopen(repo_path), snap, target)
    assert [] == list(outside.iterdir())
    assert "inside" == (target / "src" / "d" / "f").read_text()


def test_file_changing_during_backup_is_reported(repo: Repository, tmp_path: Path) -> None:
    """A file that keeps changing while it is read is named in the warnings."""
    src = tmp_path / "src"
    src.mkdir()
    busy = src / "busy.db"
    busy.write_bytes(os.urandom(24 * 1024 * 1024))
    with scribbling(busy):
        result = backup_paths(repo, [src])
    assert any("busy.db" in w and "changed while it was read" in w for w in result.warnings)
    assert result.snapshot.warnings == tuple(result.warnings)


def test_owner_and_mode_are_restored(repo: Repository, repo_path: Path, tmp_path: Path) -> None:
    """As root, restore gives files back their owner, group and mode."""
    if os.geteuid() != 0:
        pytest.skip("changing owners needs root")
    src = tmp_path / "src"
    src.mkdir()
    f = src / "owned"
    f.write_text("x")
    os.chown(f, 1234, 5678)
    f.chmod(0o640)
    snap = backup_paths(repo, [src]).snapshot
    restore(reopen(repo_path), snap, tmp_path / "out")
    st = (tmp_path / "out" / "src" / "owned").stat()
    assert (1234, 5678, 0o640) == (st.st_uid, st.st_gid, st.st_mode & 0o777)


def test_read_data_subset_reads_a_share(repo: Repository, repo_path: Path, tmp_path: Path) -> None:
    """--read-data-subset reads that share of the packs, and no more."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i}").write_bytes(os.urandom(300_000))
    backup_paths(repo, [src])
    r = Repository.open(repo.storage, "correct horse battery staple", load_index=False)
    report = check(r, read_data=0.25, seed=1)
    assert report.ok
    assert round(report.packs * 0.25) == report.packs_read
