"""
Consistency groups: several stores backed up as one group and restored to one point.

    group = [PgMember("orders", PostgresSource(url)), DirMember("blobs", Path("/srv/blobs"))]
    point = backup_group(repo, "shop", group)                 # one GroupPoint, stored
    out = restore_group(repo, point, group, {"orders": Path("/srv/pg-new"), "blobs": Path("/r")},
                        validators=[blob_paths_exist("orders", "SELECT path FROM blobs", "blobs")])
    assert out.problems == []

**The point.** ``backup_group`` takes each PITR member's base backup (PostgreSQL:
any time before the point, WAL covers the rest), then marks the point: it
creates a *named restore point* in each PostgreSQL member, one after the other
(``pg_create_restore_point``, exact and independent of clocks; between two
clusters, as consistent as the application's order of writes across them),
switches WAL and waits until the point is archived, and only *then* snapshots
the other members (directories). A row committed before the point had its blob written before
the commit, so the blob is in a directory snapshot started after the point:
restoring the database to the point and the directory to that snapshot gives
every row its blob (blobs written after the point are extra, never missing).
The ``before``/``after`` callables run around the non-PITR snapshots (freeze
and thaw a writer, say) when even that is not enough.

The point is stored as a one-file snapshot (``group-point.json``, tags
``group-point``, ``group=<name>``, ``group-time=<T>``) naming the restore
point and each member's snapshot, so a storage alone lists a group's points
(``group_points``).

**Restore.** ``restore_group`` brings every member back together: PostgreSQL
members exactly to the named restore point, directories to their snapshot of
the point, then runs the *validators* on the restored copies and returns what
they found; ``restore_group_at(time)`` restores the newest point at or before
the time (a directory has no history between its snapshots). A member that
fails stops the group: the error names it, and members already restored stay
as they are (a restore replaces data; restoring the previous point is the way
back).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

from safehold.core.snapshot import Snapshot, SnapshotMeta, format_time, parse_time
from safehold.db.catalog import PgBackup
from safehold.db.errors import DbError, RecoveryTargetError
from safehold.db.pgwal import parse_lsn, segment_of
from safehold.db.postgres import PostgresSource, wait_for_wal
from safehold.db.recovery import Name, PgRestoreResult, restore_postgres
from safehold.db.walstore import WalArchive
from safehold.repo import backup_paths, backup_stream, dump, restore
from safehold.repo.repository import Repository

__all__ = [
    "DirMember",
    "GroupPoint",
    "GroupRestore",
    "PgMember",
    "Validator",
    "backup_group",
    "blob_paths_exist",
    "group_points",
    "restore_group",
    "restore_group_at",
]

POINT_TAG = "group-point"
POINT_FILE = "group-point.json"


@dataclass(frozen=True)
class PgMember:
    """A PostgreSQL cluster in a group: restored by WAL replay, exactly to the point."""

    name: str
    source: PostgresSource


@dataclass(frozen=True)
class DirMember:
    """A directory in a group: restored to its snapshot of the point."""

    name: str
    path: Path


Member = PgMember | DirMember


@dataclass(frozen=True)
class GroupPoint:
    """One instant of a group: the restore point's name, its time, each member's snapshot."""

    group: str
    time: datetime
    restore_point: str
    snapshots: dict[str, str]  # member name -> snapshot id (a base backup, for PITR members)
    snapshot_id: str = ""  # the point's own snapshot

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "group": self.group,
            "time": format_time(self.time),
            "restore_point": self.restore_point,
            "snapshots": self.snapshots,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any], snapshot_id: str = "") -> GroupPoint:
        """Read the stored form."""
        return cls(
            doc["group"],
            parse_time(doc["time"]),
            doc["restore_point"],
            dict(doc["snapshots"]),
            snapshot_id,
        )


@dataclass
class GroupRestore:
    """What a group restore did: each member's result, and the validators' findings."""

    point: GroupPoint | None
    time: datetime
    members: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


Validator = Callable[[GroupRestore], list[str]]


def backup_group(
    repo: Repository,
    group: str,
    members: Sequence[Member],
    *,
    meta: SnapshotMeta | None = None,
    before: Callable[[], None] | None = None,
    after: Callable[[], None] | None = None,
) -> GroupPoint:
    """
    Back up every member of *group* and store the group's point; return it.

    Raises:
        DbError: a member's backup failed (the point is not stored; the members'
            snapshots taken so far stay, as ordinary backups).
    """
    if len({m.name for m in members}) != len(members):
        raise DbError("the members of a group need distinct names")
    meta = meta or SnapshotMeta()
    snaps: dict[str, str] = {}
    bases: dict[str, PgBackup] = {}
    for m in members:
        if isinstance(m, PgMember):
            member_tags = (f"group={group}", f"group-member={m.name}")
            snap = m.source.backup(repo, meta=meta, tags=member_tags).snapshot
            snaps[m.name] = snap.id
            base = PgBackup.from_snapshot(snap)
            assert base is not None
            bases[m.name] = base
    now = datetime.now(UTC)
    point_name = f"safehold-{group}-{now:%Y%m%dT%H%M%S%fZ}"
    pgs = [m for m in members if isinstance(m, PgMember)]
    marked = {m.name: _mark(m.source, point_name) for m in pgs}
    timeouts = {m.name: m.source.wal_timeout for m in pgs}
    if before is not None:
        before()
    try:
        for m in members:
            if isinstance(m, DirMember):
                tagged = replace(
                    meta, tags=(*meta.tags, f"group={group}", f"group-member={m.name}")
                )
                snaps[m.name] = backup_paths(repo, [m.path], meta=tagged).snapshot.id
    finally:
        if after is not None:
            after()
    # The point is complete only once every PostgreSQL member's WAL holding it is archived.
    for name, lsn in marked.items():
        base = bases[name]
        seg = segment_of(base.timeline, lsn, base.segment_size)
        wait_for_wal(WalArchive(repo, base.stanza), [seg], timeouts[name])
    point = GroupPoint(group, now, point_name, snaps)
    body = json.dumps(point.to_json(), indent=1).encode()
    tags = (*meta.tags, POINT_TAG, f"group={group}", f"group-time={format_time(now)}")
    stored = backup_stream(
        repo, BytesIO(body), name=POINT_FILE, meta=replace(meta, tags=tags, time=now)
    ).snapshot
    return replace(point, snapshot_id=stored.id)


def _mark(source: PostgresSource, point_name: str) -> int:
    """Create the named restore point, close its WAL segment so it is archived; its LSN."""
    import psycopg

    try:
        with psycopg.connect(source.url, autocommit=True, connect_timeout=30) as conn:
            got = conn.execute("SELECT pg_create_restore_point(%s)::text", (point_name,))
            row = got.fetchone()
            if row is None:
                raise DbError("pg_create_restore_point returned nothing")
            lsn = parse_lsn(str(row[0]))
            conn.execute("SELECT txid_current()")  # a commit after the point
            conn.execute("SELECT pg_switch_wal()")
    except psycopg.Error as exc:
        raise DbError(f"cannot mark the group point in a PostgreSQL member: {exc}") from exc
    return lsn


def group_points(repo: Repository, group: str) -> list[GroupPoint]:
    """The stored points of *group*, oldest first."""
    out = []
    for snap in repo.snapshots():
        if POINT_TAG in snap.tags and f"group={group}" in snap.tags:
            buf = BytesIO()
            dump(repo, snap, buf, POINT_FILE)
            out.append(GroupPoint.from_json(json.loads(buf.getvalue()), snap.id))
    return sorted(out, key=lambda p: p.time)


def restore_group(
    repo: Repository,
    point: GroupPoint,
    members: Sequence[Member],
    targets: Mapping[str, Path],
    *,
    validators: Sequence[Validator] = (),
    pg_options: Mapping[str, Any] | None = None,
) -> GroupRestore:
    """
    Restore every member to *point*: PostgreSQL members to its restore point,
    directories to their snapshot of it; then run *validators*.

    *targets* maps each member's name to its restore target (a data directory
    for PostgreSQL, a directory under which a directory member is written).
    PostgreSQL members are left running (``GroupRestore.members[name].server``).
    """
    out = GroupRestore(point, point.time)
    for m in members:
        target = _target(targets, m)
        try:
            if isinstance(m, PgMember):
                base = PgBackup.from_snapshot(repo.find_snapshot(point.snapshots[m.name]))
                stanza = base.stanza if base is not None else m.source.stanza
                to = Name(point.restore_point)
                out.members[m.name] = _restore_pg(repo, m, target, to, pg_options, stanza)
            else:
                snap = repo.find_snapshot(point.snapshots[m.name])
                out.members[m.name] = _restore_dir(repo, snap, target)
        except KeyError as exc:
            raise DbError(f"the group point has no snapshot of member {m.name!r}") from exc
    _validate(out, validators)
    return out


def restore_group_at(
    repo: Repository,
    group: str,
    at: datetime,
    members: Sequence[Member],
    targets: Mapping[str, Path],
    *,
    validators: Sequence[Validator] = (),
    pg_options: Mapping[str, Any] | None = None,
) -> GroupRestore:
    """
    Restore every member to the group's newest point at or before *at*.

    A directory has no history between its snapshots, so the group cannot be
    consistent at an arbitrary instant: it goes to the point before it (restore
    one PostgreSQL member alone to reach *at* exactly).

    Raises:
        RecoveryTargetError: the group has no point that old.
    """
    points = [p for p in group_points(repo, group) if p.time <= at]
    if not points:
        raise RecoveryTargetError(f"group {group!r} has no point at or before {format_time(at)}")
    return restore_group(
        repo, points[-1], members, targets, validators=validators, pg_options=pg_options
    )


def _target(targets: Mapping[str, Path], m: Member) -> Path:
    if m.name not in targets:
        raise DbError(f"no restore target for member {m.name!r}")
    return Path(targets[m.name])


def _restore_pg(
    repo: Repository,
    m: PgMember,
    target: Path,
    to: Name,
    options: Mapping[str, Any] | None,
    stanza: str | None,
) -> PgRestoreResult:
    opts = dict(options or {})
    opts.setdefault("bindir", m.source.bindir)
    return restore_postgres(repo, target, to=to, stanza=stanza or m.source.stanza, **opts)


def _restore_dir(repo: Repository, snap: Snapshot, target: Path) -> Path:
    """Restore a directory member's snapshot under *target*; return the restored directory."""
    restored = target / Path(snap.paths[0]).name
    if restored.exists():
        shutil.rmtree(restored)
    restore(repo, snap, target)
    return restored


def _validate(out: GroupRestore, validators: Sequence[Validator]) -> None:
    for check in validators:
        try:
            out.problems += check(out)
        except Exception as exc:  # a broken validator is a finding, not a crash
            out.problems.append(f"validator {getattr(check, '__name__', check)!r} failed: {exc}")


def blob_paths_exist(pg_member: str, query: str, dir_member: str) -> Validator:
    """
    A validator: every path that *query* returns from the restored PostgreSQL
    member exists in the restored directory member (paths relative to it).
    """

    def blob_paths_exist(out: GroupRestore) -> list[str]:
        server = out.members[pg_member].server
        if server is None:
            return [f"member {pg_member!r} is not running: cannot query it"]
        root: Path = out.members[dir_member]
        with server.connect() as conn:
            paths = [str(r[0]) for r in conn.execute(query).fetchall()]
        missing = [p for p in paths if not (root / p).is_file()]
        return [f"{dir_member}/{p} is missing (referenced by {pg_member})" for p in missing]

    return blob_paths_exist
