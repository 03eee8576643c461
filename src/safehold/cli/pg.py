"""
``safehold pg``: PostgreSQL base backups, WAL archiving and point-in-time restore.

On the database host, in ``postgresql.conf`` (the repository and password come
from the environment or the options)::

    archive_mode = on
    archive_command = 'safehold pg archive-push %p --spool /var/lib/safehold/spool'
    restore_command = 'safehold pg archive-get %f %p --spool /var/lib/safehold/spool'

``archive-push`` acknowledges once the file is durable in the local spool and
leaves the upload to a background pusher; ``archive-get`` fetches the wanted
file and the next few segments at once, so most calls are answered from the
spool. The design is in ``docs/databases.md``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from safehold.cli.app import app
from safehold.cli.common import (
    JsonOpt,
    PasswordFileOpt,
    RepoOpt,
    console,
    follow_stream,
    open_repo,
    print_json,
    progress_sink,
    read_password,
    storage_for,
)
from safehold.core.errors import UsageError
from safehold.db import (
    BackupId,
    Latest,
    Lsn,
    Name,
    PgBackup,
    PostgresSource,
    Target,
    Time,
    WalArchive,
    check_wal,
    expire_wal,
    pg_backups,
    run_pusher,
    spool_take,
)
from safehold.db.hook import push as hook_push
from safehold.db.hook import stanza_of_wal
from safehold.db.pgwal import Segment, is_segment_name
from safehold.db.spool import DEFAULT_SPOOL_MAX, spool_dirs, spool_pending
from safehold.repo import Repository

pg_app = typer.Typer(
    help="PostgreSQL: base backups, WAL archiving, point-in-time restore.", no_args_is_help=True
)
app.add_typer(pg_app, name="pg")

SpoolOpt = Annotated[
    Path | None,
    typer.Option(
        "--spool",
        envvar="SAFEHOLD_PG_SPOOL",
        help="Local spool directory on the database host (fast acknowledgement, prefetch).",
    ),
]
StanzaOpt = Annotated[
    str | None,
    typer.Option(
        "--stanza",
        envvar="SAFEHOLD_PG_STANZA",
        help="The cluster's archive name (default: pg-<system identifier>).",
    ),
]


@pg_app.command("archive-push")
def archive_push(
    wal: Annotated[Path, typer.Argument(help="The WAL file (archive_command's %p).")],
    spool: SpoolOpt = None,
    stanza: StanzaOpt = None,
    spool_max: Annotated[
        int, typer.Option("--spool-max", help="Bytes the spool may hold before WAL is dropped.")
    ] = DEFAULT_SPOOL_MAX,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
) -> None:
    """
    Archive one WAL file: into the spool and return (with --spool), else straight up.

    ``python3 -m safehold.db.hook push`` does the same with a tenth of the start-up cost.
    """
    if spool is None:
        name = stanza_of_wal(wal, stanza)
        with open_repo(repo, password_file, load_index=False) as r:
            WalArchive(r, name).push(wal.name, wal.read_bytes())
        return
    pw = str(password_file) if password_file else None
    hook_push(wal, spool, stanza=stanza, spool_max=spool_max, repo=repo, password_file=pw)


@pg_app.command("archive-pusher", hidden=True)
def archive_pusher(
    spool: SpoolOpt = None,
    stanza: StanzaOpt = None,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
) -> None:
    """Upload a spool's WAL files until it stays empty (started by archive-push)."""
    if spool is None or not stanza:
        raise UsageError("archive-pusher needs --spool and --stanza")

    def open_archive() -> WalArchive:
        # Opened once for the pusher's life: one key derivation for many files.
        r = Repository.open(
            storage_for(repo), read_password(password_file), load_index=False, owns_storage=True
        )
        return WalArchive(r, stanza)

    run_pusher(spool, open_archive)


@pg_app.command("archive-get")
def archive_get(
    name: Annotated[str, typer.Argument(help="The WAL file wanted (restore_command's %f).")],
    dest: Annotated[Path, typer.Argument(help="Where to write it (restore_command's %p).")],
    spool: SpoolOpt = None,
    stanza: StanzaOpt = None,
    prefetch: Annotated[
        int, typer.Option("--prefetch", help="Segments to fetch ahead into the spool.")
    ] = 8,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
) -> None:
    """Fetch one WAL file; exit 16 if the archive does not have it (end of recovery)."""
    if spool is not None and stanza and spool_take(spool / stanza, name, dest):
        return
    with open_repo(repo, password_file, load_index=False) as r:
        names = sorted({b.stanza for b in pg_backups(r.snapshots())}) if not stanza else [stanza]
        if len(names) != 1:
            raise UsageError("pass --stanza: the repository holds several clusters, or none")
        archive = WalArchive(r, names[0])
        listing = archive.list()
        if spool is not None and spool_take(spool / names[0], name, dest):
            return
        obj = listing.get(name) or archive.lookup(name)
        wanted = [obj]
        if spool is not None and is_segment_name(name):
            seg = Segment.parse(name)
            for _ in range(prefetch):
                seg = seg.next()
                if seg.name not in listing:
                    break
                wanted.append(listing[seg.name])
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:
            datas = list(pool.map(archive.read, wanted))
        tmp = dest.with_name(dest.name + ".safehold-tmp")
        tmp.write_bytes(datas[0])
        tmp.replace(dest)
        if spool is not None:
            _, inn = spool_dirs(spool / names[0])
            for obj_, data in zip(wanted[1:], datas[1:], strict=True):
                part = inn / f".{obj_.name}.tmp"
                part.write_bytes(data)
                part.replace(inn / obj_.name)


@pg_app.command("backup")
def pg_backup(
    url: Annotated[str, typer.Argument(help="libpq URL of a role with REPLICATION.")],
    stanza: StanzaOpt = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag the snapshot.")] = None,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", help="Block size of deduplication (bytes).")
    ] = 16384,
    wal_timeout: Annotated[
        float, typer.Option("--wal-timeout", help="Seconds to wait for the backup's WAL.")
    ] = 120.0,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Take a base backup (pg_basebackup, streamed); stored once its WAL is archived."""
    src = PostgresSource(url, stanza=stanza, chunk_size=chunk_size, wal_timeout=wal_timeout)
    with open_repo(repo, password_file) as r:
        res = src.backup(r, tags=tag or (), progress=progress_sink(json_output))
    b = PgBackup.from_snapshot(res.snapshot)
    assert b is not None
    if json_output:
        print_json({"snapshot": res.snapshot.id, "stanza": b.stanza, "sizes": res.snapshot.sizes})
        return
    s = res.snapshot.sizes
    console.print(
        f"base backup {res.snapshot.short_id} of {b.stanza}: {s.logical / 1e6:.1f} MB read, "
        f"{s.new / 1e6:.2f} MB new; WAL {b.start_segment.name} .. {b.stop_segment.name}"
    )


def _target(time_: str | None, lsn: str | None, name: str | None, backup: str | None) -> Target:
    given = [x for x in (time_, lsn, name, backup) if x]
    if len(given) > 1:
        raise UsageError("give at most one of --time, --lsn, --name and --backup")
    if time_:
        try:
            at = datetime.fromisoformat(time_.replace("Z", "+00:00"))
        except ValueError as exc:
            raise UsageError(f"{time_!r} is not an ISO 8601 time") from exc
        if at.tzinfo is None:
            raise UsageError(f"{time_!r} has no time zone: add Z or an offset like +01:00")
        return Time(at.astimezone(UTC))
    if lsn:
        return Lsn(lsn)
    if name:
        return Name(name)
    if backup:
        return BackupId(backup)
    return Latest()


@pg_app.command("restore")
def pg_restore(
    target: Annotated[Path, typer.Argument(help="The new data directory (empty, unless --delta).")],
    stanza: StanzaOpt = None,
    time_: Annotated[str | None, typer.Option("--time", help="ISO 8601, with a zone.")] = None,
    lsn: Annotated[str | None, typer.Option("--lsn")] = None,
    name: Annotated[str | None, typer.Option("--name", help="A restore point.")] = None,
    backup: Annotated[str | None, typer.Option("--backup", help="A base backup's id.")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    os_user: Annotated[str, typer.Option("--os-user")] = "postgres",
    stop: Annotated[bool, typer.Option("--stop", help="Stop the server once ready.")] = False,
    delta: Annotated[
        bool,
        typer.Option(
            "--delta",
            help="TARGET may hold a stopped, older copy of the same cluster: "
            "fetch only the chunks that differ.",
        ),
    ] = False,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
) -> None:
    """Restore to the latest state, a backup, a time, an LSN or a restore point; start it."""
    to = _target(time_, lsn, name, backup)
    src = PostgresSource("", stanza=stanza)
    with open_repo(repo, password_file) as r:
        res = src.restore(
            r, target, to=to, port=port, os_user=os_user, keep_running=not stop, delta=delta
        )
    where = f"running on port {res.server.port}" if res.server else "stopped"
    if res.delta is not None:
        d = res.delta
        console.print(
            f"delta: {d.files_changed} of {d.files} files changed, {d.chunks_fetched} of "
            f"{d.chunks} chunks fetched, {d.bytes_fetched:,} bytes read of {d.full_bytes:,}, "
            f"{d.removed} local entries removed"
        )
    console.print(
        f"restored {res.datadir} from base backup {res.backup.snapshot.short_id} "
        f"and {res.wal_fetched} WAL files; {where}"
    )


@pg_app.command("check")
def pg_check(
    stanza: StanzaOpt = None,
    spool: SpoolOpt = None,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Find gaps in the archived WAL chain and backups whose WAL is missing (exit 1)."""
    with open_repo(repo, password_file, load_index=False) as r:
        backups = pg_backups(r.snapshots())
        stanzas = [stanza] if stanza else sorted({b.stanza for b in backups})
        reports = [
            check_wal(WalArchive(r, s), [b for b in backups if b.stanza == s]) for s in stanzas
        ]
    pending = {s: len(spool_pending(spool / s)) for s in stanzas} if spool else {}
    if json_output:
        print_json({"stanzas": reports, "spool_pending": pending})
    for rep in reports:
        if json_output:
            break
        console.print(
            f"{rep.stanza}: {rep.segments} segments archived ({rep.first} .. {rep.last}); "
            f"spool holds {pending.get(rep.stanza, 0)}"
        )
        for m in rep.missing:
            console.print(f"  missing WAL segment {m}", markup=False)
        for sid in rep.unrestorable:
            console.print(f"  base backup {sid[:8]} lacks WAL it needs", markup=False)
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


@pg_app.command("expire")
def pg_expire(
    stanza: StanzaOpt = None,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
) -> None:
    """Delete archived WAL that no remaining base backup needs (run after forget)."""
    with open_repo(repo, password_file, load_index=False) as r:
        backups = pg_backups(r.snapshots())
        stanzas = [stanza] if stanza else sorted({b.stanza for b in backups})
        for s in stanzas:
            n = expire_wal(WalArchive(r, s), [b for b in backups if b.stanza == s])
            console.print(f"{s}: {n} WAL files deleted")


@pg_app.command("receive-wal")
def receive_wal(
    url: Annotated[str, typer.Argument(help="libpq URL of a role with REPLICATION.")],
    spool: SpoolOpt = None,
    stanza: StanzaOpt = None,
    slot: Annotated[str, typer.Option("--slot", help="Replication slot to hold.")] = "safehold",
    synchronous: Annotated[
        bool,
        typer.Option(
            "--synchronous",
            help="Flush every write and report it: RPO 0 with the primary's "
            "synchronous_standby_names = 'safehold_receivewal'.",
        ),
    ] = False,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
) -> None:
    """Stream WAL with pg_receivewal into the archive until stopped (instead of archive-push)."""
    from safehold.db.receivewal import WalReceiver, cluster_stanza

    if spool is None:
        raise UsageError("receive-wal needs --spool (a local directory for the stream)")
    name = stanza or cluster_stanza(url)
    password = read_password(password_file)

    def open_archive() -> WalArchive:
        r = Repository.open(storage_for(repo), password, load_index=False, owns_storage=True)
        return WalArchive(r, name)

    rx = WalReceiver(url, spool / name, open_archive, slot=slot, synchronous=synchronous).start()
    asked = follow_stream(rx, f"streaming WAL of {name} (slot {slot}); stop with Ctrl-C or SIGTERM")
    if not asked and not rx.running:
        from safehold.db import DbError

        # The stream ended (the primary is gone): what it held is archived,
        # the segment in progress as <name>.partial; exit 1 so a supervisor restarts.
        raise DbError(f"pg_receivewal stopped: {rx.stderr_tail()}")
