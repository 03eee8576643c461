"""
TarIngest stores a window's pages in a thread while it reads the next: what it
stores restores exactly, and a failure in that thread fails the ingest.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from safehold.core.snapshot import SnapshotMeta, SnapshotSizes
from safehold.db.pagetar import TarIngest, make_snapshot
from safehold.repo import Repository, check, restore
from safehold.repo.writer import BlobWriter
from tests.conftest import reopen


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _members() -> dict[str, bytes]:
    text = b"".join(b"%08d|pgbench row|%d\n" % (i, i % 97) for i in range(40_000))
    # Several 1 MiB windows per file, pages repeated across windows and files,
    # and a tail that is not a whole page.
    heap = (text[: 3 << 20] + bytes(1 << 20) + os.urandom(1 << 20))[: (5 << 20) + 5000]
    return {
        "PG_VERSION": b"15\n",
        "base/5/16384": heap,
        "base/5/16385": heap[: 2 << 20] + os.urandom(100_000),
        "global/pg_control": b"\x07" * 8 + bytes(8184),
    }


def test_pages_stored_in_the_page_thread_restore_exactly(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    members = _members()
    with BlobWriter(repo) as w:
        res = TarIngest(repo, w, root_name="pgdata").run(io.BytesIO(_tar(members)))
        w.flush()
    assert res.new < res.logical  # repeated pages stored once
    snap = repo.save_snapshot(
        make_snapshot(SnapshotMeta(), tree=res.tree, root_name="pgdata", sizes=SnapshotSizes())
    )
    r = reopen(repo_path)
    assert check(r, read_data=1.0).errors == []
    restore(r, r.find_snapshot(snap.id), tmp_path / "out")
    for name, data in members.items():
        assert (tmp_path / "out" / "pgdata" / name).read_bytes() == data


def test_a_failure_in_the_page_thread_fails_the_ingest(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    with BlobWriter(repo) as w:
        real = w.store_many

        def failing(*args: object) -> None:
            calls.append(1)
            if len(calls) == 3:
                raise OSError("disk full")
            real(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(w, "store_many", failing)
        with pytest.raises(OSError, match="disk full"):
            TarIngest(repo, w, root_name="pgdata").run(io.BytesIO(_tar(_members())))
    assert len(calls) >= 3
