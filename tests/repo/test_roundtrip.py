"""Backups restore byte for byte, with their metadata, whatever the tree holds."""

from __future__ import annotations

import os
import shutil
import string
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safehold.core.snapshot import SnapshotMeta
from safehold.repo import Repository, backup_paths, restore
from tests.conftest import reopen, tree_state

names = st.text(
    alphabet=st.sampled_from(list(string.ascii_letters + string.digits + " -_.,'\"\n\t$*?é漢ü🙂")),
    min_size=1,
    max_size=12,
).filter(lambda n: n not in (".", "..") and "/" not in n)
contents = st.one_of(
    st.binary(max_size=2000),
    st.builds(lambda n, seed: os.urandom(n), st.integers(0, 300_000), st.integers()),
    st.builds(lambda n: b"log line 42\n" * n, st.integers(0, 50_000)),
)


@st.composite
def trees(draw: st.DrawFn, depth: int = 2) -> dict[str, object]:
    entries: dict[str, object] = {}
    for name in draw(st.lists(names, max_size=6, unique_by=str.lower)):
        kind = draw(
            st.sampled_from(["file", "file", "dir", "link", "empty"] if depth else ["file", "link"])
        )
        if kind == "dir":
            entries[name] = draw(trees(depth=depth - 1))
        elif kind == "link":
            entries[name] = ("link", draw(names))
        elif kind == "empty":
            entries[name] = {}
        else:
            entries[name] = draw(contents)
    return entries


def build(root: Path, spec: dict[str, object], mode_seed: int = 0) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i, (name, value) in enumerate(spec.items()):
        p = root / name
        if isinstance(value, dict):
            build(p, value, mode_seed + i)
            p.chmod(0o750 if (mode_seed + i) % 2 else 0o755)
        elif isinstance(value, tuple):
            p.symlink_to(value[1])
        else:
            assert isinstance(value, bytes)
            p.write_bytes(value)
            p.chmod(0o600 if (mode_seed + i) % 3 == 0 else 0o644)
            os.utime(p, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + i * 1000))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=trees())
def test_round_trip_is_exact(tmp_path_factory: object, spec: dict[str, object]) -> None:
    """Whatever the names, links, empty directories and sizes, restore gives back the same tree."""
    from safehold.storage.file import FileStorage
    from tests.conftest import FAST_KDF, PASSWORD

    base = Path(tmp_path_factory.mktemp("rt"))  # type: ignore[attr-defined]
    src = base / "src"
    build(src, spec)
    repo = Repository.init(FileStorage(base / "repo"), PASSWORD, pack_size=128 * 1024, kdf=FAST_KDF)
    snap = backup_paths(repo, [src]).snapshot
    restore(reopen(base / "repo"), snap, base / "out")
    assert tree_state(src) == tree_state(base / "out" / "src")
    shutil.rmtree(base)


def test_special_files_round_trip(repo: Repository, repo_path: Path, tmp_path: Path) -> None:
    """Hard links, sparse files, empty files, xattrs and odd names survive a round trip."""
    src = tmp_path / "src"
    (src / "-dash dir" / "new\nline").mkdir(parents=True)
    (src / "a").write_bytes(b"shared content" * 100)
    os.link(src / "a", src / "-dash dir" / "hard link to a")
    (src / "empty").write_bytes(b"")
    with (src / "sparse").open("wb") as f:
        f.seek(50 * 1024 * 1024)
        f.write(b"end")
    os.setxattr(src / "a", "user.note", b"keep me")
    (
        src / "bad\udcffbyte".encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
    ).write_bytes(b"x")
    snap = backup_paths(repo, [src]).snapshot
    out = tmp_path / "out"
    restore(reopen(repo_path), snap, out)
    assert tree_state(src) == tree_state(out / "src")
    assert (
        os.stat(out / "src" / "a").st_ino
        == os.stat(out / "src" / "-dash dir" / "hard link to a").st_ino
    )
    assert b"keep me" == os.getxattr(out / "src" / "a", "user.note")
    # The 50 MiB hole stays a hole: far fewer blocks than bytes.
    assert os.stat(out / "src" / "sparse").st_blocks * 512 < 5 * 1024 * 1024


def test_unchanged_files_are_not_read_again(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """A second backup takes unchanged files from the parent and stores nothing new for them."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}").write_bytes(os.urandom(10_000))
    backup_paths(repo, [src])
    (src / "f3").write_bytes(b"changed")
    second = backup_paths(reopen(repo_path), [src])
    assert (0, 1, 19) == (second.files_new, second.files_changed, second.files_unmodified)
    assert len(b"changed") == second.bytes_read


def test_snapshot_manifest_carries_service_fields(repo: Repository, tmp_path: Path) -> None:
    """Partition identity, chain and LSN given to a backup come back from the stored manifest."""
    from safehold.core.snapshot import Epoch, PartitionRef

    (tmp_path / "d").mkdir()
    meta = SnapshotMeta(
        tags=("nightly",),
        partition=PartitionRef("fabric:/Shop", "fabric:/Shop/Orders", "6f1c..."),
        backup_type="incremental",
        chain_id="chain-1",
        epoch=Epoch(2, 7),
        lsn=4242,
    )
    snap = backup_paths(repo, [tmp_path / "d"], meta=meta).snapshot
    loaded = repo.find_snapshot(snap.id[:10])
    assert (meta.partition, "incremental", "chain-1", Epoch(2, 7), 4242, ("nightly",)) == (
        loaded.partition,
        loaded.backup_type,
        loaded.chain_id,
        loaded.epoch,
        loaded.lsn,
        loaded.tags,
    )
