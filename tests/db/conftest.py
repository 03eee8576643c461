"""
Fixtures for the database tests: throw-away PostgreSQL clusters on free ports.

Each cluster is made with ``initdb`` in a directory of its own under /tmp, owned
by the ``postgres`` OS user (the tests run as root, and PostgreSQL refuses root).
Its ``archive_command`` is the real ``safehold pg archive-push`` with a spool;
the server at 5432 is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from safehold.db import LocalServer, free_port
from safehold.db.server import find_bindir
from safehold.repo import KdfParams, Repository
from safehold.storage.file import FileStorage

FAST_KDF = KdfParams(n=1024, r=8, p=1)
PASSWORD = "correct horse battery staple"


def _pg_available() -> bool:
    try:
        return (find_bindir() / "initdb").exists() and shutil.which("runuser") is not None
    except Exception:
        return False


needs_pg = pytest.mark.skipif(
    not _pg_available(), reason="PostgreSQL's programs (initdb, runuser) are not installed"
)


def python_argv() -> list[str]:
    """
    How the ``postgres`` OS user runs this safehold's Python: the venv's
    interpreter if it may, else the system's Python (same version) with the
    venv's packages (here the venv's interpreter lives under /root).
    """
    exe = sys.executable
    probe = ["runuser", "-u", "postgres", "--", exe, "-c", "pass"]
    if os.geteuid() != 0 or subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return [exe]
    site = sysconfig.get_paths()["purelib"]
    src = str(Path(__file__).resolve().parents[2] / "src")
    return ["env", f"PYTHONPATH={site}:{src}", "/usr/bin/python3"]


def give_to_postgres(path: Path) -> None:
    """chown -R postgres (the tests run as root)."""
    subprocess.run(["chown", "-R", "postgres:postgres", str(path)], check=True)


@dataclass
class Env:
    """A test's world: a working directory, a repository, a password file and a spool."""

    root: Path
    repo_path: Path
    password_file: Path
    spool: Path

    def open_repo(self) -> Repository:
        return Repository.open(FileStorage(self.repo_path), PASSWORD)

    def archive_command(self, *, spool_max: int | None = None) -> str:
        argv = [*python_argv(), "-m", "safehold.db.hook", "push", "%p", "--spool", str(self.spool)]
        argv += ["--repo", str(self.repo_path), "--password-file", str(self.password_file)]
        if spool_max is not None:
            argv += ["--spool-max", str(spool_max)]
        return " ".join(argv)

    def make_cluster(
        self, name: str = "pg", *settings: str, spool_max: int | None = None
    ) -> LocalServer:
        server = LocalServer(self.root / name, free_port(), find_bindir())
        server.initdb(
            "wal_level = replica",
            "archive_mode = on",
            f"archive_command = '{self.archive_command(spool_max=spool_max)}'",
            "track_commit_timestamp = on",
            "fsync = off",
            "shared_buffers = 16MB",
            "max_wal_senders = 4",
            *settings,
        )
        server.start()
        return server


@contextmanager
def make_env() -> Iterator[Env]:
    """A fresh world under /tmp, given to the postgres user; every server in it stopped after."""
    root = Path(tempfile.mkdtemp(prefix="safehold-db-", dir="/tmp"))
    root.chmod(0o755)
    repo_path = root / "repo"
    Repository.init(FileStorage(repo_path), PASSWORD, kdf=FAST_KDF).close()
    pw = root / "password"
    pw.write_text(PASSWORD)
    pw.chmod(0o600)
    spool = root / "spool"
    spool.mkdir()
    give_to_postgres(root)
    try:
        yield Env(root, repo_path, pw, spool)
    finally:
        for p in root.iterdir():
            if (p / "postmaster.pid").exists():
                LocalServer(p, 0, find_bindir()).stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def env() -> Iterator[Env]:
    with make_env() as e:
        yield e
