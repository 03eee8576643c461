"""A flipped byte anywhere is found, named, and never restored as good data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safehold.repo import Repository, backup_paths, check, restore
from safehold.repo.errors import IntegrityError
from safehold.storage.file import FileStorage
from tests.conftest import PASSWORD, reopen


def _flip(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    i = min(len(data) - 1, int(len(data) * where))
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def backed_up(repo: Repository, repo_path: Path, tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(1_000_000))
    (src / "small").write_bytes(b"hello")
    backup_paths(repo, [src])
    return repo_path, src


def _files(repo_path: Path, prefix: str) -> list[Path]:
    return sorted(p for p in (repo_path / prefix).rglob("*") if p.is_file())


def test_clean_repository_checks_ok(backed_up: tuple[Path, Path]) -> None:
    """An undamaged repository passes the full check."""
    report = check(reopen(backed_up[0]), read_data=1.0)
    assert [] == report.errors
    assert report.ok


@pytest.mark.parametrize("where", [0.01, 0.5, 0.999])
def test_flipped_byte_in_every_pack_is_found(backed_up: tuple[Path, Path], where: float) -> None:
    """check --read-data names each damaged pack and the snapshot paths it affects."""
    repo_path, _ = backed_up
    for pack in _files(repo_path, "data"):
        original = pack.read_bytes()
        _flip(pack, where)
        repo = Repository.open(FileStorage(repo_path), PASSWORD, load_index=False)
        report = check(repo, read_data=1.0)
        assert not report.ok
        assert any(pack.name in e for e in report.errors), report.errors
        assert report.damaged_files, "the damaged snapshot paths must be named"
        pack.write_bytes(original)


def test_restore_refuses_damaged_data(backed_up: tuple[Path, Path], tmp_path: Path) -> None:
    """Restore fails naming the damaged file, and leaves no corrupt copy behind."""
    repo_path, _ = backed_up
    repo = reopen(repo_path)
    snap = repo.find_snapshot("latest")
    loc = repo.locate(_content_id(repo, snap, "src/big"))
    _flip(
        repo_path / "data" / loc.pack.id[:2] / loc.pack.id, (loc.entry.offset + 20) / loc.pack.size
    )
    out = tmp_path / "out"
    with pytest.raises(IntegrityError) as err:
        restore(reopen(repo_path), snap, out)
    assert "src/big" in str(err.value)
    assert loc.pack.id in str(err.value)
    assert not (out / "src" / "big").exists()
    if _content_id(repo, snap, "src/small") not in {e.id for e in _pack_entries(repo, loc.pack.id)}:
        assert b"hello" == (out / "src" / "small").read_bytes()


@pytest.mark.parametrize("kind", ["index", "snapshots"])
def test_flipped_byte_in_metadata_is_named(
    backed_up: tuple[Path, Path], tmp_path: Path, kind: str
) -> None:
    """A damaged index or snapshot file is named by check and by restore."""
    repo_path, _ = backed_up
    target = _files(repo_path, kind)[0]
    _flip(target)
    report = check(Repository.open(FileStorage(repo_path), PASSWORD, load_index=False))
    assert any(target.name in e for e in report.errors), report.errors

    def attempt() -> None:
        repo = reopen(repo_path)
        ref = target.name if kind == "snapshots" else "latest"
        restore(repo, repo.find_snapshot(ref), tmp_path / "o")

    with pytest.raises(IntegrityError) as err:
        attempt()
    assert target.name in str(err.value)


def _content_id(repo: Repository, snap: object, path: str) -> bytes:
    from safehold.repo.restore import walk

    for p, node in walk(repo, bytes.fromhex(snap.tree)):  # type: ignore[attr-defined]
        if p == path:
            return node.content[0]
    raise AssertionError(path)


def _pack_entries(repo: Repository, pack_id: str) -> list[object]:
    return repo.index.blobs_by_pack()[pack_id]  # type: ignore[return-value]
