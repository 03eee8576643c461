"""Base backups keep large files as delta chunk lists over their parent's (pagetar)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from safehold.core.snapshot import Snapshot, SnapshotMeta, SnapshotSizes
from safehold.db.pagetar import TarIngest, make_snapshot
from safehold.repo import Repository, check, forget, prune, restore
from safehold.repo.tree import LIST_MIN, Node, Tree
from safehold.repo.writer import BlobWriter
from tests.conftest import reopen

_PAGE = 512
_REL = "base/5/16384"


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _members(rel: bytes, sysid: int) -> dict[str, bytes]:
    control = sysid.to_bytes(8, "little") + b"\0" * 100
    return {
        "PG_VERSION": b"15\n",
        _REL: rel,
        "base/5/small": b"x" * 5000,
        "global/pg_control": control,
    }


def _backup(repo: Repository, members: dict[str, bytes], sysid: int) -> tuple[Snapshot, int]:
    """Ingest *members*; return the snapshot and how many blobs it added."""
    blobs = len(repo.index)
    with BlobWriter(repo) as w:
        res = TarIngest(
            repo, w, root_name="pgdata", chunk_size=_PAGE, capture=("global/pg_control",)
        ).run(io.BytesIO(_tar(members)))
        w.flush()
    meta = SnapshotMeta(tags=(f"pg-sysid={sysid}",))
    snap = repo.save_snapshot(
        make_snapshot(meta, tree=res.tree, root_name="pgdata", sizes=SnapshotSizes())
    )
    return snap, len(repo.index) - blobs


def _node(repo: Repository, snap: Snapshot, path: str) -> Node:
    tree_id = bytes.fromhex(snap.tree)
    *dirs, name = ["pgdata", *path.split("/")]
    for d in dirs:
        sub = next(n for n in Tree.parse(repo.read_blob(tree_id)).nodes if n.name == d).subtree
        assert sub is not None
        tree_id = sub
    return next(n for n in Tree.parse(repo.read_blob(tree_id)).nodes if n.name == name)


def test_a_changed_large_file_stores_a_patch_and_restores_exactly_after_prune(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    rel = os.urandom(_PAGE * (LIST_MIN + 76))
    first, _ = _backup(repo, _members(rel, 7), 7)
    base = _node(repo, first, _REL).chunk_list
    assert base is not None
    assert base.patch == ()
    assert _node(repo, first, "base/5/small").chunk_list is None  # short lists stay inline
    changed = bytearray(rel)
    for page in (3, 500, LIST_MIN + 70):
        changed[page * _PAGE + 9] ^= 0xFF
    second, added = _backup(repo, _members(bytes(changed), 7), 7)
    cl = _node(repo, second, _REL).chunk_list
    assert cl is not None
    assert cl.list_id == base.list_id
    assert [pos for pos, _ in cl.patch] == [3, 500, LIST_MIN + 70]
    assert added == 3 + 4  # three pages and four trees; no list blob
    repo.close()
    r = reopen(repo_path)
    forget(r, [first.id])
    prune(r)
    r = reopen(repo_path)
    assert check(r, read_data=1.0).errors == []
    restore(r, r.find_snapshot(second.id), tmp_path / "out")
    assert (tmp_path / "out" / "pgdata" / _REL).read_bytes() == bytes(changed)
    assert (tmp_path / "out" / "pgdata" / "base/5/small").read_bytes() == b"x" * 5000


def test_another_cluster_or_a_large_change_gets_a_list_blob_of_its_own(
    repo: Repository, tmp_path: Path
) -> None:
    rel = os.urandom(_PAGE * LIST_MIN)
    first, _ = _backup(repo, _members(rel, 7), 7)
    base = _node(repo, first, _REL).chunk_list
    assert base is not None
    other, _ = _backup(repo, _members(rel[::-1], 8), 8)  # another cluster: not its parent
    cl = _node(repo, other, _REL).chunk_list
    assert cl is not None
    assert cl.list_id != base.list_id
    assert cl.patch == ()
    rewritten = os.urandom(_PAGE * 400) + rel[_PAGE * 400 :]  # 39% of the pages: rebased
    again, _ = _backup(repo, _members(rewritten, 7), 7)
    cl = _node(repo, again, _REL).chunk_list
    assert cl is not None
    assert cl.list_id not in (base.list_id,)
    assert cl.patch == ()
    restore(repo, again, tmp_path / "out")
    assert (tmp_path / "out" / "pgdata" / _REL).read_bytes() == rewritten


def _page(special: int) -> bytes:
    """An 8 KiB PostgreSQL page: header (layout 4) with pd_special at *special*, then data."""
    lower, upper = 24 + 4 * 10, special - 400
    head = bytes(12) + b"".join(v.to_bytes(2, "little") for v in (lower, upper, special, 8196))
    return head + os.urandom(8192 - len(head))


def test_index_files_are_cut_at_one_page_and_tables_at_two(repo: Repository) -> None:
    index = b"".join(_page(8176) for _ in range(6))  # a special space: an index (btree)
    heap = b"".join(_page(8192) for _ in range(6))  # none: a table
    with BlobWriter(repo) as w:
        res = TarIngest(repo, w, root_name="pgdata", chunk_size=16384).run(
            io.BytesIO(_tar({"base/5/idx": index, "base/5/heap": heap, "odd": index[:-512]}))
        )
        w.flush()
    snap = repo.save_snapshot(
        make_snapshot(SnapshotMeta(), tree=res.tree, root_name="pgdata", sizes=SnapshotSizes())
    )
    assert len(_node(repo, snap, "base/5/idx").content) == 6
    assert len(_node(repo, snap, "base/5/heap").content) == 3
    assert len(_node(repo, snap, "odd").content) == 3  # not whole pages: not a relation
