"""The database layer's pure parts and its archive on an in-memory repository."""

from __future__ import annotations

import io
import os
import tarfile
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safehold.core.snapshot import SnapshotMeta, SnapshotSizes
from safehold.db import DbError, WalArchive, WalConflict, WalMissing, run_pusher, spool_push
from safehold.db.pagetar import TarIngest, make_snapshot
from safehold.db.pgwal import Segment, format_lsn, parse_lsn, segment_of, wal_sysid
from safehold.db.spool import spool_pending, spool_take
from safehold.repo import KdfParams, Repository, restore
from safehold.repo.writer import BlobWriter
from safehold.storage.memory import MemoryStorage

FAST = KdfParams(n=1024, r=8, p=1)


@pytest.fixture
def mem_repo() -> Repository:
    return Repository.init(MemoryStorage(), "pw", kdf=FAST)


@given(st.integers(0, 2**64 - 1))
def test_lsn_text_round_trips(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn


@given(st.integers(1, 2**32 - 1), st.integers(0, 2**40), st.sampled_from([20, 24, 30]))
def test_segment_names_round_trip(tli: int, lsn: int, shift: int) -> None:
    seg = segment_of(tli, lsn, 1 << shift)
    assert Segment.parse(seg.name, 1 << shift) == seg
    assert seg.start_lsn <= lsn < seg.start_lsn + seg.size
    assert Segment.parse(seg.next().name, 1 << shift).number == seg.number + 1


def test_segment_names_match_postgresql() -> None:
    assert segment_of(1, parse_lsn("0/2000028")).name == "000000010000000000000002"
    assert segment_of(3, parse_lsn("1/FF000000")).name == "0000000300000001000000FF"
    assert Segment.parse("0000000100000001000000FF").next().name == "000000010000000200000000"
    with pytest.raises(ValueError, match="not an LSN"):
        parse_lsn("0x12")


def test_wal_header_gives_the_system_identifier() -> None:
    head = (0xD110).to_bytes(2, "little") + (2).to_bytes(2, "little") + bytes(20)
    head += (7_212_345_678_901_234_567).to_bytes(8, "little") + (16 << 20).to_bytes(4, "little")
    assert wal_sysid(head + bytes(8)) == (7_212_345_678_901_234_567, 16 << 20)
    assert wal_sysid(bytes(64)) is None  # not a long header


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
        d = tarfile.TarInfo("pg_wal")
        d.type, d.mode = tarfile.DIRTYPE, 0o700
        tf.addfile(d)
    return buf.getvalue()


def test_tar_stream_is_stored_page_by_page_and_restores_exactly(
    mem_repo: Repository, tmp_path: Path
) -> None:
    rel = os.urandom(8192 * 300 + 100)  # more than the 1 MiB window, a partial last page
    deep = "base/16384/" + "x" * 120  # a GNU long name
    members = {"PG_VERSION": b"15\n", "base/1/1259": rel, deep: b"abc", "backup_label": b"L"}
    with BlobWriter(mem_repo) as w:
        ingest = TarIngest(mem_repo, w, root_name="pgdata", capture=("backup_label",))
        res = ingest.run(io.BytesIO(_tar(members)))
        w.flush()
    assert res.captured == {"backup_label": b"L"}
    assert res.logical == sum(map(len, members.values()))
    snap = mem_repo.save_snapshot(
        make_snapshot(SnapshotMeta(), tree=res.tree, root_name="pgdata", sizes=SnapshotSizes())
    )
    restore(mem_repo, snap, tmp_path)
    for name, data in members.items():
        assert (tmp_path / "pgdata" / name).read_bytes() == data
    assert (tmp_path / "pgdata" / "pg_wal").is_dir()
    # One page changed: one new data blob, and the four trees above it.
    before = w.new_bytes
    blobs = len(mem_repo.index)
    changed = bytearray(rel)
    changed[8192 * 7 + 5] ^= 0xFF
    with BlobWriter(mem_repo) as w2:
        TarIngest(mem_repo, w2, root_name="pgdata").run(
            io.BytesIO(_tar({**members, "base/1/1259": bytes(changed)}))
        )
        w2.flush()
    assert before > 2_000_000
    assert len(mem_repo.index) - blobs == 1 + 4


def test_tar_stream_with_unsafe_or_truncated_members_is_refused(mem_repo: Repository) -> None:
    with BlobWriter(mem_repo) as w:
        with pytest.raises(DbError, match="unsafe path"):
            TarIngest(mem_repo, w, root_name="p").run(io.BytesIO(_tar({"../etc/x": b"1"})))
        with pytest.raises(DbError, match="ended"):
            TarIngest(mem_repo, w, root_name="p").run(io.BytesIO(_tar({"a": b"1" * 5000})[:1500]))


def test_wal_archive_push_is_idempotent_and_refuses_a_different_file(mem_repo: Repository) -> None:
    a = WalArchive(mem_repo, "pg-1")
    name = "000000010000000000000003"
    assert a.push(name, b"one")
    assert not a.push(name, b"one")
    with pytest.raises(WalConflict):
        a.push(name, b"two")
    a.push("00000002.history", b"1\t0/3000000\tno recovery target\n")
    a.push("000000010000000000000002.00000028.backup", b"label")
    assert set(a.list()) == {name, "00000002.history", "000000010000000000000002.00000028.backup"}
    assert a.get(name) == b"one"
    with pytest.raises(WalMissing):
        a.get("000000010000000000000004")
    with pytest.raises(DbError, match="not a WAL file name"):
        a.push("../x", b"")
    # stored sealed: the bytes are not in the object
    obj = a.lookup(name)
    assert b"one" not in mem_repo.storage.get(obj.key)


def test_spool_pushes_in_order_takes_and_drops_when_full(
    mem_repo: Repository, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    wal = tmp_path / "pg_wal"
    wal.mkdir()
    names = [f"0000000100000000000000{i:02X}" for i in range(1, 5)]
    for n in names:
        (wal / n).write_bytes(n.encode() * 100)
    for n in names[:3]:
        assert spool_push(spool, wal / n, max_bytes=7500).state == "spooled"
    assert spool_push(spool, wal / names[3], max_bytes=7500).state == "dropped"
    assert [p.name for p in spool_pending(spool)] == names[:3]
    archive = WalArchive(mem_repo, "pg-1")
    assert run_pusher(spool, lambda: archive, idle_exit=0.0) == 3
    assert spool_pending(spool) == []
    assert sorted(archive.list()) == names[:3]
    # A second pusher while one holds the lock does nothing.
    spool_push(spool, wal / names[3])
    started, release = threading.Event(), threading.Event()

    def slow() -> WalArchive:
        started.set()
        release.wait(5)
        return archive

    t = threading.Thread(target=run_pusher, args=(spool, slow), kwargs={"idle_exit": 0.0})
    t.start()
    started.wait(5)
    assert run_pusher(spool, lambda: archive) == 0
    release.set()
    t.join()
    assert names[3] in archive.list()
    # take: a fetched-ahead file moves into place once
    (spool / "in" / names[0]).write_bytes(b"x")
    assert spool_take(spool, names[0], tmp_path / "dest")
    assert not spool_take(spool, names[0], tmp_path / "dest")


def test_cli_refuses_a_time_without_a_zone_and_two_targets(tmp_path: Path) -> None:
    import subprocess
    import sys

    base = [sys.executable, "-m", "safehold", "pg", "restore", str(tmp_path / "d")]
    out = subprocess.run(
        [*base, "--time", "2026-01-01T00:00:00", "--repo", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "no time zone" in out.stderr
    out = subprocess.run(
        [*base, "--lsn", "0/1", "--name", "x", "--repo", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "at most one" in out.stderr


def test_every_public_name_of_the_lazy_package_resolves() -> None:
    import safehold.db

    for name in safehold.db.__all__:
        assert getattr(safehold.db, name) is not None
    with pytest.raises(AttributeError):
        _ = safehold.db.NoSuchThing  # type: ignore[attr-defined]
