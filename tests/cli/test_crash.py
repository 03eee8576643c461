"""SIGKILL at random points never damages a repository or loses a snapshot."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from safehold.repo import Repository
from safehold.storage.file import FileStorage
from tests.cli.conftest import Run
from tests.conftest import tree_state

pytestmark = pytest.mark.slow


def _make_data(root: Path, seed: int, files: int = 24, size: int = 2_000_000) -> None:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"f{i:02}").write_bytes(rng.randbytes(size))


def _start(cli_env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "safehold", *args],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill_when(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], delay: float = 0.0
) -> bool:
    """
    SIGKILL *proc* once *ready()* holds (polled), after a further *delay*.

    Polling the repository, not the clock, puts the kill inside the work
    whatever the machine's speed. Returns True if the process was killed.
    """
    deadline = time.monotonic() + 60
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def _count(path: Path) -> int:
    return sum(1 for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _assert_healthy(run: Run, tmp_path: Path, expected: dict[str, Path]) -> None:
    proc = run("check", "--read-data")
    assert 0 == proc.returncode, proc.stderr
    for snap_id, src in expected.items():
        out = tmp_path / f"verify-{snap_id[:8]}-{time.monotonic_ns()}"
        run("restore", snap_id, "--target", str(out), check=True)
        assert tree_state(src) == tree_state(out / src.name)


def test_backup_killed_at_random_points(run: Run, cli_env: dict[str, str], tmp_path: Path) -> None:
    """A killed backup leaves a clean repository, earlier snapshots intact, its data reusable."""
    Repository.init(
        FileStorage(tmp_path / "repo"), cli_env["SAFEHOLD_PASSWORD"], pack_size=256 * 1024
    )
    first = tmp_path / "first" / "data"
    _make_data(first, seed=1)
    s1 = json.loads(run("backup", str(first), "--json", check=True).stdout)["snapshot"]
    src = tmp_path / "second" / "data"
    _make_data(src, seed=2)
    rng = random.Random(7)
    packs = tmp_path / "repo" / "data"
    # Kill after a random number of new packs (of about 50 a run: a pack holds
    # one ~1 MiB chunk here); the last run goes far enough to have written an
    # index file (one per 8 packs), so its data must be reused.
    for lo, hi in ((1, 15), (1, 15), (10, 20)):
        before, target = _count(packs), rng.randint(lo, hi)
        proc = _start(cli_env, "backup", str(src))
        assert _kill_when(proc, lambda b=before, t=target: _count(packs) >= b + t), (
            "backup was not interrupted"
        )
        _assert_healthy(run, tmp_path, {s1: first})
    final = json.loads(run("backup", str(src), "--json", check=True).stdout)
    # What the killed runs uploaded and indexed is reused, not stored again.
    assert final["sizes"]["new"] < final["sizes"]["logical"]
    _assert_healthy(run, tmp_path, {s1: first, final["snapshot"]: src})


def test_prune_killed_at_random_points(run: Run, cli_env: dict[str, str], tmp_path: Path) -> None:
    """A killed prune leaves a repository that checks clean with every kept snapshot intact."""
    Repository.init(
        FileStorage(tmp_path / "repo"), cli_env["SAFEHOLD_PASSWORD"], pack_size=256 * 1024
    )
    repo = tmp_path / "repo"
    snaps: list[tuple[str, Path]] = []
    for i in range(6):
        src = tmp_path / f"gen{i}" / "data"
        _make_data(src, seed=10 + i, files=60, size=100_000)
        if i:  # half of each generation's files are the previous one's: packs end up partly used
            for j in range(0, 60, 2):
                (src / f"f{j:02}").write_bytes(
                    (tmp_path / f"gen{i - 1}" / "data" / f"f{j:02}").read_bytes()
                )
        snaps.append(
            (json.loads(run("backup", str(src), "--json", check=True).stdout)["snapshot"], src)
        )
    kept = dict(snaps[1::2])
    # Kill points by what prune has done: lock taken, index rewritten, packs being deleted.
    points: list[Callable[[int, int], Callable[[], bool]]] = [
        lambda idx, packs: lambda: _count(repo / "locks") > 0,
        lambda idx, packs: lambda: _count(repo / "index") != idx,
        lambda idx, packs: lambda: _count(repo / "data") < packs,
        lambda idx, packs: lambda: _count(repo / "data") < packs - 2,
    ]
    killed = 0
    for n, point in enumerate(points):
        sid, _ = snaps[2 * (n % 3)]
        (repo / "snapshots" / sid).unlink(missing_ok=True)  # what `forget` does
        proc = _start(cli_env, "prune")
        killed += _kill_when(proc, point(_count(repo / "index"), _count(repo / "data")))
        _assert_healthy(run, tmp_path, kept)
    # Polling can miss a very short phase; most kill points must still land.
    assert killed >= 3, f"only {killed} of 4 prunes were interrupted"
    run("prune", check=True)
    _assert_healthy(run, tmp_path, kept)
    leftover = json.loads(run("prune", "--dry-run", "--json", check=True).stdout)
    assert 0 == leftover["packs_deleted"]


def test_two_backups_at_once_and_prune_during_backup(
    run: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Concurrent backups both land; a prune beside them waits or refuses, and loses nothing."""
    Repository.init(
        FileStorage(tmp_path / "repo"), cli_env["SAFEHOLD_PASSWORD"], pack_size=256 * 1024
    )
    a, b = tmp_path / "a" / "data", tmp_path / "b" / "data"
    _make_data(a, seed=3)
    _make_data(b, seed=4)
    (b / "f00").write_bytes((a / "f00").read_bytes())  # shared content, deduplicated across writers
    procs = [_start(cli_env, "backup", str(a)), _start(cli_env, "backup", str(b))]
    prune = subprocess.run(
        [sys.executable, "-m", "safehold", "prune"],
        check=False,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert prune.returncode in (0, 11), prune.stderr
    assert [0, 0] == [p.wait(timeout=120) for p in procs]
    snaps = json.loads(run("snapshots", "--json", check=True).stdout)
    by_path = {s["paths"][0]: s["id"] for s in snaps}
    assert {str(a), str(b)} == set(by_path)
    run("prune", check=True)
    _assert_healthy(run, tmp_path, {by_path[str(a)]: a, by_path[str(b)]: b})
    assert os.listdir(tmp_path / "repo" / "locks") == []
