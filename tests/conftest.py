"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from safehold.repo import KdfParams, Repository
from safehold.storage.file import FileStorage


@pytest.fixture(scope="session", autouse=True)
def _own_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Local caches (index tables, files caches) under the session's temp dir, not ~/.cache."""
    old = os.environ.get("SAFEHOLD_CACHE_DIR")
    os.environ["SAFEHOLD_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("SAFEHOLD_CACHE_DIR", None)
    else:
        os.environ["SAFEHOLD_CACHE_DIR"] = old


# Cheap scrypt for tests that open repositories many times; the format is the same.
FAST_KDF = KdfParams(n=1024, r=8, p=1)
PASSWORD = "correct horse battery staple"


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    """Where a test's repository lives."""
    return tmp_path / "repo"


@pytest.fixture
def repo(repo_path: Path) -> Repository:
    """A fresh repository on the file backend, with small packs so tests make several."""
    return Repository.init(FileStorage(repo_path), PASSWORD, pack_size=256 * 1024, kdf=FAST_KDF)


def reopen(repo_path: Path, password: str = PASSWORD) -> Repository:
    """Open the repository at *repo_path* again, as a new process would."""
    return Repository.open(FileStorage(repo_path), password)


def tree_state(root: Path) -> dict[str, tuple[object, ...]]:
    """
    Describe a tree as a user would compare it: per relative path, the type,
    permission bits, mtime, content (or link target) and hard-link grouping.
    """
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode, st.st_mtime_ns)
            else:
                first = inodes.setdefault((st.st_dev, st.st_ino), rel) if st.st_nlink > 1 else rel
                out[rel] = ("file", mode, st.st_mtime_ns, p.read_bytes(), first)
    return out


@contextmanager
def scribbling(path: Path) -> Iterator[None]:
    """Keep rewriting the start of *path* (and its mtime) until the block ends."""
    stop = threading.Event()

    def scribble() -> None:
        with path.open("r+b") as f:
            while not stop.is_set():
                f.seek(0)
                f.write(os.urandom(4096))
                f.flush()
                os.utime(path)

    t = threading.Thread(target=scribble)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
