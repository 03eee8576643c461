"""
Delta chunk lists (docs/format.md § Delta chunk lists): every walker follows them.

A file node that holds its ids as a list blob plus a patch must be followed by
prune (or its pages and list blob go), check, restore, dump, diff, stats, the
mounted view and copy. Each test here fails if that walker reads only the node.
"""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from safehold.core.snapshot import Snapshot
from safehold.repo import Repository, check, copy_snapshots, dump, forget, prune, restore
from safehold.repo.diff import diff_snapshots
from safehold.repo.errors import IntegrityError
from safehold.repo.fs import SnapshotFS
from safehold.repo.pack import DATA, TREE, pack_name
from safehold.repo.prune import used_blobs
from safehold.repo.stats import stats
from safehold.repo.tree import (
    REBASE_SHARE,
    ChunkList,
    Node,
    Tree,
    UnresolvedContent,
    chunk_list_for,
    content_ids,
    decode_list,
    encode_list,
)
from safehold.repo.writer import BlobWriter
from safehold.storage.file import FileStorage
from tests.conftest import FAST_KDF, reopen

_PAGE = 256
_PAGES = 400


def _save(
    repo: Repository,
    pages: list[bytes],
    base: tuple[bytes, list[bytes]] | None = None,
    *,
    list_id: bytes | None = None,
) -> tuple[Snapshot, ChunkList, list[bytes]]:
    """A snapshot of one directory holding one file as a delta chunk list over *base*."""
    with BlobWriter(repo) as w:
        ids = [w.save(DATA, p)[0] for p in pages]
        cl = chunk_list_for(ids, lambda d: w.save(TREE, d)[0], base)
        if list_id is not None:  # a list blob that the repository does not hold
            cl = ChunkList(list_id, len(ids), tuple(enumerate(ids))[1:])
        node = Node("big", "file", mode=0o100600, size=sum(map(len, pages)))
        node.set_chunk_list(cl)
        small = Node("small", "file", mode=0o100600, size=5, content=[w.save(DATA, b"hello")[0]])
        sub, _ = w.save(TREE, Tree([node, small]).serialize())
        root, _ = w.save(TREE, Tree([Node("data", "dir", mode=0o40700, subtree=sub)]).serialize())
        w.flush()
    snap = repo.save_snapshot(
        Snapshot(
            id="", time=datetime.now(UTC), host="h", user="u", paths=("data",), tree=root.hex()
        )
    )
    return snap, cl, ids


def _pages(n: int = _PAGES) -> list[bytes]:
    return [os.urandom(_PAGE) for _ in range(n)]


def _two(repo: Repository) -> tuple[list[bytes], list[bytes], Snapshot, Snapshot, ChunkList]:
    """A base snapshot (new list blob) and one with 5 pages changed and 3 added (a patch)."""
    old = _pages()
    first, cl1, ids1 = _save(repo, old)
    assert cl1.patch == ()
    new = list(old)
    for i in (0, 7, 100, 101, 399):
        new[i] = os.urandom(_PAGE)
    new += _pages(3)
    second, cl2, _ = _save(repo, new, (cl1.list_id, ids1))
    assert cl2.list_id == cl1.list_id
    assert len(cl2.patch) == 8
    return old, new, first, second, cl2


def _restored(repo: Repository, snap: Snapshot, out: Path) -> bytes:
    restore(repo, snap, out)
    return (out / "data" / "big").read_bytes()


def test_prune_after_forgetting_the_base_snapshot_keeps_the_list_blob_and_every_page(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    _, new, first, second, cl = _two(repo)
    repo.close()
    r = reopen(repo_path)
    assert forget(r, [first.id]) == 1
    wanted = {cl.list_id, *content_ids(_node(r, second), r.read_blob)}
    used = used_blobs(r)
    assert wanted <= used
    assert len(used) == 2 + len(wanted) + 1
    assert prune(r).blobs_used == len(used)
    r = reopen(repo_path)
    assert r.index.has(cl.list_id)
    assert all(r.index.has(i) for i in content_ids(_node(r, second), r.read_blob))
    assert check(r, read_data=1.0).errors == []
    assert _restored(r, second, tmp_path / "out") == b"".join(new)


def _node(repo: Repository, snap: Snapshot, name: str = "big") -> Node:
    root = Tree.parse(repo.read_blob(bytes.fromhex(snap.tree))).nodes[0]
    assert root.subtree is not None
    return next(n for n in Tree.parse(repo.read_blob(root.subtree)).nodes if n.name == name)


def test_restore_dump_mount_diff_and_stats_follow_the_list(
    repo: Repository, tmp_path: Path
) -> None:
    old, new, first, second, cl = _two(repo)
    assert _restored(repo, first, tmp_path / "a") == b"".join(old)
    assert _restored(repo, second, tmp_path / "b") == b"".join(new)
    out = io.BytesIO()
    assert dump(repo, second, out, "data/big") == len(b"".join(new))
    assert out.getvalue() == b"".join(new)
    fs = SnapshotFS(repo, [first, second])
    node = _node(repo, second)
    assert fs.read(node, 7 * _PAGE - 10, 20) == b"".join(new)[7 * _PAGE - 10 : 7 * _PAGE + 10]
    assert fs.read(node, len(b"".join(new)) - 5, 100) == b"".join(new)[-5:]
    changes = diff_snapshots(repo, first, second).changes
    assert [(c.kind, c.path) for c in changes] == [("M", "data/big")]
    same, _, _ = _save(repo, new, (cl.list_id, decode_list(repo.read_blob(cl.list_id))))
    assert diff_snapshots(repo, second, same).changes == []
    s = stats(repo, [second])
    # 2 trees, the list blob, 403 pages and the small file's chunk
    assert s.blobs == 2 + 1 + len(new) + 1


def test_check_finds_a_missing_list_blob(repo: Repository) -> None:
    _save(repo, _pages(20), list_id=os.urandom(32))
    report = check(repo)
    assert not report.ok
    assert "data/big (its chunk list:" in report.errors[0]
    assert "not in any index" in report.errors[0]


@pytest.mark.parametrize("read_data", [0.0, 1.0])
def test_check_finds_a_damaged_list_blob_and_restore_refuses_the_file(
    repo: Repository, repo_path: Path, tmp_path: Path, read_data: float
) -> None:
    _, _, _, second, cl = _two(repo)
    loc = repo.locate(cl.list_id)
    path = repo_path / pack_name(loc.pack.id)
    data = bytearray(path.read_bytes())
    data[loc.entry.offset + loc.entry.length // 2] ^= 0x01
    path.write_bytes(bytes(data))
    r = reopen(repo_path)
    report = check(r, read_data=read_data)
    assert not report.ok
    assert any("data/big (its chunk list:" in p for p in report.damaged_files[second.id])
    with pytest.raises(IntegrityError, match=r"data/big: pack .* is damaged"):
        restore(r, second, tmp_path / "out")
    assert (tmp_path / "out" / "data" / "small").read_bytes() == b"hello"
    assert not (tmp_path / "out" / "data" / "big").exists()


def test_copy_carries_the_list_blob_and_the_pages(
    repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    _old, new, first, second, _ = _two(repo)
    dst = Repository.init(FileStorage(tmp_path / "dst"), "other", kdf=FAST_KDF)
    result = copy_snapshots(reopen(repo_path), dst)
    assert len(result.copied) == 2
    copies = {s.original: s for s in dst.snapshots()}
    a, b = copies[first.id], copies[second.id]
    na, nb = _node(dst, a), _node(dst, b)
    assert na.chunk_list is not None
    assert nb.chunk_list is not None
    assert nb.chunk_list.list_id == na.chunk_list.list_id  # one list blob, and a patch
    assert len(nb.chunk_list.patch) == 8
    assert check(dst, read_data=1.0).errors == []
    dst_path = tmp_path / "dst"
    forget(dst, [a.id])
    prune(Repository.open(FileStorage(dst_path), "other"))
    d = Repository.open(FileStorage(dst_path), "other")
    assert check(d, read_data=1.0).errors == []
    assert _restored(d, b, tmp_path / "out") == b"".join(new)


def test_reading_a_delta_nodes_content_directly_raises(repo: Repository) -> None:
    _, _, _, second, _ = _two(repo)
    node = _node(repo, second)
    for use in (list, len, bool, set, b"".join, lambda c: c[0], lambda c: c == []):
        with pytest.raises(UnresolvedContent):
            use(node.content)


def test_an_older_reader_refuses_a_delta_node_rather_than_reading_an_empty_file() -> None:
    node = Node("big", "file", size=10)
    node.set_chunk_list(ChunkList(b"\1" * 32, 2, ((1, b"\2" * 32),)))
    doc = json.loads(Tree([node]).serialize())["nodes"][0]
    # What versions before the addition did with "content": fail (the tree is invalid).
    with pytest.raises(ValueError, match="non-hexadecimal"):
        [bytes.fromhex(c) for c in doc.get("content", ())]
    back = Tree.parse(Tree([node]).serialize()).nodes[0]
    assert back.chunk_list == node.chunk_list


@pytest.mark.parametrize(
    "content",
    [
        {"list": "00" * 32, "len": 2, "patch": [[2, "11" * 32]]},  # past the end
        {"list": "00" * 32, "len": 3, "patch": [[1, "11" * 32], [1, "22" * 32]]},  # not increasing
        {"list": "00" * 31, "len": 2, "patch": []},  # a short id
        {"list": "00" * 32, "len": -1, "patch": []},
        {"list": "00" * 32, "len": True, "patch": []},
    ],
)
def test_malformed_chunk_lists_make_the_tree_invalid(content: object) -> None:
    doc = {"nodes": [{"name": "f", "type": "file", "size": 1, "content": content}]}
    with pytest.raises(ValueError, match=r"chunk list|blob id"):
        Tree.parse(json.dumps(doc).encode())


def test_a_list_blob_shorter_than_its_patch_needs_is_damage() -> None:
    node = Node("f", "file")
    base = [b"\1" * 32]
    node.set_chunk_list(ChunkList(b"\0" * 32, 3, ((2, b"\2" * 32),)))
    with pytest.raises(IntegrityError, match="shorter than its patch"):
        content_ids(node, lambda _: encode_list(base))


def test_a_patch_past_the_rebase_share_writes_a_new_list_blob() -> None:
    saved: list[bytes] = []

    def save(data: bytes) -> bytes:
        saved.append(data)
        return bytes([len(saved)]) * 32

    old = [os.urandom(32) for _ in range(100)]
    small = list(old)
    for i in range(int(100 * REBASE_SHARE)):
        small[i] = os.urandom(32)
    cl = chunk_list_for(small, save, (b"\0" * 32, old))
    assert (cl.list_id, len(cl.patch), saved) == (b"\0" * 32, 25, [])
    small[50] = os.urandom(32)
    cl = chunk_list_for(small, save, (b"\0" * 32, old))
    assert cl.patch == ()
    assert decode_list(saved[0]) == small
    shorter = chunk_list_for(old[:60], save, (b"\0" * 32, old))
    assert (shorter.length, shorter.patch) == (60, ())
    assert content_ids(_with(shorter), lambda _: encode_list(old)) == old[:60]


def _with(cl: ChunkList) -> Node:
    node = Node("f", "file")
    node.set_chunk_list(cl)
    return node
