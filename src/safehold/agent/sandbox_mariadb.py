"""
A drill's scratch MariaDB instance: restore a physical backup into the sandbox, start it, query it.

``restore_scratch`` extracts the drill's backup (a ``mariadb:`` partition's
``mariadb-backup`` stream, ``safehold.db.mariadb``) into ``<sandbox>/mysqldata``,
prepares it (``mariadb-backup --prepare``: consistent at the backup's binlog
position; no binlog is replayed) and starts ``mariadbd`` on it (as the ``mysql``
OS user when the agent runs as root), then waits until it answers.

The instance never shares anything with the live server:

- ``mariadbd --no-defaults``: no option file of the host (which names the live
  server's data directory, socket and port) is read; everything is on its
  command line;
- it listens on a free port of ``127.0.0.1`` only, its socket, pid file and
  error log are in ``<sandbox>/mysqldata.run``, and the sandbox is private to
  the server's OS user; the accounts are the backed-up ones (no grant is added),
  so over TCP only those accounts, from this host, reach the restored data;
- replication does not start (``--skip-slave-start``), events do not run
  (``--event-scheduler=DISABLED``), no binary log is written, and the server
  reads and writes files only in ``<sandbox>/files`` (``--secure-file-priv``;
  ``LOAD DATA LOCAL`` is off).

SQL validators run through the ``mariadb`` client over the sandbox's socket
(``--protocol=SOCKET``, which wins over any option file): as the validator's
``User``, else the source URL's user, with the password the agent host keeps
for the client (``~/.my.cnf``), as for backups. ``Database`` is the default
database; the policy default (``postgres``) means none, so queries name their
tables' databases. Values come back as text (``mariadb --xml``; ``NULL`` is
``null``); a value compares with an expected number by value, anything else by
its text (a ``DATETIME`` is ``"2024-01-31 12:00:00"``).

``stop_scratch`` stops it (SIGTERM: InnoDB shuts down; then SIGKILL), and
``stop_leftover`` stops the instance a killed drill left in its sandbox, before
that sandbox is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safehold.agent.sandbox_pg import diff_result, signal_then_kill
from safehold.core.drill import MAX_OUTPUT, MAX_ROWS, MAX_SHOWN_ROWS, SqlValidator
from safehold.core.errors import SafeholdError
from safehold.core.progress import ProgressSink
from safehold.core.snapshot import format_time
from safehold.db.binlog import BinlogArchive, binlog_number
from safehold.db.mariadb import STREAM_NAME, MariaDbBackup
from safehold.db.mysqld import ClientOptions, MariaDbServer, binlog_times, run_tool
from safehold.db.server import free_port
from safehold.repo import dump as dump_snapshot
from safehold.repo.locks import pid_alive
from safehold.repo.repository import Repository

__all__ = [
    "MY_DIR",
    "ScratchMariaDb",
    "recoverable_end",
    "restore_scratch",
    "run_sql",
    "stop_leftover",
    "stop_scratch",
]

MY_DIR = "mysqldata"
FILES_DIR = "files"
OS_USER = "mysql"
_SOCKET_MAX = 107  # sun_path holds 108 bytes with its NUL
_XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
_INT_RE = re.compile(r"-?\d+")
_NUM_RE = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_BAD_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


class ScratchError(SafeholdError):
    """The scratch instance could not be restored, started or queried."""

    code = "SAFEHOLD_E_DRILL_SANDBOX"


@dataclass
class ScratchMariaDb:
    """A running scratch instance: its server, the backup it holds, the source's user."""

    server: MariaDbServer
    backup: MariaDbBackup
    user: str

    @property
    def port(self) -> int:
        """The instance's port (on 127.0.0.1)."""
        return self.server.port

    @property
    def socket(self) -> Path:
        """The instance's unix socket, in the sandbox."""
        return self.server.socket

    def env(self) -> dict[str, str]:
        """
        The client's environment for a command validator.

        ``mariadb`` then reaches the instance by default; an option file's
        ``host``/``socket`` wins over these, so a command should pass
        ``--socket="$SAFEHOLD_MARIADB_SOCKET"``.
        """
        return {
            "MYSQL_HOST": "localhost",
            "MYSQL_UNIX_PORT": str(self.socket),
            "MYSQL_TCP_PORT": str(self.port),
            "SAFEHOLD_MARIADB_SOCKET": str(self.socket),
            "SAFEHOLD_MARIADB_PORT": str(self.port),
            "SAFEHOLD_MARIADB_USER": self.user,
        }


def _left(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())


def _extract(repo: Repository, backup: MariaDbBackup, datadir: Path, deadline: float) -> None:
    """``mbstream -x`` the backup's stream into *datadir*."""
    datadir.mkdir(mode=0o700)
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                ["mbstream", "-x", "-C", str(datadir)], stdin=subprocess.PIPE, stderr=err
            )
        except FileNotFoundError as exc:
            raise ScratchError("mbstream is not installed") from exc
        assert proc.stdin is not None
        try:
            dump_snapshot(repo, backup.snapshot, proc.stdin, STREAM_NAME)
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            try:
                code = proc.wait(timeout=_left(deadline))
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        if code != 0:
            err.seek(0)
            tail = err.read()[-600:].decode(errors="replace").strip()
            raise ScratchError(f"mbstream exited with status {code}: {tail}")


def restore_scratch(
    repo: Repository,
    snapshot_id: str,
    sandbox: Path,
    *,
    deadline: float,
    progress: ProgressSink,
    user: str = "root",
) -> ScratchMariaDb:
    """
    Restore backup *snapshot_id* into *sandbox*, prepare it and start it; return it once it answers.

    *deadline* is a ``time.monotonic()`` instant; *user* is the source URL's user,
    the one SQL validators connect as by default. On failure the instance is
    stopped before this raises (the caller removes the sandbox).

    Raises:
        ScratchError: the snapshot is not a MariaDB backup, the sandbox's path is
            too long for a socket, the backup did not extract or prepare, or the
            server did not start before the deadline (the end of its log is in
            the message).
    """
    snap = repo.find_snapshot(snapshot_id)
    backup = MariaDbBackup.from_snapshot(snap)
    if backup is None:
        raise ScratchError(f"backup {snap.short_id} is not a MariaDB backup")
    server = MariaDbServer((sandbox / MY_DIR).absolute(), free_port(), OS_USER)
    if len(str(server.socket).encode()) > _SOCKET_MAX:
        raise ScratchError(
            f"the sandbox {sandbox} is too deep for a unix socket: choose a shorter sandbox root"
        )
    progress.begin("restore", total_bytes=None, total_items=1)
    _extract(repo, backup, server.datadir, deadline)
    try:
        run_tool(
            ["mariadb-backup", "--no-defaults", "--prepare", f"--target-dir={server.datadir}"],
            what="mariadb-backup --prepare",
            timeout=_left(deadline),
        )
    except SafeholdError as exc:
        raise ScratchError(f"the backup did not prepare: {exc.message}") from exc
    except subprocess.TimeoutExpired:
        raise ScratchError("the backup did not prepare before the drill's deadline") from None
    progress.advance(items=1)
    files = sandbox / FILES_DIR
    files.mkdir(mode=0o700)
    server.chown(sandbox)
    scratch = ScratchMariaDb(server, backup, user)
    ok = False
    try:
        server.start(
            *_layout(server.datadir),
            "--innodb-buffer-pool-size=128M",
            "--skip-slave-start",
            "--event-scheduler=DISABLED",
            f"--secure-file-priv={files}",
            "--local-infile=0",
            timeout=_left(deadline),
        )
        ok = True
        return scratch
    except SafeholdError as exc:
        raise ScratchError(f"the scratch MariaDB did not start: {exc.message}") from exc
    finally:
        if not ok:
            stop_scratch(scratch)


def _layout(datadir: Path) -> list[str]:
    """
    The InnoDB layout options the backup recorded (``backup-my.cnf``), for ``mariadbd``.

    Only those that describe the files in *datadir*; a path outside it (an undo
    directory, a raw device) is not followed: the prepared files are all here.
    """
    keep = ("innodb_page_size", "innodb_data_file_path", "innodb_undo_tablespaces",
            "innodb_log_file_size")  # fmt: skip
    out = []
    try:
        lines = (datadir / "backup-my.cnf").read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        key, eq, value = (x.strip() for x in line.partition("="))
        if eq and key in keep and re.fullmatch(r"[A-Za-z0-9_:.;]+", value):
            out.append(f"--{key.replace('_', '-')}={value}")
    return out


# --- Stopping ----------------------------------------------------------------------------


def _mariadbd(datadir: Path) -> set[int]:
    """
    The live servers of *datadir*: the one its pid file names, and any whose
    command line names it (a server killed before it wrote its pid file).
    """
    run_dir = datadir.with_name(datadir.name + ".run")
    found = set()
    try:
        pid = int((run_dir / "mysqld.pid").read_text().strip())
        # A reused pid is not ours: its command line must be a MariaDB server's.
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if pid_alive(pid) and (b"mariadbd" in cmdline or b"mysqld" in cmdline):
            found.add(pid)
    except (OSError, ValueError):
        pass
    arg = f"--datadir={datadir}".encode() + b"\0"
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if arg in Path(f"/proc/{entry}/cmdline").read_bytes():
                        found.add(int(entry))
    return found


def _kill(datadir: Path) -> None:
    """Stop the server of *datadir*: SIGTERM (InnoDB shuts down), then SIGKILL."""
    for pid in _mariadbd(datadir):
        signal_then_kill(pid, signal.SIGTERM, 60.0)


def stop_scratch(scratch: ScratchMariaDb) -> None:
    """Stop the instance (a clean shutdown, else SIGKILL) and wait for it. Never raises."""
    with contextlib.suppress(OSError):
        _kill(scratch.server.datadir)


def stop_leftover(sandbox: Path) -> None:
    """Stop the scratch instance a drill that did not finish left running in *sandbox*."""
    _kill((sandbox / MY_DIR).absolute())


# --- The recoverable window --------------------------------------------------------------


def recoverable_end(repo: Repository, scratch: ScratchMariaDb) -> dict[str, Any]:
    """
    The last recoverable instant: the last archived binlog event after the backup.

    The archived binlogs from the backup's own file on, without a gap, reach
    ``RecoverableEndTime`` (whole seconds; the backup's own end when none is
    archived yet) and end with ``RecoverableEndBinlog``. Empty when unknown.
    """
    backup = scratch.backup
    end = backup.stop_time.timestamp()
    out: dict[str, Any] = {}
    try:
        if backup.binlog_file is not None:
            archive = BinlogArchive(repo, backup.stanza)
            listing = archive.list()
            # A complete file wins over the part of it a stream saved (``.partial``).
            by_number = {
                binlog_number(n): (n, k)
                for n, k in sorted(listing.items(), key=lambda nk: -len(nk[0]))
            }
            n = binlog_number(backup.binlog_file)
            last = None
            while n in by_number:
                last, n = by_number[n], n + 1
            if last is not None:
                times = binlog_times(archive.get(*last))
                out["RecoverableEndBinlog"] = last[0]
                end = max(end, float(times[1])) if times else end
    except SafeholdError as exc:
        return {"RecoverableEndError": exc.message[:MAX_OUTPUT]}
    out["RecoverableEndTime"] = format_time(datetime.fromtimestamp(end, UTC))
    return out


# --- SQL validators ----------------------------------------------------------------------


def _number(text: str) -> int | float | None:
    if _INT_RE.fullmatch(text):
        return int(text)
    if _NUM_RE.fullmatch(text):
        f = float(text)
        return int(f) if f.is_integer() and abs(f) < 2**53 else f
    return None


def _value(text: str | None, want: Any = ...) -> Any:
    """A text value as JSON would show it, read as the expected value's kind."""
    if text is None:
        return None
    if isinstance(want, bool):
        return text == "1" if text in ("0", "1") else text
    if want is ... or isinstance(want, int | float):
        n = _number(text)
        return text if n is None else n
    return text


def _coerce(v: SqlValidator, rows: list[list[str | None]]) -> list[list[Any]]:
    """Read each cell as what *v* expects there (a number by value, else text)."""
    kind, want = v.expect
    out = []
    for i, row in enumerate(rows):
        wants: list[Any] = []
        if kind == "Rows" and i < len(want) and isinstance(want[i], list):
            wants = want[i]
        elif kind == "Scalar" and i == 0:
            wants = [want]
        out.append([_value(x, wants[j] if j < len(wants) else ...) for j, x in enumerate(row)])
    return out


def _parse(stdout: bytes) -> list[list[str | None]]:
    """The rows of the last result set in ``mariadb --xml``'s output (none: [])."""
    from xml.etree import ElementTree

    docs = [d for d in stdout.decode(errors="replace").split('<?xml version="1.0"?>') if d.strip()]
    if not docs:
        return []
    # The client escapes every value; only control bytes XML cannot carry remain.
    root = ElementTree.fromstring(_BAD_XML.sub("\ufffd", docs[-1]))  # noqa: S314
    return [
        [None if f.get(_XSI_NIL) == "true" else (f.text or "") for f in row.findall("field")]
        for row in root.findall("row")
    ]


def _error(stderr: bytes) -> str:
    lines = [x.strip() for x in stderr.decode(errors="replace").splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("ERROR")]
    text = (errors or lines or ["the client failed"])[-1]
    return re.sub(r" at line \d+", "", text)


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class _QueryFailed(Exception):
    """The client could not run the query (its message)."""


def _query(scratch: ScratchMariaDb, v: SqlValidator, timeout: float) -> list[list[str | None]]:
    """Run *v*'s query with the ``mariadb`` client over the sandbox's socket; return its rows."""
    client = ClientOptions(user=v.user or scratch.user, socket=str(scratch.socket))
    # One line: the server stops the query at the timeout, and returns at most
    # MAX_ROWS + 1 rows of a SELECT (the rest is "more than").
    sql = (
        f"SET SESSION max_statement_time = {timeout:.3f}; "
        f"SET SESSION sql_select_limit = {MAX_ROWS + 1}; {v.query}"
    )
    with client.args() as opts:
        argv = ["mariadb", *opts, "--protocol=SOCKET", "--xml", "--default-character-set=utf8mb4",
                f"--connect-timeout={max(2, int(timeout))}", "-e", sql]  # fmt: skip
        if v.database and v.database != "postgres":
            argv.append(f"--database={v.database}")
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=timeout + 5, check=False)
        except subprocess.TimeoutExpired:
            raise _QueryFailed(f"timed out after {timeout:g} s") from None
        except FileNotFoundError:
            raise _QueryFailed("the mariadb client is not installed") from None
    if proc.returncode != 0:
        raise _QueryFailed(_error(proc.stderr))
    try:
        return _parse(proc.stdout)
    except SyntaxError as exc:  # ElementTree.ParseError
        raise _QueryFailed(f"the client's output is not readable: {exc}") from None


def run_sql(scratch: ScratchMariaDb, v: SqlValidator, cap: float) -> dict[str, Any]:
    """Run SQL validator *v* on the instance (at most *cap* seconds); return its result."""
    timeout = max(1.0, min(v.timeout_seconds, cap))
    try:
        texts = _query(scratch, v, timeout)
    except _QueryFailed as exc:
        return {"Kind": "Sql", "Name": v.query, "Passed": False,
                "Detail": f"the query failed: {exc}"[:MAX_OUTPUT], "Output": ""}  # fmt: skip
    more = len(texts) > MAX_ROWS
    rows = _coerce(v, texts[:MAX_ROWS])
    problems = diff_result(v, rows, more)
    shown = "\n".join(_show(r) for r in rows[:MAX_SHOWN_ROWS])
    if len(rows) > MAX_SHOWN_ROWS or more:
        shown += f"\n… ({'more than ' if more else ''}{len(rows)} rows)"
    detail = f"{len(rows)} rows as expected" if not problems else "; ".join(problems[:10])
    if len(problems) > 10:
        detail += f"; and {len(problems) - 10} more"
    return {"Kind": "Sql", "Name": v.query, "Passed": not problems,
            "Detail": detail[:MAX_OUTPUT], "Output": shown[-MAX_OUTPUT:]}  # fmt: skip
