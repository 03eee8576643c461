"""Bad input gives a clear message and a documented exit code, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import Run
from tests.conftest import scribbling


def _no_traceback(proc: object) -> None:
    assert "Traceback" not in proc.stderr  # type: ignore[attr-defined]


def test_missing_repository(run: Run, tmp_path: Path) -> None:
    """A repository that does not exist: exit 10, and the message says where."""
    proc = run("snapshots", env={"SAFEHOLD_REPO": str(tmp_path / "nothing")})
    assert 10 == proc.returncode
    assert "no repository at" in proc.stderr
    _no_traceback(proc)


def test_wrong_password(run: Run) -> None:
    """A wrong password: exit 12, and the password is not echoed."""
    run("init", check=True)
    proc = run("snapshots", env={"SAFEHOLD_PASSWORD": "not-the-password"})
    assert 12 == proc.returncode
    assert "wrong password" in proc.stderr
    assert "not-the-password" not in proc.stderr + proc.stdout
    _no_traceback(proc)


def test_unreachable_path(run: Run, tmp_path: Path) -> None:
    """A repository path that cannot be reached (under a file): a clear storage error."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run("init", env={"SAFEHOLD_REPO": str(blocker / "repo")})
    assert proc.returncode in (10, 15)
    assert str(blocker) in proc.stderr
    _no_traceback(proc)


def test_newer_format_is_refused_before_the_password(run: Run, tmp_path: Path) -> None:
    """A repository of a newer format version: exit 14, and no password is needed to learn it."""
    run("init", check=True)
    config = tmp_path / "repo" / "config"
    doc = json.loads(config.read_text())
    doc["version"] = 99
    config.write_text(json.dumps(doc))
    proc = run("snapshots", env={"SAFEHOLD_PASSWORD": "wrong"})
    assert 14 == proc.returncode
    assert "version 99" in proc.stderr
    _no_traceback(proc)


def test_no_password_without_terminal(run: Run) -> None:
    """No password source and no terminal: exit 2 with instructions."""
    run("init", check=True)
    proc = run("snapshots", env={"SAFEHOLD_PASSWORD": ""})
    assert 2 == proc.returncode
    assert "SAFEHOLD_PASSWORD" in proc.stderr


def test_unknown_snapshot_and_bad_options(run: Run, tmp_path: Path) -> None:
    """An unknown snapshot id is exit 16; contradictory options are exit 2."""
    run("init", check=True)
    assert 16 == run("restore", "deadbeef", "--target", str(tmp_path / "o")).returncode
    proc = run("backup", "--stdin", str(tmp_path))
    assert 2 == proc.returncode
    assert "either paths or --stdin" in proc.stderr
    assert 2 == run("backup", str(tmp_path / "missing")).returncode
    assert 2 == run("forget").returncode
    assert 2 == run("check", "--read-data-subset", "150%").returncode


def test_end_to_end_with_json(run: Run, tmp_path: Path) -> None:
    """init, backup, stdin backup, snapshots --json, dump, restore: the documented flow works."""
    src = tmp_path / "data"
    src.mkdir()
    (src / "a.txt").write_text("alpha\n")
    run("init", check=True)
    out = json.loads(run("backup", str(src), "--tag", "nightly", "--json", check=True).stdout)
    assert 1 == out["files_new"]
    run("backup", "--stdin", "--stdin-name", "shop.sql", input="CREATE TABLE t();\n", check=True)
    snaps = json.loads(run("snapshots", "--json", check=True).stdout)
    assert [["nightly"], []] == [s["tags"] for s in snaps]
    assert "CREATE TABLE t();\n" == run("dump", "latest", check=True).stdout
    run("restore", snaps[0]["id"][:8], "--target", str(tmp_path / "r"), check=True)
    assert "alpha\n" == (tmp_path / "r" / "data" / "a.txt").read_text()
    listing = run(
        "restore", "latest", "--target", str(tmp_path / "r2"), "--dry-run", check=True
    ).stdout
    assert "would restore /shop.sql" in listing
    assert not (tmp_path / "r2").exists()


def test_exit_codes_of_damage_and_partial_backups(run: Run, tmp_path: Path) -> None:
    """check exits 13 naming the damaged pack; a backup of a file that keeps changing exits 3."""
    src = tmp_path / "data"
    src.mkdir()
    busy = src / "busy.db"
    # Large enough that the scribbler runs while it is read even on a loaded
    # machine (at 24 MB one CI run read it whole between two of its writes).
    busy.write_bytes(os.urandom(64 * 1024 * 1024))
    run("init", check=True)
    run("backup", str(src), check=True)
    pack = max(
        (p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 1
    pack.write_bytes(bytes(data))
    proc = run("check", "--read-data")
    assert 13 == proc.returncode
    assert pack.name in proc.stderr

    with scribbling(busy):
        proc = run("backup", str(src))
    assert 3 == proc.returncode, proc.stderr
    assert "busy.db" in proc.stderr
    assert "changed while it was read" in proc.stderr


def test_restore_into_a_full_disk(run: Run, tmp_path: Path) -> None:
    """A restore target that fills up is a clear error naming the target, not a traceback."""
    src = tmp_path / "data"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(3 * 1024 * 1024))
    run("init", check=True)
    run("backup", str(src), check=True)
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tiny)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        proc = run("restore", "latest", "--target", str(tiny / "out"))
    finally:
        subprocess.run(["umount", "-l", str(tiny)], check=False)
    assert 1 == proc.returncode
    assert "restore target" in proc.stderr
    assert "No space left" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_commands_and_options_are_usage_errors(run: Run) -> None:
    """A mistyped command or option is exit 2 with click's message; service commands are there."""
    proc = run("bakup")
    assert 2 == proc.returncode
    assert "No such command 'bakup'" in proc.stderr
    proc = run("backup", "--frobnicate")
    assert 2 == proc.returncode
    assert "No such option: --frobnicate" in proc.stderr
    assert 0 == run("config", "--help").returncode
    assert "serve" in run("--help", check=True).stdout
