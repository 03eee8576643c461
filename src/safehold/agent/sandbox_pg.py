"""
A drill's scratch PostgreSQL instance: restore a base backup into the sandbox, start it, query it.

``restore_scratch`` restores the drill's base backup (a ``postgres:`` partition's
snapshot, ``safehold.db``) into ``<sandbox>/pgdata`` and starts ``postgres`` on
it (PostgreSQL's own programs, as the ``postgres`` OS user when the agent runs as
root), recovering to the backup's own consistent point with the WAL served from
the archive, then waits until it accepts queries. No ``initdb``: the data
directory is the backup's.

The instance never shares anything with the live cluster:

- it listens on a free ``127.0.0.1`` port, and its unix socket is in
  ``<sandbox>/pgsock``; its ``pg_hba.conf`` is the sandbox's own and admits only
  local socket connections (``trust``), so nobody reaches the restored data over
  TCP;
- ``data_directory``, ``hba_file``, ``ident_file`` and the socket directory are
  set on the command line, which wins over a restored ``postgresql.conf`` that
  names the live cluster's paths; archiving, SSL and the logging collector are
  off (the log is ``<sandbox>/pg.log``);
- a restored data directory without a ``postgresql.conf`` (Debian keeps it in
  ``/etc``) gets an empty one.

``stop_scratch`` stops it (fast, then immediate, then SIGKILL), and
``stop_leftover`` stops the instance a killed drill left in its sandbox, before
that sandbox is removed. ``run_sql`` runs one SQL validator and compares its
result with the expected one, with a diff that names the difference.
"""

from __future__ import annotations

import contextlib
import decimal
import json
import os
import shlex
import signal
import time
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

from safehold.core.drill import MAX_OUTPUT, MAX_ROWS, MAX_SHOWN_ROWS, SqlValidator
from safehold.core.errors import SafeholdError
from safehold.core.progress import ProgressSink
from safehold.db.catalog import PgBackup
from safehold.db.errors import DbError
from safehold.db.prefetch import WalPrefetcher, write_restore_script
from safehold.db.server import LocalServer, find_bindir, free_port
from safehold.db.walstore import WalArchive
from safehold.repo import restore as restore_snapshot
from safehold.repo.locks import pid_alive
from safehold.repo.repository import Repository

__all__ = [
    "PG_DIR",
    "ScratchPostgres",
    "restore_scratch",
    "run_sql",
    "signal_then_kill",
    "stop_leftover",
    "stop_scratch",
]

PG_DIR = "pgdata"
SOCK_DIR = "pgsock"
LOG_NAME = "pg.log"
OS_USER = "postgres"


class ScratchError(SafeholdError):
    """The scratch instance could not be restored, started or queried."""

    code = "SAFEHOLD_E_DRILL_SANDBOX"


@dataclass
class ScratchPostgres:
    """A running scratch instance: its server, socket directory and port."""

    server: LocalServer
    sockdir: Path
    backup: PgBackup

    @property
    def port(self) -> int:
        """The instance's port (on 127.0.0.1, and its socket's name)."""
        return self.server.port

    def env(self) -> dict[str, str]:
        """libpq's environment for a command validator: ``psql`` then reaches the instance."""
        return {
            "PGHOST": str(self.sockdir),
            "PGPORT": str(self.port),
            "PGUSER": self.server.os_user,
            "PGDATABASE": "postgres",
        }

    def connect(self, dbname: str = "postgres", user: str | None = None, **kw: Any) -> Any:
        """A psycopg connection (autocommit) over the sandbox's socket."""
        import psycopg

        return psycopg.connect(
            host=str(self.sockdir),
            port=self.port,
            user=user or self.server.os_user,
            dbname=dbname,
            autocommit=True,
            **kw,
        )


def _settings(script: Path) -> list[str]:
    return [
        f'restore_command = \'{script} "%f" "%p"\'',
        "recovery_target = 'immediate'",
        "recovery_target_action = 'promote'",
        "recovery_target_timeline = 'latest'",
        "archive_mode = 'off'",
    ]


def _options(sandbox: Path, datadir: Path, port: int) -> str:
    """The postgres command line: what must win over a restored config (pg_ctl -o)."""
    opts = {
        "data_directory": str(datadir),
        "hba_file": str(sandbox / "pg_hba.conf"),
        "ident_file": str(sandbox / "pg_ident.conf"),
        "unix_socket_directories": str(sandbox / SOCK_DIR),
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "archive_mode": "off",
        "ssl": "off",
        "logging_collector": "off",
        "external_pid_file": "",
        "shared_buffers": "128MB",
    }
    return " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in opts.items())


def restore_scratch(
    repo: Repository,
    snapshot_id: str,
    sandbox: Path,
    *,
    deadline: float,
    progress: ProgressSink,
    ready_user: str | None = None,
    bindir: str | None = None,
) -> ScratchPostgres:
    """
    Restore base backup *snapshot_id* into *sandbox* and start it; return it once it answers.

    *deadline* is a ``time.monotonic()`` instant. On failure the instance is
    stopped before this raises (the caller removes the sandbox).

    Raises:
        ScratchError: the snapshot is not a base backup, the server did not start
            (the end of its log is in the message), or the deadline passed.
    """
    snap = repo.find_snapshot(snapshot_id)
    backup = PgBackup.from_snapshot(snap)
    if backup is None:
        raise ScratchError(f"backup {snap.short_id} is not a PostgreSQL base backup")
    work = sandbox / "restore"
    restore_snapshot(repo, snap, work, progress=progress)
    datadir = sandbox / PG_DIR
    (work / "pgdata").rename(datadir)
    with contextlib.suppress(OSError):
        work.rmdir()
    datadir.chmod(0o700)
    (datadir / "pg_wal").mkdir(mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (datadir / "backup_manifest").unlink()
    for stale in ("postmaster.pid", "postmaster.opts"):
        with contextlib.suppress(FileNotFoundError):
            (datadir / stale).unlink()
    if not (datadir / "postgresql.conf").exists():
        (datadir / "postgresql.conf").write_text("# written by a safehold drill\n")
    (sandbox / "pg_hba.conf").write_text("local all all trust\n")
    (sandbox / "pg_ident.conf").write_text("")
    (sandbox / SOCK_DIR).mkdir(mode=0o700)
    script = write_restore_script(sandbox / "wal")
    server = LocalServer(datadir, free_port(), find_bindir(bindir), OS_USER)
    server.append_config(*_settings(script))
    (datadir / "recovery.signal").touch()
    log = sandbox / LOG_NAME
    log.touch()
    server.chown(sandbox)
    scratch = ScratchPostgres(server, sandbox / SOCK_DIR, backup)
    prefetcher = WalPrefetcher(
        WalArchive(repo, backup.stanza), sandbox / "wal", segment_size=backup.segment_size
    )
    if os.geteuid() == 0:
        prefetcher.give_to(*_ids(OS_USER))
    prefetcher.start()
    ok = False
    try:
        server.run(
            "pg_ctl", "start", "-D", str(datadir), "-l", str(log),
            "-o", _options(sandbox, datadir, server.port), "-W",
        )  # fmt: skip
        _wait_ready(scratch, log, deadline, ready_user)
        ok = True
        return scratch
    except DbError as exc:
        raise ScratchError(f"the scratch PostgreSQL did not start: {exc.message}") from exc
    finally:
        prefetcher.stop()
        if not ok:
            stop_scratch(scratch)


def _ids(user: str) -> tuple[int, int]:
    import pwd

    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid


def _log_tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_ready(scratch: ScratchPostgres, log: Path, deadline: float, user: str | None) -> None:
    import psycopg

    started = time.monotonic()
    while time.monotonic() < deadline:
        try:
            with scratch.connect(user=user, connect_timeout=2) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row is not None and not row[0]:
                    return
        except psycopg.OperationalError as exc:
            if "does not exist" in str(exc):  # the server answers: the role or database is wrong
                raise ScratchError(f"the scratch PostgreSQL refused the drill: {exc}") from None
            if time.monotonic() - started > 5.0 and not scratch.server.running():
                raise ScratchError(
                    f"the scratch PostgreSQL stopped; the end of its log:\n{_log_tail(log)}"
                ) from None
        time.sleep(0.05)
    raise ScratchError(
        f"the scratch PostgreSQL did not accept queries before the drill's deadline:\n"
        f"{_log_tail(log)}"
    )


def _postmaster(datadir: Path) -> int | None:
    """The pid of the live postmaster of *datadir* (by its pid file), or None."""
    try:
        pid = int((datadir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    try:  # a reused pid is not ours: its command line must be a postgres one
        if b"postgres" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
    except OSError:
        pass
    return pid


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def signal_then_kill(pid: int, first: signal.Signals, grace: float) -> None:
    """Send *first* to *pid*; if it is still there after *grace* seconds, SIGKILL it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, first)
    if not _wait_gone(pid, grace):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 10.0)


def _kill(datadir: Path) -> None:
    """Stop the postmaster of *datadir* by signals: immediate shutdown, then SIGKILL."""
    pid = _postmaster(datadir)
    if pid is not None:
        signal_then_kill(pid, signal.SIGQUIT, 30.0)


def stop_scratch(scratch: ScratchPostgres) -> None:
    """Stop the instance: a fast shutdown, else an immediate one, else SIGKILL. Never raises."""
    datadir = scratch.server.datadir
    if _postmaster(datadir) is None:
        return
    with contextlib.suppress(SafeholdError, OSError):
        scratch.server.run(
            "pg_ctl", "stop", "-D", str(datadir), "-m", "fast", "-w", "-t", "30", check=False
        )
    _kill(datadir)


def stop_leftover(sandbox: Path) -> None:
    """Stop the scratch instance a drill that did not finish left running in *sandbox*."""
    _kill(sandbox / PG_DIR)


# --- SQL validators ----------------------------------------------------------------------


def _norm(value: Any) -> Any:
    """A result value as JSON would show it."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return str(value)


def _same(got: Any, want: Any) -> bool:
    numbers = (int, float)
    if isinstance(got, numbers) and isinstance(want, numbers):
        if isinstance(got, bool) or isinstance(want, bool):
            return got is want
        return float(got) == float(want)
    return bool(got == want)


def _rows_equal(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def diff_result(v: SqlValidator, rows: list[list[Any]], more: bool) -> list[str]:
    """What differs between *rows* (the result, normalized) and what *v* expects; [] if equal."""
    kind, want = v.expect
    count = f"more than {MAX_ROWS}" if more else str(len(rows))
    if kind == "RowCount":
        return [] if not more and len(rows) == want else [f"expected {want} rows, got {count}"]
    if kind == "Scalar":
        if more or len(rows) != 1 or len(rows[0]) != 1:
            cols = len(rows[0]) if rows else 0
            return [f"expected one value, got {count} rows of {cols} columns"]
        got = rows[0][0]
        return [] if _same(got, want) else [f"expected {_show(want)}, got {_show(got)}"]
    problems = []
    for i, (g, w) in enumerate(zip(rows, want, strict=False)):
        if not _rows_equal(g, w):
            problems.append(f"row {i + 1}: expected {_show(w)}, got {_show(g)}")
    if more or len(rows) != len(want):
        extra = rows[len(want) :]
        line = f"expected {len(want)} rows, got {count}"
        if extra:
            line += f"; first extra row {_show(extra[0])}"
        elif len(want) > len(rows):
            line += f"; first missing row {_show(want[len(rows)])}"
        problems.append(line)
    return problems


def run_sql(scratch: ScratchPostgres, v: SqlValidator, cap: float) -> dict[str, Any]:
    """Run SQL validator *v* on the instance (at most *cap* seconds); return its result."""
    import psycopg

    timeout = max(1.0, min(v.timeout_seconds, cap))
    rows: list[list[Any]] = []
    more = False
    try:
        with scratch.connect(v.database, v.user, connect_timeout=max(2, int(timeout))) as conn:
            conn.execute(f"SET statement_timeout = {int(timeout * 1000)}")
            cur = conn.execute(v.query)
            if cur.description is not None:
                fetched = cur.fetchmany(MAX_ROWS + 1)
                more = len(fetched) > MAX_ROWS
                rows = [[_norm(x) for x in r] for r in fetched[:MAX_ROWS]]
    except psycopg.Error as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"Kind": "Sql", "Name": v.query, "Passed": False,
                "Detail": f"the query failed: {message}"[:MAX_OUTPUT], "Output": ""}  # fmt: skip
    problems = diff_result(v, rows, more)
    shown = "\n".join(_show(r) for r in rows[:MAX_SHOWN_ROWS])
    if len(rows) > MAX_SHOWN_ROWS or more:
        shown += f"\n… ({'more than ' if more else ''}{len(rows)} rows)"
    detail = f"{len(rows)} rows as expected" if not problems else "; ".join(problems[:10])
    if len(problems) > 10:
        detail += f"; and {len(problems) - 10} more"
    return {"Kind": "Sql", "Name": v.query, "Passed": not problems,
            "Detail": detail[:MAX_OUTPUT], "Output": shown[-MAX_OUTPUT:]}  # fmt: skip
