"""Keys: several passphrases, passphrase change, rotation, write-only keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safehold.repo import Repository, backup_paths, check, restore
from safehold.repo.errors import IntegrityError, KeyNotAllowed, RepoError, WrongPassword
from safehold.repo.pack import PREFIX_SIZE, parse_prefix
from safehold.storage.file import FileStorage
from tests.conftest import FAST_KDF, PASSWORD, reopen, tree_state


def _src(tmp_path: Path, name: str, size: int = 200_000) -> Path:
    d = tmp_path / name / "data"
    d.mkdir(parents=True)
    (d / "f").write_bytes(os.urandom(size))
    return d


def test_second_key_and_passphrase_change(repo: Repository, repo_path: Path) -> None:
    """A second key opens the repository; after passwd the old passphrase no longer does."""
    repo.key_store.add(repo.keys, "second", "full", FAST_KDF)
    assert reopen(repo_path, "second").keys.can_read
    repo.key_store.passwd(repo.keys, "renewed", FAST_KDF)
    assert reopen(repo_path, "renewed").keys.can_read
    with pytest.raises(WrongPassword):
        reopen(repo_path, PASSWORD)
    assert 2 == len(repo.key_store.list(repo.keys.key_id))


def test_cannot_remove_key_in_use_or_last_full_key(repo: Repository) -> None:
    """Removing the key in use, or the last full key, is refused: data would become unreadable."""
    with pytest.raises(RepoError, match="in use"):
        repo.key_store.remove(repo.keys, repo.keys.key_id[:8])
    wo = repo.key_store.add(repo.keys, "writer", "write-only", FAST_KDF)
    repo.key_store.remove(repo.keys, wo)
    assert [repo.keys.key_id] == [k.id for k in repo.key_store.list(repo.keys.key_id)]


def test_rotation_keeps_old_snapshots_readable(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """After rotation new packs use the new generation; old ones stay, readable, untouched."""
    old_src = _src(tmp_path, "old")
    old = backup_paths(repo, [old_src]).snapshot
    packs_before = {p.name for p in (repo_path / "data").rglob("*") if p.is_file()}
    assert 2 == repo.key_store.rotate(repo.keys)
    r2 = reopen(repo_path)
    new_src = _src(tmp_path, "new")
    new = backup_paths(r2, [new_src]).snapshot
    packs_after = {p for p in (repo_path / "data").rglob("*") if p.is_file()}
    assert packs_before <= {p.name for p in packs_after}
    gens = {
        parse_prefix(p.read_bytes()[:PREFIX_SIZE])[0]
        for p in packs_after
        if p.name not in packs_before
    }
    assert {2} == gens
    r3 = reopen(repo_path)
    for snap, src in ((old, old_src), (new, new_src)):
        out = tmp_path / f"out-{snap.short_id}"
        restore(r3, snap, out)
        assert tree_state(src) == tree_state(out / "data")


def test_write_only_key_backs_up_but_cannot_read(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """A backup host with a write-only key stores new snapshots, deduplicates, and reads nothing."""
    first = _src(tmp_path, "first")
    old = backup_paths(repo, [first]).snapshot
    repo.key_store.add(repo.keys, "backup-host", "write-only", FAST_KDF)
    writer = Repository.open(FileStorage(repo_path), "backup-host")
    assert not writer.keys.can_read
    with pytest.raises(KeyNotAllowed):
        writer.snapshots()
    with pytest.raises(KeyNotAllowed):
        restore(writer, old, tmp_path / "nope")
    # The same 200 kB again: deduplicated against what the full key stored;
    # only the small tree blobs are new.
    again = backup_paths(writer, [first])
    assert again.snapshot.sizes.new < 2_000
    out = tmp_path / "out"
    restore(reopen(repo_path), reopen(repo_path).find_snapshot(again.snapshot.id), out)
    assert tree_state(first) == tree_state(out / "data")


def test_a_damaged_key_file_is_reported_and_removable(repo: Repository, repo_path: Path) -> None:
    """A second key file damaged: the first still opens, check names it, and it can go."""
    second = repo.key_store.add(repo.keys, "second password", "full", FAST_KDF)
    path = repo_path / "keys" / second
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x04
    path.write_bytes(bytes(raw))
    opened = reopen(repo_path)
    assert [f"keys/{second}" in e for e in check(opened).errors].count(True) == 1
    with pytest.raises(IntegrityError, match=f"keys/{second}"):
        reopen(repo_path, "second password")
    opened.key_store.remove(opened.keys, second[:8])
    assert not path.exists()
    assert check(reopen(repo_path)).ok
