"""
``safehold mount``: the read-only view (``repo.fs``) on a real repository, and
the real FUSE mount where FUSE works here (skipped, with the reason, where not).
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safehold.core.snapshot import SnapshotMeta
from safehold.repo import ChunkerParams, Repository, backup_paths
from safehold.repo.fs import SnapshotFS
from safehold.storage.file import FileStorage
from tests.conftest import FAST_KDF

NL = "new\nline.txt"
UNI = "ünïcødé-日本.bin"
SMALL_CHUNKS = ChunkerParams(min=16 * 1024, avg=16 * 1024, max=64 * 1024)


@pytest.fixture
def snapshot_repo(tmp_path: Path) -> tuple[Path, bytes]:
    """A repository (small chunks) with one snapshot of data/; returns data/ and a big file."""
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    big = random.Random(7).randbytes(700_000)
    (data / "sub" / UNI).write_bytes(big)
    (data / NL).write_text("newline")
    (data / "empty").write_bytes(b"")
    os.symlink("sub", data / "link")
    r = Repository.init(
        FileStorage(tmp_path / "repo"), "s3cret-pass", kdf=FAST_KDF, chunker=SMALL_CHUNKS
    )
    with r:
        backup_paths(r, [data], meta=SnapshotMeta(host="h"), workers=1)
    return data, big


def test_view_resolves_and_reads(snapshot_repo: tuple[Path, bytes], tmp_path: Path) -> None:
    _, big = snapshot_repo
    with Repository.open(FileStorage(tmp_path / "repo"), "s3cret-pass") as r:
        (snap,) = r.snapshots()
        fs = SnapshotFS(r, [snap])
        root = fs.lookup("/")
        assert root is not None
        assert ["ids", "latest", "snapshots"] == fs.listdir(root)
        latest = fs.lookup("/latest")
        assert latest is not None
        assert latest.target is not None
        assert latest.target.startswith("snapshots/")
        by_id = fs.lookup(f"/ids/{snap.short_id}")
        assert by_id is not None
        assert ["data"] == fs.listdir(by_id)
        f = fs.lookup(f"/{latest.target}/data/sub/{UNI}")
        assert f is not None
        assert f.node is not None
        assert len(big) == f.size
        assert 1 < len(f.node.content)  # several chunks: reads cross their borders
        assert big == fs.read(f.node, 0, len(big) + 100)
        for offset, size in [(0, 1), (16_383, 70_000), (len(big) - 5, 100), (len(big), 10)]:
            assert big[offset : offset + size] == fs.read(f.node, offset, size)
        nl = fs.lookup(f"/ids/{snap.short_id}/data/{NL}")
        assert nl is not None
        assert nl.node is not None
        assert b"newline" == fs.read(nl.node, 0, 100)
        assert fs.lookup("/ids/nothing") is None
        assert fs.lookup(f"/ids/{snap.short_id}/data/nothing") is None
        assert fs.lookup(f"/ids/{snap.short_id}/data/{NL}/below") is None
        link = fs.lookup(f"/ids/{snap.short_id}/data/link")
        assert link is not None
        assert "sub" == link.target


def _fuse_unavailable() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"mfusepy or libfuse is missing: {exc}"
    if not (shutil.which("fusermount") or shutil.which("fusermount3")):
        return "fusermount is missing"
    return None


def _wait_mounted(proc: subprocess.Popen[bytes], mnt: Path, log: Path) -> None:
    deadline = time.monotonic() + 60
    while not os.path.ismount(mnt):
        if proc.poll() is not None:
            err = log.read_text(errors="replace")
            if "cannot mount" in err or "fuse" in err.lower():
                pytest.skip(f"FUSE does not work here: {err.strip()}")
            raise AssertionError(f"mount exited with {proc.returncode}: {err}")
        if time.monotonic() > deadline:
            raise AssertionError("the mount did not appear within 60 s")
        time.sleep(0.1)


def test_fuse_mount(snapshot_repo: tuple[Path, bytes], tmp_path: Path) -> None:
    reason = _fuse_unavailable()
    if reason:
        pytest.skip(reason)
    _, big = snapshot_repo
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    env.update(SAFEHOLD_REPO=str(tmp_path / "repo"), SAFEHOLD_PASSWORD="s3cret-pass")
    log = tmp_path / "mount.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "safehold", "mount", str(mnt), "--host", "h"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    try:
        _wait_mounted(proc, mnt, log)
        assert ["ids", "latest", "snapshots"] == sorted(os.listdir(mnt))
        data = mnt / "latest" / "data"
        assert sorted(["sub", NL, "empty", "link"]) == sorted(os.listdir(data))
        assert big == (data / "sub" / UNI).read_bytes()
        with (data / "sub" / UNI).open("rb") as f:
            f.seek(123_456)
            assert big[123_456 : 123_456 + 50_000] == f.read(50_000)
        assert "newline" == (data / NL).read_text()
        assert b"" == (data / "empty").read_bytes()
        assert "sub" == os.readlink(data / "link")
        assert len(big) == (data / "sub" / UNI).stat().st_size
        with pytest.raises(OSError, match="Read-only file system") as exc:
            (data / "new-file").write_text("x")
        assert errno.EROFS == exc.value.errno
        with pytest.raises(OSError, match="Read-only file system"):
            (data / NL).unlink()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # libfuse unmounts on SIGINT
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                subprocess.run(["fusermount", "-u", str(mnt)], check=False)
                proc.kill()
                proc.wait()
    assert not os.path.ismount(mnt)
    assert 0 == proc.returncode, log.read_text(errors="replace")
    assert "Traceback" not in log.read_text(errors="replace")
