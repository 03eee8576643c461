"""
MariaDB's programs, driven from safehold: client options, a local server, binlog files.

- ``ClientOptions.from_url("mysql://user@host:port")``: how ``mariadb``,
  ``mariadb-binlog`` and ``mariadb-backup`` reach a server. A password goes
  into a private defaults file (``--defaults-extra-file``), never on a command
  line, and never into a message.
- ``MariaDbServer``: a data directory on this host and the ``mariadbd`` that
  runs it (restore prepares and starts one; tests make throw-away ones). As
  root, the server runs as *os_user* (``mysql``; ``mariadbd --user``).
- ``binlog_times(data)``: the first and last event times of a binary log file,
  read from its event headers (whole seconds, as MariaDB writes them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from safehold.db.errors import DbError, DbToolError
from safehold.repo.locks import pid_alive

__all__ = ["ClientOptions", "MariaDbServer", "binlog_times", "run_tool"]

_MAGIC = b"\xfebin"


@dataclass(frozen=True)
class ClientOptions:
    """Where a MariaDB server is and who to be there (``repr`` hides the password)."""

    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str | None = None
    socket: str | None = None

    @classmethod
    def from_url(cls, url: str) -> ClientOptions:
        """Parse ``mysql://user[:password]@host[:port][?socket=PATH]`` (or ``mariadb://``)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mysql", "mariadb"):
            raise DbError("a MariaDB URL starts with mysql:// or mariadb://")
        try:
            port = parts.port or 3306
        except ValueError as exc:
            raise DbError("the MariaDB URL's port is not a number") from exc
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password) if parts.password else None,
            socket=unquote(query["socket"]) if "socket" in query else None,
        )

    def __repr__(self) -> str:
        return f"ClientOptions({self.user}@{self.host}:{self.port})"

    @property
    def where(self) -> str:
        """The server, for messages: ``user@host:port``."""
        return f"{self.user}@{self.host}:{self.port}"

    @contextlib.contextmanager
    def args(self) -> Iterator[list[str]]:
        """The options for a MariaDB program (first on its command line), while in use."""
        with tempfile.NamedTemporaryFile("w", prefix="safehold-my-", suffix=".cnf") as f:
            os.chmod(f.name, 0o600)
            f.write("[client]\n")
            if self.password is not None:
                f.write(f"password={self.password}\n")
            f.flush()
            conn = [f"--user={self.user}"]
            if self.socket:
                conn.append(f"--socket={self.socket}")
            else:
                conn += [f"--host={self.host}", f"--port={self.port}", "--protocol=TCP"]
            yield [f"--defaults-extra-file={f.name}", *conn]

    def query(self, sql: str, *, database: str | None = None) -> list[list[str]]:
        """Run *sql* with the ``mariadb`` client; return the rows (tab-separated, no header)."""
        with self.args() as opts:
            argv = ["mariadb", *opts, "--batch", "--skip-column-names", "-e", sql]
            if database:
                argv.append(database)
            out = run_tool(argv, what="mariadb")
        return [line.split("\t") for line in out.decode().splitlines()]


def run_tool(
    argv: Sequence[str],
    *,
    what: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> bytes:
    """Run a program; return its stdout, or raise ``DbToolError`` with its stderr's tail."""
    try:
        proc = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **(env or {})},
        )
    except FileNotFoundError as exc:
        raise DbToolError(f"{argv[0]} is not installed") from exc
    if proc.returncode:
        tail = proc.stderr.decode(errors="replace")[-800:].strip()
        raise DbToolError(f"{what} exited with status {proc.returncode}: {tail}")
    return proc.stdout


def binlog_times(data: bytes) -> tuple[int, int] | None:
    """
    The first and last event timestamps (Unix seconds) of a binary log file.

    Reads only the 19-byte event headers (timestamp, type, server id, size, ...);
    None if *data* is not a binary log or holds no event.
    """
    if not data.startswith(_MAGIC):
        return None
    pos, first, last = 4, None, None
    while pos + 19 <= len(data):
        ts, _type, _server, size = struct.unpack_from("<IBII", data, pos)
        if size < 19:
            break
        if ts:
            first = ts if first is None else first
            last = ts
        pos += size
    return None if first is None or last is None else (first, last)


@dataclass
class MariaDbServer:
    """A MariaDB data directory on this host and the ``mariadbd`` that runs it."""

    datadir: Path
    port: int
    os_user: str = "mysql"

    @property
    def run_dir(self) -> Path:
        """Socket, pid file and error log: beside the data directory."""
        return self.datadir.with_name(self.datadir.name + ".run")

    @property
    def socket(self) -> Path:
        """The server's Unix socket."""
        return self.run_dir / "mysqld.sock"

    @property
    def errlog(self) -> Path:
        """The server's error log."""
        return self.run_dir / "error.log"

    def client(self, user: str = "root", password: str | None = None) -> ClientOptions:
        """Client options for this server (over TCP on 127.0.0.1)."""
        return ClientOptions("127.0.0.1", self.port, user, password)

    def chown(self, path: Path) -> None:
        """Give *path* (recursively) to the OS user, when running as root."""
        if os.geteuid() != 0:
            return
        shutil.chown(path, self.os_user, self.os_user)
        for dirpath, dirnames, filenames in os.walk(path):
            for n in dirnames + filenames:
                shutil.chown(os.path.join(dirpath, n), self.os_user, self.os_user)

    def install(self) -> None:
        """Create a new data directory (``mariadb-install-db``; root without a password)."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.chown(self.datadir)
        run_tool(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--user={self.os_user}",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            what="mariadb-install-db",
        )

    def start(self, *options: str, timeout: float = 120.0) -> None:
        """Start ``mariadbd`` on this data directory in the background; wait until it answers."""
        self.run_dir.mkdir(exist_ok=True)
        self.chown(self.run_dir)
        argv = [
            "mariadbd",
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.socket}",
            f"--pid-file={self.run_dir / 'mysqld.pid'}",
            f"--log-error={self.errlog}",
            "--innodb-buffer-pool-size=32M",
            *options,
        ]
        if os.geteuid() == 0:
            argv.insert(2, f"--user={self.os_user}")
        # Through a shell that exits at once: the server is nobody's child here,
        # in a session of its own, and outlives this process like pg_ctl's.
        daemon = 'setsid "$@" </dev/null >/dev/null 2>&1 &'
        subprocess.run(["sh", "-c", daemon, "sh", *argv], check=True)
        started = time.monotonic()
        # mariadb-admin ping exits 0 when the server answers, even "access denied".
        probe = ["mariadb-admin", "--no-defaults", f"--socket={self.socket}", "-uroot", "ping"]
        while time.monotonic() - started < timeout:
            answer = subprocess.run(probe, capture_output=True, check=False)
            if self.socket.exists() and answer.returncode == 0:
                return
            if time.monotonic() - started > 10 and not self.running():
                break  # it wrote no pid file, or died
            time.sleep(0.1)
        raise DbToolError(f"mariadbd did not start; the end of its log:\n{self.log_tail()}")

    def pid(self) -> int | None:
        """The server's process id, from its pid file."""
        try:
            return int((self.run_dir / "mysqld.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        """Whether the server of this data directory is alive (by its pid file)."""
        pid = self.pid()
        return pid is not None and pid_alive(pid)

    def stop(self, timeout: float = 120.0) -> None:
        """Stop the server cleanly (SIGTERM: InnoDB shuts down) and wait for it."""
        pid = self.pid()
        if pid is None or not self.running():
            return
        os.kill(pid, 15)
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's error log."""
        try:
            text = self.errlog.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
