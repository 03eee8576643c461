"""Lock files through the CLI: damaged and stale locks, and ``safehold unlock``."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from safehold.core.snapshot import format_time
from tests.cli.conftest import Run

LOCK = "0123456789abcdef0123456789abcdef"


def _lock(repo: Path, name: str, *, age: timedelta = timedelta(0), pid: int = 0) -> Path:
    doc = {
        "host": socket.gethostname(),
        "pid": pid or os.getpid(),  # this test process: alive
        "time": format_time(datetime.now(UTC) - age),
        "exclusive": True,
    }
    p = repo / "locks" / name
    p.parent.mkdir(exist_ok=True)
    p.write_text(json.dumps(doc))
    return p


def test_a_damaged_lock_file_does_not_block_and_is_removed(run: Run, tmp_path: Path) -> None:
    """The issue's reproduction: a truncated lock file; backup and prune go on, naming it."""
    run("init", check=True)
    repo = tmp_path / "repo"
    (repo / "locks").mkdir(exist_ok=True)
    bad = repo / "locks" / LOCK
    bad.write_text('{"host": "vm", "pid": 1, "time": "x')
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("hello")
    proc = run("backup", str(data))
    assert 0 == proc.returncode, proc.stderr
    assert f"locks/{LOCK}" in proc.stderr
    assert "damaged" in proc.stderr
    assert not bad.exists()
    bad.write_text("not json")
    proc = run("prune")
    assert 0 == proc.returncode, proc.stderr
    assert not bad.exists()


def test_a_live_lock_is_named_and_unlock_remove_all_clears_it(run: Run, tmp_path: Path) -> None:
    """A live exclusive lock blocks with exit 11 naming its file; plain unlock keeps it."""
    run("init", check=True)
    repo = tmp_path / "repo"
    live = _lock(repo, LOCK)
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("hello")
    proc = run("backup", "--lock-wait", "1", str(data))
    assert 11 == proc.returncode
    assert f"locks/{LOCK}" in proc.stderr
    assert f"pid {os.getpid()}" in proc.stderr
    proc = run("unlock", check=True)
    assert live.exists()
    assert "removed 0 lock files" in proc.stdout
    proc = run("unlock", "--remove-all", check=True)
    assert not live.exists()
    assert f"locks/{LOCK}" in proc.stdout
    assert 0 == run("backup", str(data)).returncode


def test_stale_locks_are_cleaned(run: Run, tmp_path: Path) -> None:
    """Old locks and those of dead processes go at the next unlock, and at the next backup."""
    run("init", check=True)
    repo = tmp_path / "repo"
    old = _lock(repo, "a" * 32, age=timedelta(hours=1))
    future = _lock(repo, "b" * 32, age=timedelta(days=-3650))  # a damaged year: not held for years
    dead = _lock(repo, "c" * 32, pid=2**22 + 12345)  # above pid_max: no such process
    proc = run("unlock", check=True)
    assert "removed 3 lock files" in proc.stdout
    assert not old.exists()
    assert not future.exists()
    assert not dead.exists()
    old = _lock(repo, "d" * 32, age=timedelta(hours=1))
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("hello")
    run("backup", str(data), check=True)
    assert not old.exists()
    assert [] == list((repo / "locks").iterdir())
