"""
The defects that fault injection found (issue 9 § 4), each as the user meets
it: a clear message and a documented exit code, never an internal error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.repo import Repository, backup_paths
from safehold.storage.file import FileStorage
from tests.cli.conftest import Run
from tests.conftest import FAST_KDF


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository with one snapshot, made once (the tests undo their damage)."""
    root = tmp_path_factory.mktemp("defects")
    data = root / "data"
    data.mkdir()
    (data / "f").write_text("hello")
    repo = Repository.init(FileStorage(root / "repo"), "s3cret-pass", kdf=FAST_KDF)
    backup_paths(repo, [data])
    return root / "repo"


@pytest.fixture
def backed_up(shared_repo: Path, cli_env: dict[str, str]) -> Iterator[Path]:
    """The shared repository, as this test's SAFEHOLD_REPO; its files are put back after."""
    cli_env["SAFEHOLD_REPO"] = str(shared_repo)
    saved = {p: p.read_bytes() for p in shared_repo.rglob("*") if p.is_file()}
    yield shared_repo
    for p, raw in saved.items():
        p.write_bytes(raw)


def _clean(proc: object) -> None:
    err = proc.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in err
    assert "internal error" not in err


def test_restore_onto_an_existing_file_is_a_usage_error(
    run: Run, backed_up: Path, tmp_path: Path
) -> None:
    """The target is a file: exit 2 naming it, and the file is left alone."""
    target = tmp_path / "a-file"
    target.write_text("keep me")
    proc = run("restore", "latest", "--target", str(target))
    assert 2 == proc.returncode, proc.stderr
    assert str(target) in proc.stderr
    assert "not a directory" in proc.stderr
    _clean(proc)
    assert "keep me" == target.read_text()


def test_restore_where_nothing_can_be_created_is_a_usage_error(run: Run, backed_up: Path) -> None:
    """/proc/x cannot be made: exit 2 naming it."""
    proc = run("restore", "latest", "--target", "/proc/x")
    assert 2 == proc.returncode, proc.stderr
    assert "/proc/x" in proc.stderr
    _clean(proc)


@pytest.mark.parametrize("span", ["999999999999999d", "99999999d", "P9999999Y"])
def test_forget_keep_within_too_long_is_a_usage_error(run: Run, backed_up: Path, span: str) -> None:
    """A span that cannot be counted back from now: exit 2, not an OverflowError."""
    proc = run("forget", "--keep-within", span)
    assert 2 == proc.returncode, proc.stderr
    assert "--keep-within" in proc.stderr
    _clean(proc)


def test_forget_keep_last_negative_is_refused(run: Run, backed_up: Path) -> None:
    """--keep-last -1 is bad input (exit 2), and nothing is forgotten."""
    proc = run("forget", "--keep-last", "-1")
    assert 2 == proc.returncode, proc.stderr
    _clean(proc)
    assert 1 == len(list((backed_up / "snapshots").iterdir()))


def test_removing_an_unknown_key_is_not_found(run: Run, backed_up: Path) -> None:
    """key remove of an id no key file has: exit 16."""
    proc = run("key", "remove", "deadbeef")
    assert 16 == proc.returncode, proc.stderr
    assert "deadbeef" in proc.stderr
    _clean(proc)


def test_a_damaged_key_file_is_named_not_a_wrong_password(run: Run, backed_up: Path) -> None:
    """The only key file is damaged: exit 13 naming it, not 'wrong password'."""
    (key,) = (backed_up / "keys").iterdir()
    doc = json.loads(key.read_text())
    data = bytearray(doc["data"].encode())
    data[20] = ord("A") if data[20] != ord("A") else ord("B")
    doc["data"] = data.decode()
    key.write_text(json.dumps(doc))
    proc = run("snapshots")
    assert 13 == proc.returncode, proc.stderr
    assert f"keys/{key.name}" in proc.stderr
    assert "wrong password" not in proc.stderr
    _clean(proc)


def test_a_flipped_chunker_field_in_config_is_refused(run: Run, backed_up: Path) -> None:
    """The config's pack size and chunker are authenticated: a change is damage (exit 13)."""
    config = backed_up / "config"
    doc = json.loads(config.read_text())
    doc["chunker"]["min"] = 1024
    config.write_text(json.dumps(doc))
    proc = run("snapshots")
    assert 13 == proc.returncode, proc.stderr
    assert "config" in proc.stderr
    _clean(proc)


def test_check_read_data_finds_a_damaged_pubring(run: Run, backed_up: Path) -> None:
    """A damaged public keyring file is found by check and named (exit 13)."""
    (pub,) = (backed_up / "pubring").iterdir()
    raw = bytearray(pub.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    pub.write_bytes(bytes(raw))
    proc = run("check", "--read-data")
    assert 13 == proc.returncode, proc.stderr
    assert f"pubring/{pub.name}" in proc.stderr
    _clean(proc)
