"""``diff``, ``find`` and ``stats`` on a real repository, with unicode and newlines in names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from safehold.core.snapshot import SnapshotMeta
from safehold.repo import Repository, backup_paths
from safehold.storage.file import FileStorage
from tests.cli.conftest import Run
from tests.conftest import FAST_KDF

NL = "new\nline.sql"
UNI = "résumé-日本.txt"


@pytest.fixture
def two(run: Run, tmp_path: Path) -> tuple[str, str, Path]:
    """Two snapshots of data/, with every kind of change between them."""
    data = tmp_path / "data"
    (data / "dir").mkdir(parents=True)
    (data / "same.txt").write_text("same")
    (data / "gone.txt").write_text("gone")
    (data / "edit.txt").write_text("v1")
    (data / "meta.txt").write_text("meta")
    (data / "becomes_dir").write_text("file")
    (data / "dir" / UNI).write_text("unicode")
    r = Repository.init(FileStorage(tmp_path / "repo"), "s3cret-pass", kdf=FAST_KDF)
    with r:
        a = backup_paths(r, [data], meta=SnapshotMeta(host="h"), workers=1).snapshot.id
        (data / "gone.txt").unlink()
        (data / "edit.txt").write_text("version two")
        os.chmod(data / "meta.txt", 0o600)
        (data / "becomes_dir").unlink()
        (data / "becomes_dir").mkdir()
        (data / "becomes_dir" / "inner").write_text("in")
        (data / NL).write_text("SELECT 1;")
        b = backup_paths(r, [data], meta=SnapshotMeta(host="h"), workers=1).snapshot.id
    return a, b, data


def test_diff(run: Run, two: tuple[str, str, Path]) -> None:
    a, b, data = two
    out = json.loads(run("diff", a[:10], b, "--json", check=True).stdout)
    changes = {(c["change"], c["path"].removeprefix(str(data))) for c in out["changes"]}
    assert {
        ("-", "/gone.txt"),
        ("M", "/edit.txt"),
        ("U", "/meta.txt"),
        ("T", "/becomes_dir"),
        ("+", "/becomes_dir/inner"),
        ("+", "/" + NL),
        ("U", ""),  # the directory itself: its mtime changed
    } == changes
    assert (2, 1, 2) == (out["added_files"], out["removed_files"], out["changed_files"])
    text = run("diff", a, b, check=True).stdout
    assert f"-    {data}/gone.txt" in text
    assert f"M    {data}/edit.txt" in text
    same = json.loads(run("diff", b, "latest", "--json", check=True).stdout)
    assert [] == same["changes"]
    assert 16 == run("diff", a, "ffffffff").returncode


def test_find(run: Run, two: tuple[str, str, Path]) -> None:
    a, b, data = two
    out = json.loads(run("find", "*.sql", "--json", check=True).stdout)
    assert [(b, f"{data}/{NL}")] == [(m["snapshot"], m["path"]) for m in out]
    out = json.loads(run("find", "RÉSUMÉ-*", "--ignore-case", "--json", check=True).stdout)
    assert {a, b} == {m["snapshot"] for m in out}
    assert {f"{data}/dir/{UNI}"} == {m["path"] for m in out}
    out = json.loads(run("find", f"{data}/gone.*", "--json", check=True).stdout)
    assert [a] == [m["snapshot"] for m in out]
    out = json.loads(run("find", "inner", "-s", "latest", "--json", check=True).stdout)
    assert [b] == [m["snapshot"] for m in out]
    proc = run("find", "*.nothing")
    assert 16 == proc.returncode
    assert "nothing matches" in proc.stderr
    assert 16 == run("find", "*", "--host", "nobody").returncode


def test_stats(run: Run, two: tuple[str, str, Path]) -> None:
    a, _, _ = two
    first = json.loads(run("stats", a, "--json", check=True).stdout)
    # same, gone, edit(v1), meta, becomes_dir, dir/UNI: 6 files, 2 directories.
    assert (1, 6, 2) == (first["snapshots"], first["files"], first["dirs"])
    assert len("samegonev1metafileunicode") == first["restore_size"]
    both = json.loads(run("stats", "--json", check=True).stdout)
    second = json.loads(run("stats", "latest", "--json", check=True).stdout)
    assert both["restore_size"] == first["restore_size"] + second["restore_size"]
    assert 2 == both["snapshots"]
    # Shared chunks are counted once: both together store less than the sum.
    assert both["blobs"] < first["blobs"] + second["blobs"]
    assert both["raw_size"] < first["raw_size"] + second["raw_size"]
    assert 0 < both["stored_size"]
    text = run("stats", check=True).stdout
    assert "restore size:" in text
    assert "stored size:" in text
