"""
PostgreSQL as a backup source: base backups, the WAL archive's health, retention.

``PostgresSource(url)`` is what a ``postgres:`` partition source becomes:

    src = PostgresSource("postgresql://backup@db1:5432/postgres")
    result = src.backup(repo, meta=SnapshotMeta(...))    # a base backup, complete with its WAL
    src.restore(repo, Path("/srv/pg/data"), to=Time(t))  # see ``safehold.db.recovery``

The base backup runs ``pg_basebackup`` over the replication protocol, so the
agent need not be on the database host, and streams its tar output straight
into the repository (``pagetar``): nothing is staged. WAL reaches the archive
through ``archive_command`` (``safehold pg archive-push``) on the database host.
A backup is stored only once every WAL segment from its start to its stop is in
the archive (``BackupIncomplete`` otherwise).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from safehold.core.errors import SafeholdError
from safehold.core.progress import NullProgress, ProgressSink
from safehold.core.snapshot import Snapshot, SnapshotMeta, SnapshotSizes
from safehold.db.catalog import BackupPosition, PgBackup, pg_backups
from safehold.db.errors import BackupIncomplete, DbError, DbToolError
from safehold.db.pagetar import DEFAULT_PAGE, ReadAhead, TarIngest, make_snapshot
from safehold.db.pgwal import Segment, is_segment_name, parse_lsn, segment_of
from safehold.db.recovery import PgRestoreResult, Target, restore_postgres
from safehold.db.server import find_bindir
from safehold.db.walstore import WalArchive
from safehold.repo import BackupResult
from safehold.repo.locks import RepoLock
from safehold.repo.repository import Repository
from safehold.repo.writer import BlobWriter

__all__ = [
    "PostgresSource",
    "WalCheck",
    "Window",
    "check_wal",
    "expire_wal",
    "recoverable_window",
    "stanza_for",
]

ROOT_NAME = "pgdata"
_CAPTURE = ("backup_label", "backup_manifest", "global/pg_control")
_LABEL_RE = re.compile(r"START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+) \(file ([0-9A-F]{24})\)")
_TLI_RE = re.compile(r"START TIMELINE: (\d+)")
_END_RE = re.compile(r"write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)")


def stanza_for(sysid: int) -> str:
    """The default archive name of a cluster: ``pg-<system identifier>``."""
    return f"pg-{sysid}"


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """A conninfo without the password, and the environment that carries it."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    except Exception as exc:  # psycopg raises ProgrammingError for bad URLs
        raise DbError("the PostgreSQL connection URL is malformed") from exc
    env = {}
    if "password" in params:
        env["PGPASSWORD"] = params.pop("password")
    return make_conninfo(**params), env


def _redacted(url: str) -> str:
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:****@", url)


def _segment_size(lsn: int, name: str, timeline: int) -> int:
    for shift in range(20, 31):
        if segment_of(timeline, lsn, 1 << shift).name == name:
            return 1 << shift
    raise DbError(f"backup_label names segment {name}, which does not hold its start LSN")


@dataclass
class PostgresSource:
    """
    A PostgreSQL cluster reached through a libpq URL.

    Attributes:
        url: libpq URL or conninfo of a role with the REPLICATION attribute (or a
            superuser). A password in it is passed through the environment,
            never on a command line, and never appears in a message.
        stanza: the name of the cluster's WAL archive in the repository; by
            default ``pg-<system identifier>``, which is also what
            ``archive-push`` uses by default.
        chunk_size: the block size of deduplication (two PostgreSQL pages).
        bindir: where ``pg_basebackup`` is; found by ``find_bindir`` if None.
        wal_timeout: how long a backup waits for its WAL to reach the archive.
    """

    url: str
    stanza: str | None = None
    chunk_size: int = DEFAULT_PAGE
    bindir: str | None = None
    wal_timeout: float = 120.0
    extra_args: Sequence[str] = field(default_factory=tuple)

    def backup(
        self,
        repo: Repository,
        *,
        meta: SnapshotMeta | None = None,
        tags: Sequence[str] = (),
        progress: ProgressSink | None = None,
        parent: str | None = None,
    ) -> BackupResult:
        """
        Take a base backup into *repo*; return the stored snapshot.

        *parent* names the snapshot whose chunk lists large files are patched
        over (the partition's previous backup, which the controller knows); without
        one, the newest snapshot of the same cluster is looked for among all of the
        repository's snapshots, which costs a read of each in a shared repository.

        The snapshot is a directory snapshot (root ``pgdata``) tagged as in
        ``safehold.db.catalog``; ``PgBackup.from_snapshot`` reads it back.

        Raises:
            DbToolError: pg_basebackup failed (its stderr's tail is in the message).
            BackupIncomplete: the WAL from start to stop did not reach the archive
                within ``wal_timeout``; nothing is stored but unreferenced data.
        """
        meta = meta or SnapshotMeta()
        progress = progress or NullProgress()
        conninfo, env = _split_url(self.url)
        argv = [
            str(find_bindir(self.bindir) / "pg_basebackup"),
            "-d",
            conninfo,
            "-D",
            "-",
            "-Ft",
            "-X",
            "none",
            "-c",
            "fast",
            "-v",
            "--manifest-checksums=NONE",
            "-l",
            f"safehold {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}",
            *self.extra_args,
        ]
        with tempfile.TemporaryFile() as err, RepoLock(repo.storage, exclusive=False, wait=30.0):
            repo.refresh_index()
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=err, env={**os.environ, **env}
            )
            assert proc.stdout is not None
            writer = BlobWriter(repo, progress=progress)
            progress.begin("backup", total_bytes=None, total_items=None)
            try:
                ingest = TarIngest(
                    repo,
                    writer,
                    root_name=ROOT_NAME,
                    chunk_size=self.chunk_size,
                    capture=_CAPTURE,
                    progress=progress,
                    parent_tree=_tree_of(repo, parent),
                )
                ahead = ReadAhead(cast(BinaryIO, proc.stdout))
                try:
                    tar = ingest.run(cast(BinaryIO, ahead))
                except BaseException:
                    proc.kill()  # so the read-ahead thread meets the end at once
                    raise
                finally:
                    ahead.close()
                    proc.stdout.close()
                    code = proc.wait()
                err.seek(0)
                stderr = err.read().decode(errors="replace")
                if code != 0:
                    raise DbToolError(
                        f"pg_basebackup from {_redacted(self.url)} exited with status {code}: "
                        f"{stderr[-600:].strip()}"
                    )
                writer.flush()
            finally:
                writer.close()
                progress.end()
            info = self._describe(tar.captured, stderr)
            archive = WalArchive(repo, info.stanza)
            wait_for_wal(archive, info.needed_segments(), self.wal_timeout)
            sizes = SnapshotSizes(
                logical=tar.logical,
                stored=writer.stored_bytes,
                new=writer.new_bytes,
                files=tar.files,
            )
            meta = replace(meta, tags=(*meta.tags, *tags, *info.tags()))
            snap = repo.save_snapshot(
                make_snapshot(meta, tree=tar.tree, root_name=ROOT_NAME, sizes=sizes)
            )
        return BackupResult(snap, [], files_new=tar.files, bytes_read=tar.logical)

    def _describe(self, captured: dict[str, bytes], stderr: str) -> BackupPosition:
        """Read the backup's WAL position from its label, manifest and control file."""
        import json

        label = captured.get("backup_label", b"").decode(errors="replace")
        m, t = _LABEL_RE.search(label), _TLI_RE.search(label)
        control = captured.get("global/pg_control", b"")
        if not m or not t or len(control) < 8:
            raise DbError("the base backup has no readable backup_label or pg_control")
        start, timeline = parse_lsn(m.group(1)), int(t.group(1))
        seg_size = _segment_size(start, m.group(2), timeline)
        stop = None
        try:
            manifest = json.loads(captured.get("backup_manifest", b"{}"))
            stop = max(parse_lsn(r["End-LSN"]) for r in manifest["WAL-Ranges"])
        except (ValueError, KeyError, TypeError):
            end = _END_RE.search(stderr)
            stop = parse_lsn(end.group(1)) if end else None
        if stop is None:
            raise DbError("the base backup's stop LSN is unknown (no manifest, no -v output)")
        sysid = int.from_bytes(control[:8], "little")
        return BackupPosition(
            stanza=self.stanza or stanza_for(sysid),
            sysid=sysid,
            timeline=timeline,
            start_lsn=start,
            stop_lsn=stop,
            stop_time=datetime.now(UTC),
            segment_size=seg_size,
        )

    def restore(
        self,
        repo: Repository,
        target_dir: Path,
        *,
        to: Target | None = None,
        **options: Any,
    ) -> PgRestoreResult:
        """
        Restore this cluster's backup and WAL into *target_dir*, up to *to*.

        See ``safehold.db.recovery.restore_postgres`` for the options and errors.
        """
        options.setdefault("bindir", self.bindir)
        return restore_postgres(repo, target_dir, to=to, stanza=self.stanza, **options)

    def backups(self, repo: Repository) -> list[PgBackup]:
        """This source's base backups in *repo* (by stanza if set), oldest first."""
        return pg_backups(repo.snapshots(), self.stanza)


def wait_for_wal(archive: WalArchive, needed: Sequence[Segment], timeout: float) -> None:
    """
    Wait until every segment in *needed* is archived.

    Raises:
        BackupIncomplete: one is still missing after *timeout* seconds; the
            message names the first missing segment.
    """
    deadline = time.monotonic() + timeout
    while True:
        have = archive.list()
        missing = [s.name for s in needed if s.name not in have]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise BackupIncomplete(
                f"the backup needs WAL segment {missing[0]}, which did not reach the archive "
                f"{archive.stanza} within {timeout:.0f} s: check archive_command and the spool"
            )
        time.sleep(0.1)


@dataclass
class WalCheck:
    """The health of a WAL archive: what is there, and the names of what is missing."""

    stanza: str
    segments: int
    first: str | None
    last: str | None
    missing: list[str]
    unrestorable: list[str]

    @property
    def ok(self) -> bool:
        """No gap, and every base backup has its WAL."""
        return not self.missing and not self.unrestorable


def check_wal(archive: WalArchive, backups: Sequence[PgBackup], *, limit: int = 1000) -> WalCheck:
    """
    Find gaps in the archived WAL chain.

    On each timeline, from its oldest base backup's start segment (or its first
    archived segment) to its newest archived segment, every segment must be
    present; each missing one is named (up to *limit*). Base backups whose
    start-to-stop segments are not all present are named as unrestorable.
    """
    listing = archive.list()
    size = backups[0].segment_size if backups else 16 * 1024 * 1024
    by_tli: dict[int, list[int]] = {}
    for name in listing:
        if is_segment_name(name):
            seg = Segment.parse(name, size)
            by_tli.setdefault(seg.timeline, []).append(seg.number)
    missing: list[str] = []
    for tli, numbers in sorted(by_tli.items()):
        have = set(numbers)
        starts = [b.start_segment.number for b in backups if b.timeline == tli]
        lo = min([*starts, min(numbers)])
        for n in range(lo, max(numbers) + 1):
            if n not in have and len(missing) < limit:
                missing.append(Segment(tli, n, size).name)
    unrestorable = [
        b.snapshot.id for b in backups if any(s.name not in listing for s in b.needed_segments())
    ]
    names = sorted(n for n in listing if is_segment_name(n))
    return WalCheck(
        archive.stanza,
        len(names),
        names[0] if names else None,
        names[-1] if names else None,
        missing,
        unrestorable,
    )


def expire_wal(archive: WalArchive, kept: Sequence[PgBackup]) -> int:
    """
    Delete archived WAL that no kept base backup needs; return how many files.

    Everything older than the oldest kept backup's start segment goes (segments,
    ``.backup`` and ``.partial`` files of any timeline); history files stay, as
    PostgreSQL reads them to follow timelines. With no kept backup nothing is
    deleted: WAL without a base backup is all that is left to recover from.
    """
    if not kept:
        return 0
    size = kept[0].segment_size
    oldest = min(b.start_segment.number for b in kept)
    doomed = []
    for name, obj in archive.list().items():
        head = name.split(".", 1)[0]
        if name.endswith(".history") or not is_segment_name(head):
            continue
        if Segment.parse(head, size).number < oldest:
            doomed.append(obj)
    return archive.delete(doomed)


@dataclass(frozen=True)
class Window:
    """
    What a cluster can be restored to: from the end of its oldest base backup to
    the end of the unbroken WAL after its newest one.

    ``end_lsn`` is the end of the last segment of that unbroken run (PostgreSQL
    may have written less into it); the archive does not record times, so the
    end is a position, and ``start`` the time the oldest backup became consistent.
    """

    stanza: str
    start: datetime
    start_lsn: int
    end_lsn: int
    end_segment: str


def recoverable_window(
    repo: Repository, stanza: str | None = None, snapshots: Sequence[Snapshot] | None = None
) -> Window | None:
    """The recoverable window of a cluster's backups (a partition's *snapshots*); None if none."""
    backups = pg_backups(repo.snapshots() if snapshots is None else snapshots, stanza)
    if not backups:
        return None
    newest = max(backups, key=lambda b: b.stop_lsn)
    listing = WalArchive(repo, newest.stanza).list()
    seg = newest.start_segment
    if seg.name not in listing:
        return None
    while seg.next().name in listing:
        seg = seg.next()
    oldest = backups[0]
    return Window(
        newest.stanza, oldest.stop_time, oldest.stop_lsn, seg.start_lsn + seg.size, seg.name
    )


def _tree_of(repo: Repository, snapshot_id: str | None) -> bytes | None:
    """The root tree of snapshot *snapshot_id* if it is a base backup here, else None."""
    if snapshot_id is None or not repo.keys.can_read:
        return None
    try:
        snap = repo.find_snapshot(snapshot_id)
    except SafeholdError:
        return None  # forgotten meanwhile: the newest of the cluster is looked for
    return bytes.fromhex(snap.tree) if snap.paths == (ROOT_NAME,) else None
