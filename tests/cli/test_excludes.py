"""
Excludes on a real repository: patterns, pattern files, ignore files, marker
files, sizes, one file system; unicode and newlines in names; and excludes that
match nothing change nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from safehold.core.errors import UsageError
from safehold.repo import Repository, backup_paths
from safehold.repo.exclude import CACHEDIR_SIGNATURE, ExcludeOptions, Excluder
from safehold.repo.restore import walk
from safehold.storage.file import FileStorage
from tests.cli.conftest import Run
from tests.conftest import FAST_KDF

NL = "line\nbreak.log"


def _tree(root: Path) -> Path:
    files = {
        "keep.txt": "k",
        "app.log": "log",
        "APP.LOG": "LOG",
        NL: "nl",
        "ünïcödé.tmp": "u",
        "ünïcödé.txt": "u",
        "src/main.py": "py",
        "src/build/out.o": "o",
        "src/cache/x.bin": "bin",
        "node_modules/pkg/index.js": "js",
        "big.iso": "x" * 5000,
        "tagged/.nobackup": "",
        "tagged/secret": "s",
        "header/.marker": "NOBACKUP please",
        "header/h": "h",
        "wrongheader/.marker": "something else",
        "wrongheader/w": "w",
        "cache/CACHEDIR.TAG": CACHEDIR_SIGNATURE.decode() + "\n",
        "cache/blob": "c",
        "fakecache/CACHEDIR.TAG": "not a signature",
        "fakecache/blob": "c",
        "proj/.safeholdignore": "# comment\n*.tmp\n/local/\n!important.tmp\nsub/deep.txt\n",
        "proj/a.tmp": "t",
        "proj/important.tmp": "i",
        "proj/local/l": "l",
        "proj/sub/local/l": "l",
        "proj/sub/deep.txt": "d",
        "proj/sub/b.tmp": "t",
        "other.tmp": "t",
    }
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return _tree(tmp_path / "data")


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(FileStorage(tmp_path / "repo"), "s3cret-pass", kdf=FAST_KDF)


def _paths(repo: Repository, data: Path, **options: object) -> set[str]:
    excludes = ExcludeOptions(**options)  # type: ignore[arg-type]
    snap = backup_paths(repo, [data], excludes=excludes, workers=1).snapshot
    return {p.removeprefix("data/") for p, _ in walk(repo, bytes.fromhex(snap.tree))}


def test_no_options_honours_only_ignore_files(repo: Repository, data: Path) -> None:
    got = _paths(repo, data)
    assert {"keep.txt", NL, "big.iso", "tagged/secret", "cache/blob"} <= got
    assert {"proj/important.tmp", "proj/sub/local/l"} <= got  # re-included; anchored
    assert {"proj/a.tmp", "proj/sub/b.tmp", "proj/local", "proj/sub/deep.txt"}.isdisjoint(got)
    assert "other.tmp" in got  # the ignore file covers only its own subtree
    assert "proj/.safeholdignore" in got
    assert "ünïcödé.tmp" in got


def test_patterns(repo: Repository, data: Path) -> None:
    got = _paths(
        repo,
        data,
        patterns=("*.log", "build/", f"{data}/src/cache", "node_modules", "*.tmp"),
        ipatterns=("keep.TXT",),
    )
    assert {"app.log", "src/build", "src/build/out.o", "src/cache", "node_modules"}.isdisjoint(got)
    assert {"keep.txt", "ünïcödé.tmp", "other.tmp"}.isdisjoint(got)
    assert NL not in got  # a newline in a name is an ordinary character
    assert {"APP.LOG", "src/main.py", "ünïcödé.txt", "src"} <= got  # case matters for -e
    assert "proj/important.tmp" in got  # .safeholdignore re-includes after the command line


def test_iexclude_and_unicode(repo: Repository, data: Path) -> None:
    got = _paths(repo, data, ipatterns=("*.log", "ÜNÏCÖDÉ.*"))
    assert {"app.log", "APP.LOG", NL, "ünïcödé.tmp", "ünïcödé.txt"}.isdisjoint(got)
    assert "keep.txt" in got


def test_double_star_and_path_suffix(repo: Repository, data: Path) -> None:
    got = _paths(repo, data, patterns=("src/**/*.o", "pkg/index.js", "**/sub/*.txt"))
    assert {"src/build/out.o", "node_modules/pkg/index.js"}.isdisjoint(got)
    assert {"src/build", "node_modules/pkg", "src/main.py"} <= got


def test_markers_sizes_and_caches(repo: Repository, data: Path) -> None:
    got = _paths(
        repo,
        data,
        if_present=(".nobackup", ".marker:NOBACKUP"),
        larger_than=4096,
        exclude_caches=True,
    )
    assert {"tagged", "tagged/secret", "header", "header/h", "big.iso"}.isdisjoint(got)
    assert {"wrongheader/w", "fakecache/blob", "keep.txt"} <= got
    assert "cache/CACHEDIR.TAG" in got
    assert "cache/blob" not in got


def test_excludes_that_match_nothing_change_nothing(repo: Repository, data: Path) -> None:
    """The same tree, to the byte: same root tree id."""
    plain = backup_paths(repo, [data], excludes=ExcludeOptions(), workers=1).snapshot
    options = ExcludeOptions(
        patterns=("*.nothing", "/no/such/path", "zzz/", "!keep.txt", "[z-z]q"),
        ipatterns=("NOTHING*",),
        if_present=(".absent",),
        larger_than=1 << 40,
        one_file_system=True,
        exclude_caches=False,
    )
    same = backup_paths(repo, [data], excludes=options, workers=1).snapshot
    assert plain.tree == same.tree


def test_no_ignore_files(repo: Repository, data: Path) -> None:
    got = _paths(repo, data, ignore_files=False)
    assert {"proj/a.tmp", "proj/local/l", "proj/sub/deep.txt"} <= got


def test_one_file_system(repo: Repository) -> None:
    """/dev/shm is a mount point of its own under /dev: kept, empty."""
    try:
        separate = os.stat("/dev/shm").st_dev != os.stat("/dev").st_dev
    except OSError:
        separate = False
    if not separate:
        pytest.skip("no separate file system under /dev to cross here")
    snap = backup_paths(
        repo, ["/dev"], excludes=ExcludeOptions(one_file_system=True), workers=1
    ).snapshot
    got = {p for p, _ in walk(repo, bytes.fromhex(snap.tree))}
    assert "dev/shm" in got
    assert not [p for p in got if p.startswith("dev/shm/")]


def test_invalid_pattern_is_a_usage_error(repo: Repository, data: Path) -> None:
    with pytest.raises(UsageError, match="exclude pattern"):
        Excluder.from_options(ExcludeOptions(patterns=("[z-a]",)))
    with pytest.raises(UsageError, match="exclude-if-present"):
        Excluder.from_options(ExcludeOptions(if_present=("a/b",)))


def test_cli_flags(run: Run, data: Path, tmp_path: Path) -> None:
    patterns = tmp_path / "excludes.txt"
    patterns.write_text("# build output\nbuild/\n\n*.log\n")
    ipatterns = tmp_path / "iexcludes.txt"
    ipatterns.write_text("KEEP.*\n")
    run("init", check=True)
    run(
        "backup",
        str(data),
        "--exclude",
        "node_modules",
        "-e",
        "*.nomatch",
        "--exclude-file",
        str(patterns),
        "--iexclude-file",
        str(ipatterns),
        "--iexclude",
        "ÜNÏCÖDÉ.TXT",
        "--exclude-if-present",
        ".nobackup",
        "--exclude-caches",
        "--exclude-larger-than",
        "4K",
        "--one-file-system",
        check=True,
    )
    out = run("ls", "latest", "--json", check=True).stdout
    got = {e["path"].removeprefix(str(data)) for e in json.loads(out)}
    gone = {"/node_modules", "/src/build", "/app.log", "/keep.txt", "/ünïcödé.txt", "/tagged"}
    assert gone.isdisjoint(got)
    assert {"/big.iso", "/cache/blob"}.isdisjoint(got)
    assert {"/APP.LOG", "/src/main.py", "/cache/CACHEDIR.TAG", "/ünïcödé.tmp"} <= got
    proc = run("backup", str(data), "--exclude-file", str(tmp_path / "missing"))
    assert 2 == proc.returncode
    assert "cannot read the pattern file" in proc.stderr
    proc = run("backup", str(data), "--exclude-larger-than", "lots")
    assert 2 == proc.returncode


def test_newline_at_the_end_of_a_name(repo: Repository, tmp_path: Path) -> None:
    """'/x/build' must not match '/x/build\\n' ($ would match before the newline)."""
    root = tmp_path / "nl"
    (root / "build\n").mkdir(parents=True)
    (root / "build\n" / "f").write_text("kept")
    (root / "build").mkdir()
    (root / "build" / "f").write_text("gone")
    got = _paths(repo, root, patterns=(f"{root}/build", "nl/build"))
    assert {"nl", "nl/build\n", "nl/build\n/f"} == got


def test_bad_ignore_file_is_warned_and_skipped(repo: Repository, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    (root / ".safeholdignore").write_text("[z-a]\n")
    (root / "f").write_text("f")
    result = backup_paths(repo, [root], excludes=ExcludeOptions(), workers=1)
    assert any("invalid exclude pattern" in w for w in result.warnings), result.warnings
    got = {p for p, _ in walk(repo, bytes.fromhex(result.snapshot.tree))}
    assert "bad/f" in got
