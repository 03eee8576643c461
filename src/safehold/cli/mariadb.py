"""
``safehold mariadb``: MariaDB binary logs streamed into the archive.

    safehold mariadb receive-binlog mysql://repl@db1:3306 --spool /var/lib/safehold/binlog

``receive-binlog`` runs ``BinlogReceiver`` (``db/binlogstream.py``) until it is
stopped, as ``safehold pg receive-wal`` runs ``WalReceiver``: ``mariadb-binlog``
connects as a replica and each binlog file reaches the repository when the server
rotates it; on SIGTERM or Ctrl-C the file in progress is stored as
``<name>.partial``. The RPO becomes the replication delay instead of the time
between backups. Backups and restores of ``mariadb:`` sources are the
library's and the service's (``docs/databases.md`` § MariaDB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from safehold.cli.app import app
from safehold.cli.common import (
    PasswordFileOpt,
    RepoOpt,
    console,
    follow_stream,
    read_password,
    storage_for,
)
from safehold.core.errors import UsageError
from safehold.repo import Repository

mariadb_app = typer.Typer(help="MariaDB: binary log streaming.", no_args_is_help=True)
app.add_typer(mariadb_app, name="mariadb")


@mariadb_app.command("receive-binlog")
def receive_binlog(
    url: Annotated[
        str, typer.Argument(help="mysql://USER@HOST:PORT of a user with REPLICATION SLAVE.")
    ],
    spool: Annotated[
        Path | None,
        typer.Option(
            "--spool",
            envvar="SAFEHOLD_MARIADB_SPOOL",
            help="Local directory for the stream (the files not yet archived).",
        ),
    ] = None,
    stanza: Annotated[
        str | None,
        typer.Option(
            "--stanza",
            envvar="SAFEHOLD_MARIADB_STANZA",
            help="The server's archive name (default: mariadb-<host>-<port>).",
        ),
    ] = None,
    replica_id: Annotated[
        int,
        typer.Option(
            "--replica-id",
            help="The server id the stream connects with (unique among the replicas).",
        ),
    ] = 4_200_000_017,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
) -> None:
    """Stream binary logs with mariadb-binlog into the archive until stopped."""
    from safehold.db import DbError
    from safehold.db.binlog import BinlogArchive
    from safehold.db.binlogstream import BinlogReceiver
    from safehold.db.mariadb import MariaDbSource

    if spool is None:
        raise UsageError("receive-binlog needs --spool (a local directory for the stream)")
    source = MariaDbSource(url, stanza=stanza)
    name = source.archive_stanza()
    password = read_password(password_file)

    def open_archive() -> BinlogArchive:
        r = Repository.open(storage_for(repo), password, load_index=False, owns_storage=True)
        return BinlogArchive(r, name)

    rx = BinlogReceiver(source, spool / name, open_archive, replica_id=replica_id).start()
    asked = follow_stream(rx, f"streaming the binary logs of {name}; stop with Ctrl-C or SIGTERM")
    console.print(f"{len(rx.pushed)} binlog files archived")
    if not asked and not rx.running:
        # The stream ended (the server is gone): what it held is archived, the
        # file in progress as <name>.partial; exit 1 so a supervisor restarts it.
        log = rx.log_path.read_text(errors="replace") if rx.log_path.exists() else ""
        tail = log[-600:].strip()
        raise DbError(f"mariadb-binlog stopped: {tail}")
