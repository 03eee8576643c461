"""
The lean ``archive_command`` / ``restore_command`` hook.

PostgreSQL starts one process per WAL file, one file at a time, so the start-up
cost of that process bounds how fast WAL can be archived (16 MiB per call).
``safehold pg archive-push`` loads the whole command line (Typer, Rich, every
command: about 0.4 s of CPU); this hook loads only the spool (about 0.05 s):

    archive_command = 'python3 -m safehold.db.hook push %p --spool DIR --repo R --password-file F'
    restore_command = 'python3 -m safehold.db.hook get %f %p --spool DIR --stanza S --repo R ...'

``push`` spools the file durably and starts the pusher (the full CLI, in the
background) if none runs. ``get`` answers from the spool's fetched-ahead files,
and otherwise hands over to ``safehold pg archive-get`` (which fetches the file
and the next segments at once). Both behave exactly as the CLI commands of the
same names; ``--repo`` and ``--password-file`` are only passed on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from safehold.core.errors import SafeholdError
from safehold.db.pgwal import is_segment_name, wal_sysid
from safehold.db.spool import DEFAULT_SPOOL_MAX, pusher_running, spool_push, spool_take

__all__ = ["main", "spawn_pusher", "stanza_of_wal"]


def stanza_of_wal(wal: Path, stanza: str | None) -> str:
    """
    The archive name for a WAL file: *stanza* if given, else ``pg-<system id>``
    read from the segment's first page, or from ``./global/pg_control``
    (``archive_command`` runs in the data directory) for history files.

    Raises:
        SafeholdError: the file cannot be read, or its cluster cannot be told.
    """
    if stanza:
        return stanza
    try:
        with wal.open("rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise SafeholdError(f"cannot read {wal}: {exc.strerror}") from exc
    found = wal_sysid(head) if is_segment_name(wal.name) else None
    if found is not None:
        return f"pg-{found[0]}"
    try:
        control = Path("global/pg_control").read_bytes()[:8]
    except OSError as exc:
        raise SafeholdError(f"cannot tell which cluster {wal.name} is from: pass --stanza") from exc
    return f"pg-{int.from_bytes(control, 'little')}"


def spawn_pusher(spool: Path, stanza: str, repo: str | None, password_file: str | None) -> None:
    """Start ``safehold pg archive-pusher`` for *spool* in its own session, detached."""
    argv = [sys.executable, "-m", "safehold", "pg", "archive-pusher", "--spool", str(spool)]
    argv += ["--stanza", stanza]
    if repo:
        argv += ["--repo", repo]
    if password_file:
        argv += ["--password-file", password_file]
    subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def push(
    wal: Path,
    spool: Path,
    *,
    stanza: str | None,
    spool_max: int,
    repo: str | None,
    password_file: str | None,
) -> str:
    """Spool one WAL file and make sure a pusher runs; return ``spooled`` or ``dropped``."""
    name = stanza_of_wal(wal, stanza)
    out = spool_push(spool / name, wal, max_bytes=spool_max)
    if out.state == "dropped":
        sys.stderr.write(
            f"safehold: warning: the spool {spool / name} is full ({out.spool_bytes} bytes): "
            f"{wal.name} was NOT archived; point-in-time recovery across it is lost\n"
        )
    if not pusher_running(spool / name):
        spawn_pusher(spool / name, name, repo, password_file)
    return out.state


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m safehold.db.hook")
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("push")
    ps.add_argument("wal")
    ps.add_argument("--spool-max", type=int, default=DEFAULT_SPOOL_MAX)
    gs = sub.add_parser("get")
    gs.add_argument("name")
    gs.add_argument("dest")
    for s in (ps, gs):
        s.add_argument("--spool", required=True)
        s.add_argument("--stanza")
        s.add_argument("--repo", default=os.environ.get("SAFEHOLD_REPO"))
        s.add_argument("--password-file", default=os.environ.get("SAFEHOLD_PASSWORD_FILE"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the hook; the exit status is what PostgreSQL sees."""
    a = _args(argv)
    try:
        if a.cmd == "push":
            push(
                Path(a.wal),
                Path(a.spool),
                stanza=a.stanza,
                spool_max=a.spool_max,
                repo=a.repo,
                password_file=a.password_file,
            )
            return 0
        if a.stanza and spool_take(Path(a.spool) / a.stanza, a.name, Path(a.dest)):
            return 0
    except SafeholdError as exc:
        sys.stderr.write(f"safehold: error: {exc.message}\n")
        return exc.exit_code
    cli = [sys.executable, "-m", "safehold", "pg", "archive-get", a.name, a.dest]
    cli += ["--spool", a.spool] + (["--stanza", a.stanza] if a.stanza else [])
    cli += (["--repo", a.repo] if a.repo else []) + (
        ["--password-file", a.password_file] if a.password_file else []
    )
    os.execv(sys.executable, cli)  # noqa: S606 - our own interpreter and module
    return 1  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
