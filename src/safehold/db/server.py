"""
A local PostgreSQL server, driven through its own programs.

Restore starts the restored cluster with this; tests and the benchmark make
throw-away clusters with it. When safehold runs as root, every PostgreSQL
program runs as *os_user* (``postgres`` by default) through ``runuser``,
because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safehold.db.errors import DbError, DbToolError
from safehold.repo.locks import pid_alive

__all__ = ["LocalServer", "find_bindir", "free_port"]


def find_bindir(bindir: str | os.PathLike[str] | None = None) -> Path:
    """
    The directory of PostgreSQL's programs: *bindir*, ``$PG_BINDIR``, or the
    newest ``/usr/lib/postgresql/*/bin``, or where ``pg_ctl`` is on the PATH.
    """
    if bindir is not None:
        return Path(bindir)
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2] or 0))
    if found:
        return Path(found[-1])
    which = shutil.which("pg_ctl")
    if which:
        return Path(which).parent
    raise DbError("PostgreSQL's programs were not found: set PG_BINDIR")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalServer:
    """A PostgreSQL data directory on this host and the server that runs it."""

    datadir: Path
    port: int
    bindir: Path
    os_user: str = "postgres"

    @classmethod
    def at(
        cls, datadir: str | os.PathLike[str], port: int, *, bindir: str | None = None
    ) -> LocalServer:
        """Describe a server; nothing is started."""
        return cls(Path(datadir), port, find_bindir(bindir))

    @property
    def logfile(self) -> Path:
        """Where the server's log goes: beside the data directory."""
        return self.datadir.with_name(self.datadir.name + ".log")

    @property
    def url(self) -> str:
        """A libpq URL for the ``postgres`` database as the OS user's role, over TCP."""
        return f"postgresql://{self.os_user}@127.0.0.1:{self.port}/postgres"

    def _argv(self, prog: str, *args: str) -> list[str]:
        argv = [str(self.bindir / prog), *args]
        if os.geteuid() == 0:
            return ["runuser", "-u", self.os_user, "--", *argv]
        return argv

    def run(self, prog: str, *args: str, check: bool = True, timeout: float = 120) -> str:
        """Run one of PostgreSQL's programs as the OS user; return its stdout."""
        proc = subprocess.run(
            self._argv(prog, *args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode:
            tail = (proc.stderr or proc.stdout)[-800:].strip()
            raise DbToolError(f"{prog} exited with status {proc.returncode}: {tail}")
        return proc.stdout

    def chown(self, path: Path) -> None:
        """Give *path* (recursively) to the OS user, when running as root."""
        if os.geteuid() == 0:
            shutil.chown(path, self.os_user, self.os_user)
            for dirpath, dirnames, filenames in os.walk(path):
                for n in dirnames + filenames:
                    os.lchown(os.path.join(dirpath, n), *_ids(self.os_user))

    def initdb(self, *settings: str) -> None:
        """Create the cluster (data checksums on) and append *settings* to its config."""
        self.datadir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.chown(self.datadir)
        self.run("initdb", "-D", str(self.datadir), "-A", "trust", "-k", "-N", "-U", self.os_user)
        self.append_config(f"port = {self.port}", "listen_addresses = '127.0.0.1'", *settings)

    def append_config(self, *lines: str) -> None:
        """Append settings to ``postgresql.auto.conf`` (read last, so they win)."""
        conf = self.datadir / "postgresql.auto.conf"
        with conf.open("a") as f:
            f.write("".join(line + "\n" for line in lines))
        self.chown(conf)

    def start(self, *, wait: bool = True) -> None:
        """Start the server in the background (``pg_ctl start``)."""
        sockdir = self.datadir.with_name(self.datadir.name + ".sock")
        sockdir.mkdir(exist_ok=True)
        self.chown(sockdir)
        self.logfile.touch()
        self.chown(self.logfile)
        self.run(
            "pg_ctl",
            "start",
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-o",
            f"-p {self.port} -k {sockdir}",
            "-w" if wait else "-W",
            "-t",
            "120",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if it runs."""
        if (self.datadir / "postmaster.pid").exists():
            self.run("pg_ctl", "stop", "-D", str(self.datadir), "-m", mode, "-w", check=False)

    def running(self) -> bool:
        """Whether the postmaster of this data directory is alive (by its pid file)."""
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return False
        return pid_alive(pid)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log."""
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def connect(self, dbname: str = "postgres", **kw: Any) -> Any:
        """A psycopg connection (autocommit) to the server."""
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.os_user,
            dbname=dbname,
            autocommit=True,
            **kw,
        )

    def wait_ready(self, timeout: float = 300.0) -> None:
        """
        Wait until the server accepts connections and is out of recovery.

        Raises:
            DbToolError: the server stopped (its log's tail says why) or the time ran out.
        """
        import psycopg

        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            try:
                with self.connect(connect_timeout=2) as conn:
                    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                    if row is not None and not row[0]:
                        return
            except psycopg.OperationalError:
                # pg_ctl start -W returns before the postmaster writes its pid file.
                if time.monotonic() - started > 5.0 and not self.running():
                    raise DbToolError(
                        f"the server stopped; the end of its log:\n{self.log_tail()}"
                    ) from None
            time.sleep(0.05)
        raise DbToolError(f"the server was not ready after {timeout:.0f} s:\n{self.log_tail()}")


def _ids(user: str) -> tuple[int, int]:
    import pwd

    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid
