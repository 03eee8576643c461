"""
One flipped bit in any file of a repository is detected: by opening it, or by
``check --read-data``. Every file kind is covered: config, key files, keyring,
public keyring, index, snapshots and packs.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from safehold.core.errors import SafeholdError
from safehold.repo import Repository, backup_paths, check
from safehold.storage.file import FileStorage
from tests.conftest import FAST_KDF, PASSWORD

KINDS = ["config", "keys", "keyring", "pubring", "index", "snapshots", "data"]
FLIPS_PER_KIND = 40


@pytest.fixture(scope="module")
def repo_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bitflips")
    path = root / "repo"
    repo = Repository.init(FileStorage(path), PASSWORD, pack_size=64 * 1024, kdf=FAST_KDF)
    repo.key_store.add(repo.keys, "write-only password", "write-only", FAST_KDF)
    src = root / "src"
    src.mkdir()
    rng = random.Random(1)
    for i in range(3):
        (src / f"f{i}").write_bytes(rng.randbytes(20_000) + b"text " * 2000)
    backup_paths(repo, [src])
    return path


def _files(repo_path: Path, kind: str) -> list[Path]:
    if kind == "config":
        return [repo_path / "config"]
    return sorted(p for p in (repo_path / kind).rglob("*") if p.is_file())


def _detected(repo_path: Path) -> bool:
    try:
        repo = Repository.open(FileStorage(repo_path), PASSWORD, load_index=False)
    except SafeholdError:
        return True  # refused to open, with a message (exit 10, 13 or 14)
    return not check(repo, read_data=1.0).ok


def test_the_undamaged_repository_checks_clean(repo_path: Path) -> None:
    """The baseline: nothing is reported before any bit is flipped."""
    repo = Repository.open(FileStorage(repo_path), PASSWORD, load_index=False)
    report = check(repo, read_data=1.0)
    assert [] == report.errors
    assert [] == report.warnings


@pytest.mark.parametrize("kind", KINDS)
def test_every_flipped_bit_is_detected(repo_path: Path, kind: str) -> None:
    """Bits spread over every file of the kind, first and last byte included: 100% found."""
    files = _files(repo_path, kind)
    assert files, f"the repository has no {kind} file"
    rng = random.Random(kind)
    missed = []
    for n in range(FLIPS_PER_KIND):
        path = files[n % len(files)]
        original = path.read_bytes()
        spot = (n // len(files)) * len(original) // max(1, FLIPS_PER_KIND // len(files) - 1)
        at = min(len(original) - 1, spot)
        bit = 1 << rng.randrange(8)
        damaged = bytearray(original)
        damaged[at] ^= bit
        path.write_bytes(bytes(damaged))
        try:
            if not _detected(repo_path):
                missed.append(f"{path.relative_to(repo_path)} byte {at} bit {bit:#x}")
        finally:
            path.write_bytes(original)
    assert [] == missed


def test_a_version_1_repository_still_opens(tmp_path: Path) -> None:
    """A config without a MAC and key files without a checksum (format 1) open and check."""

    path = tmp_path / "repo"
    Repository.init(FileStorage(path), PASSWORD, kdf=FAST_KDF)
    config = json.loads((path / "config").read_text())
    del config["mac"]
    config["version"] = 1
    (path / "config").write_text(json.dumps(config))
    for key in (path / "keys").iterdir():
        doc = json.loads(key.read_text())
        del doc["checksum"]
        doc["version"] = 1
        key.write_text(json.dumps(doc))
    report = check(Repository.open(FileStorage(path), PASSWORD, load_index=False))
    assert report.ok
    assert any("config is not authenticated (format version 1)" in w for w in report.warnings)
