"""
Choosing snapshots and paths on a real repository: ``latest`` with --host,
--tag and --path, absolute source paths in ls/restore/dump, a damaged newest
snapshot (issue 9), and forget's grouping.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safehold.core.snapshot import Snapshot, SnapshotMeta, SnapshotSizes
from safehold.repo import Repository, backup_paths
from safehold.storage.file import FileStorage
from tests.cli.conftest import Run
from tests.conftest import FAST_KDF

PASSWORD = "s3cret-pass"  # the cli_env fixture's

NEWLINE_NAME = "new\nline.txt"
UNICODE_NAME = "données-ü-日本.txt"


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text("a")
    (root / "sub" / NEWLINE_NAME).write_text("newline")
    (root / UNICODE_NAME).write_text("unicode")
    return root


def _snapshots(run: Run, *args: str) -> list[dict[str, object]]:
    out = run("snapshots", "--json", *args, check=True).stdout
    return list(json.loads(out))


def _ls(run: Run, *args: str) -> list[str]:
    return [e["path"] for e in json.loads(run("ls", "--json", *args, check=True).stdout)]


def _repo(tmp_path: Path) -> Repository:
    """The repository the CLI fixtures point at, made in-process (fast) with cheap scrypt."""
    return Repository.init(FileStorage(tmp_path / "repo"), PASSWORD, kdf=FAST_KDF)


def _open(tmp_path: Path) -> Repository:
    return Repository.open(FileStorage(tmp_path / "repo"), PASSWORD)


def _backup(r: Repository, *paths: Path, host: str = "h0", tags: tuple[str, ...] = ()) -> str:
    meta = SnapshotMeta(host=host, tags=tags)
    return backup_paths(r, list(paths), meta=meta, workers=1).snapshot.id


@pytest.fixture
def two_sources(run: Run, tmp_path: Path) -> tuple[Path, Path]:
    """A repository with data/ (host h1, tags web and daily), logs/ (host h2), then a dump."""
    data = _tree(tmp_path / "x" / "data")
    logs = tmp_path / "y" / "logs"
    logs.mkdir(parents=True)
    (logs / "l.log").write_text("log")
    with _repo(tmp_path) as r:
        _backup(r, data, host="h1", tags=("web", "daily"))
        _backup(r, logs, host="h2")
    # The dump through the CLI: --host and --tag as a user gives them.
    run("backup", "--stdin", "--stdin-name", "dump.sql", "--host", "h1", input="SQL", check=True)
    return data, logs


def test_latest_follows_the_filters(run: Run, two_sources: tuple[Path, Path]) -> None:
    data, logs = two_sources
    assert ["/dump.sql"] == _ls(run, "latest")  # the newest of anything: the dump
    assert str(data / "sub" / "a.txt") in _ls(run, "latest", "--path", str(data))
    assert [str(logs), str(logs / "l.log")] == _ls(run, "latest", "--host", "h2")
    assert str(data) == _ls(run, "latest", "--tag", "web")[0]
    assert str(data) == _ls(run, "latest", "--tag", "daily,web")[0]
    assert str(data) == _ls(run, "latest", "--tag", "nope", "--tag", "web")[0]  # either group
    assert ["/dump.sql"] == _ls(run, "latest", "--path", "/dump.sql")
    proc = run("ls", "latest", "--tag", "web,nope")
    assert 16 == proc.returncode
    assert "no snapshot matches tags web,nope" in proc.stderr
    proc = run("dump", "latest", "--host", "h1")
    assert "SQL" == proc.stdout


def test_snapshots_filters(run: Run, two_sources: tuple[Path, Path]) -> None:
    data, logs = two_sources
    assert 3 == len(_snapshots(run))
    assert [[str(data)], ["dump.sql"]] == [s["paths"] for s in _snapshots(run, "--host", "h1")]
    assert [[str(logs)]] == [s["paths"] for s in _snapshots(run, "--path", str(logs))]
    assert [] == _snapshots(run, "--host", "nobody")
    # A relative --path is taken from the current directory, as restic does.
    proc = run("snapshots", "--json", "--path", "relative/nothing")
    assert [] == json.loads(proc.stdout)


def test_absolute_paths_in_ls_restore_and_dump(
    run: Run, two_sources: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = two_sources
    sel = ("--path", str(data))
    listed = _ls(run, "latest", str(data / "sub"), *sel)
    assert [str(data / "sub"), str(data / "sub" / "a.txt"), str(data / "sub" / NEWLINE_NAME)] == (
        listed
    )
    assert listed == _ls(run, "latest", "/data/sub", *sel)  # the tree's own form still works
    assert 16 == run("ls", "latest", str(data / "nothing"), *sel).returncode
    target = tmp_path / "r"
    run("restore", "latest", "-t", str(target), "--include", str(data / "sub"), *sel, check=True)
    assert "newline" == (target / "data" / "sub" / NEWLINE_NAME).read_text()
    assert not (target / "data" / UNICODE_NAME).exists()
    out = run("dump", "latest", str(data / UNICODE_NAME), *sel, check=True).stdout
    assert "unicode" == out


def test_snapshot_without_absolute_paths_still_works(run: Run, tmp_path: Path) -> None:
    """A snapshot whose manifest does not hold absolute paths is read by its tree's names."""
    data = _tree(tmp_path / "data")
    with _repo(tmp_path) as r:
        _backup(r, data)
        (snap,) = r.snapshots()
        doc = snap.to_json()
        doc["paths"] = ["data"]
        old = r.save_snapshot(Snapshot.from_json("", doc))
        assert isinstance(old.sizes, SnapshotSizes)
    listed = _ls(run, old.id, "/data/sub")
    assert ["/data/sub", "/data/sub/a.txt", f"/data/sub/{NEWLINE_NAME}"] == listed


def _damage_newest(repo: Path, run: Run) -> str:
    newest = str(_snapshots(run)[-1]["id"])
    f = repo / "snapshots" / newest
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    return newest


def test_latest_with_a_damaged_newest_snapshot_fails(
    run: Run, tmp_path: Path, two_sources: tuple[Path, Path]
) -> None:
    """Issue 9: no silent restore of an older snapshot; exit 13 naming the file."""
    data, _ = two_sources
    older = _snapshots(run, "--path", str(data))[-1]["id"]
    with _open(tmp_path) as r:
        _backup(r, data)
    damaged = _damage_newest(tmp_path / "repo", run)
    target = tmp_path / "r"
    for args in (
        ("restore", "latest", "-t", str(target)),
        ("restore", "latest", "-t", str(target), "--path", str(data)),
        ("ls", "latest"),
        ("dump", "latest"),
    ):
        proc = run(*args)
        assert 13 == proc.returncode, args
        assert f"snapshots/{damaged}" in proc.stderr
        assert "--skip-damaged" in proc.stderr
    assert not target.exists()
    # Chosen explicitly, the older snapshot restores without a word.
    run("restore", str(older), "-t", str(target / "explicit"), check=True)
    # With the flag: a loud warning naming the damaged file and the snapshot used.
    proc = run(
        "restore", "latest", "-t", str(target / "flag"), "--path", str(data), "--skip-damaged"
    )
    assert 0 == proc.returncode, proc.stderr
    assert f"snapshots/{damaged}" in proc.stderr
    assert f"WARNING: 'latest' may not be the newest snapshot: using {older}" in proc.stderr
    assert "a" == (target / "flag" / "data" / "sub" / "a.txt").read_text()


def test_forget_groups_by_host_and_paths(run: Run, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    with _repo(tmp_path) as r:
        for _ in range(2):
            _backup(r, a)
            _backup(r, b)
            _backup(r, a, host="other")
        _backup(r, b, a)  # paths as a set: one group with "a b"
        _backup(r, a, b)

    def plan(*args: str) -> list[tuple[str, list[str], int]]:
        out = run("forget", "--keep-last", "1", "--dry-run", "--json", *args, check=True).stdout
        return [(g["host"], g["paths"], len(g["remove"])) for g in json.loads(out)["groups"]]

    groups = plan()
    assert 4 == len(groups)
    assert all(1 == removed for _, _, removed in groups)
    assert [sorted([str(a), str(b)])] == [p for _, p, _ in groups if len(p) == 2]
    assert [("other", [str(a)], 1)] == plan("--host", "other")
    assert {"h0", "other"} == {h for h, _, _ in groups}
    assert 3 == len(plan("--path", str(a)))  # every snapshot that includes a
    assert 1 == len(plan("--path", str(a), "--path", str(b)))
    assert [1, 5] == sorted(n for _, _, n in plan("--group-by", "host"))
    assert [7] == [n for _, _, n in plan("--group-by", "")]
    assert 8 == len(_snapshots(run))  # a dry run removes nothing
    proc = run("forget", "--keep-last", "1", "--group-by", "colour")
    assert 2 == proc.returncode
    assert "unknown field 'colour'" in proc.stderr


def test_tree_path_mapping() -> None:
    """Pure mapping rules: the longest source wins; '/' is the root entry 'root'."""
    from datetime import UTC, datetime

    from safehold.core.snapshot import SnapshotFilter

    snap = Snapshot(
        id="0" * 64,
        time=datetime.now(UTC),
        host="h",
        user="u",
        paths=("/", "/srv/da ta", "/srv/x\ny"),
        tree="00",
    )
    assert "da ta/sub" == snap.tree_path("/srv/da ta/sub/")
    assert "root/etc/passwd" == snap.tree_path("/etc/passwd")
    assert "x\ny" == snap.tree_path("/srv/x\ny")
    assert "" == snap.tree_path("/")  # the whole snapshot
    assert "/srv/da ta/sub" == snap.source_path("da ta/sub")
    assert "/etc" == snap.source_path("root/etc")
    assert "/" == snap.source_path("root")
    assert SnapshotFilter.parse(None, None, ["/srv/da ta/"]).matches(snap)
    assert not SnapshotFilter.parse(["other"], None, None).matches(snap)
    assert SnapshotFilter.parse(None, [" , "], None).is_empty()
