"""
Consistency groups on an agent: a ``group-backup`` or ``group-restore`` work item
runs ``db.groups`` over every member of the group (``service.groups``).

- **Backup**: each member's source becomes a ``db.groups`` member (``dir:PATH``
  a ``DirMember``, ``postgres:URL`` a ``PgMember``; the partition id is the
  member's name) and ``backup_group`` stores the point. The outcome carries the
  point and each member's snapshot (``Outcome.Group``), which the controller
  records as the members' backups.
- **Restore**: every member is restored *beside* its destination (``pgdata:PATH``
  for PostgreSQL, ``dir:PATH`` or the source directory for a directory), to the
  point; the group's validators run on those copies with the PostgreSQL
  members running. Only when every member came back and the validators found
  nothing is each copy swapped in for its destination (``start=1`` starts the
  server again); otherwise nothing is swapped in, the copies are removed and the
  job fails naming what was wrong. A PostgreSQL server running in a
  destination refuses the whole restore before anything is done.
- **Drill** (``drill``): the same restore into a sandbox directory, validated,
  then removed; nothing is swapped in.
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from safehold.agent.sources import DbSourceError, after_backup, parse_spec, swap_in
from safehold.core.progress import ProgressSink
from safehold.core.snapshot import SnapshotMeta, format_time, parse_time
from safehold.core.work import GroupMember, GroupPointRef, Outcome, SnapshotRef, WorkItem
from safehold.repo.repository import Repository
from safehold.storage.base import Storage

__all__ = ["GROUP_KINDS", "run_group"]

#: The job kinds this module runs.
GROUP_KINDS = ("group-backup", "group-restore")
#: How much of the validators' findings goes into a failure message.
MAX_PROBLEMS = 20

log = logging.getLogger("safehold.agent")

_PG_OPTIONS = ("stanza", "wal_timeout", "chunk_size", "bindir")


class GroupJobError(DbSourceError):
    """A group's member cannot be backed up or restored as asked."""

    code = "SAFEHOLD_E_GROUP"


class GroupValidationFailed(DbSourceError):
    """The group came back, but its cross-reference validators found problems."""

    code = "SAFEHOLD_E_GROUP_VALIDATION"


def run_group(
    item: WorkItem,
    engine: object,
    storage: Storage,
    progress: ProgressSink,
    clock: Callable[[], datetime],
) -> Outcome:
    """Run a group work item; raise (``SafeholdError``) for the job's own failure."""
    del progress, clock  # db.groups reports no progress yet; its points carry their own time
    opener = getattr(engine, "open_repository", None)
    if opener is None:
        raise GroupJobError("this agent's engine cannot run consistency groups")
    if item.Kind == "group-backup":
        params = item.group_backup()
        with opener(storage, create=True) as repo:
            outcome = _backup(repo, params.group, params.members)
            after_backup(engine, repo)
            return outcome
    params_r = item.group_restore()
    with opener(storage, create=False) as repo:
        return _restore(repo, item, params_r.point)


def _member(m: GroupMember) -> Any:
    from safehold.db.groups import DirMember, PgMember

    kind, _, rest = m.Source.partition(":")
    if kind == "dir":
        path = Path(rest)
        if not path.is_dir():
            raise GroupJobError(f"member {m.PartitionId}: the directory {path} does not exist")
        return DirMember(m.PartitionId, path)
    if kind == "postgres":
        from safehold.db import PostgresSource

        url, opts = parse_spec(m.Source, _PG_OPTIONS)
        if urlsplit(url).password:
            raise GroupJobError(f"member {m.PartitionId}: a postgres: source carries no password")
        kw: dict[str, Any] = {"stanza": opts.get("stanza") or None, "bindir": opts.get("bindir")}
        try:
            if opts.get("wal_timeout"):
                kw["wal_timeout"] = float(opts["wal_timeout"])
            if opts.get("chunk_size"):
                kw["chunk_size"] = int(opts["chunk_size"])
        except ValueError as exc:
            raise GroupJobError(f"member {m.PartitionId}: {exc}") from exc
        return PgMember(m.PartitionId, PostgresSource(url, **kw))
    raise GroupJobError(f"member {m.PartitionId}: a group holds dir: and postgres: sources")


def _backup(repo: Repository, group: str, members: list[GroupMember]) -> Outcome:
    from safehold.db.groups import backup_group

    meta = SnapshotMeta(host=f"group-{group}", tags=("safehold-service",))
    point = backup_group(repo, group, [_member(m) for m in members], meta=meta)

    def ref(snapshot_id: str) -> SnapshotRef:
        snap = repo.find_snapshot(snapshot_id)
        return SnapshotRef(Id=snap.id, Time=format_time(snap.time), Size=snap.sizes.logical)

    log.info("group %s backed up to point %s", group, point.restore_point)
    return Outcome(
        State="Success",
        Group=GroupPointRef(
            Group=group,
            Time=format_time(point.time),
            RestorePoint=point.restore_point,
            SnapshotId=point.snapshot_id,
            Members={pid: ref(sid) for pid, sid in point.snapshots.items()},
        ),
    )


def _destination(m: GroupMember, *, drill: bool) -> tuple[Path, dict[str, str]]:
    """Where a member is restored to, and the target's options (a drill needs neither)."""
    if m.Source.startswith("postgres:"):
        target = m.RestoreTo or ""
        if drill and not target.startswith("pgdata:"):
            return Path(tempfile.gettempdir()) / m.PartitionId, {}
        if not target.startswith("pgdata:"):
            raise GroupJobError(
                f"member {m.PartitionId}: register its restore target as pgdata:PATH"
            )
        where, opts = parse_spec(target, ("port", "os_user", "start"))
    else:
        target = m.RestoreTo or m.Source
        if not target.startswith("dir:"):
            raise GroupJobError(f"member {m.PartitionId}: a directory restores into dir:PATH")
        where, opts = target[4:], {}
    dest = Path(where)
    if not dest.is_absolute():
        raise GroupJobError(f"member {m.PartitionId}: the restore target {where!r} is not absolute")
    return dest, opts


@contextmanager
def _scratch(parent: Path, name: str) -> Iterator[Path]:
    """A scratch directory under *parent*, readable by a server's OS user; removed after."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.group-restore-", dir=parent))
    try:
        tmp.chmod(0o755)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _restore(repo: Repository, item: WorkItem, ref: GroupPointRef) -> Outcome:
    from safehold.db import LocalServer, find_bindir
    from safehold.db.groups import GroupPoint, blob_paths_exist, restore_group

    params = item.group_restore()
    members = [_member_for_restore(m) for m in params.members]
    point = GroupPoint(
        params.group,
        parse_time(ref.Time),
        ref.RestorePoint,
        {pid: s.Id for pid, s in ref.Members.items()},
        ref.SnapshotId,
    )
    dests = {m.PartitionId: _destination(m, drill=params.drill) for m in params.members}
    for m in params.members:
        dest, opts = dests[m.PartitionId]
        os_user = opts.get("os_user") or "postgres"
        live = m.Source.startswith("postgres:") and not params.drill
        if live and LocalServer(dest, 0, find_bindir(), os_user).running():
            raise GroupJobError(f"a PostgreSQL server is running in {dest}: stop it first")
    validators = [blob_paths_exist(v.Database, v.Query, v.Directory) for v in params.validators]
    # A drill measures as a partition's drill does: RTO from the start of the restore
    # until the validators pass, RPO as the point's age when the drill started.
    started, t0 = datetime.now(UTC), time.monotonic()
    with ExitStack() as stack:
        sandbox = None
        if params.drill:
            base = Path(params.sandbox_dir or tempfile.gettempdir())
            sandbox = stack.enter_context(_scratch(base, f"drill-{params.group}"))
        targets: dict[str, Path] = {}
        for m in params.members:
            dest = dests[m.PartitionId][0]
            where = (
                sandbox / m.PartitionId
                if sandbox
                else stack.enter_context(_scratch(dest.parent, dest.name))
            )
            where.mkdir(exist_ok=True, mode=0o755)
            targets[m.PartitionId] = where / "pgdata" if m.Source.startswith("postgres:") else where
        pg_opts = {"os_user": _os_user(params.members, dests)}
        out = restore_group(
            repo, point, members, targets, validators=validators, pg_options=pg_opts
        )
        rto = time.monotonic() - t0  # the validators have run; kept if they passed
        for restored in out.members.values():
            server = getattr(restored, "server", None)
            if server is not None:
                server.stop()
        if out.problems:
            shown = "; ".join(out.problems[:MAX_PROBLEMS])
            more = len(out.problems) - MAX_PROBLEMS
            raise GroupValidationFailed(
                f"group {params.group} restored to point {ref.RestorePoint}, but the "
                f"validators found {len(out.problems)} problem(s): {shown}"
                + (f" (and {more} more)" if more > 0 else "")
            )
        if not params.drill:
            _swap_all(params.members, dests, out.members, targets)
    what = "drilled" if params.drill else "restored"
    log.info("group %s %s to point %s", params.group, what, ref.RestorePoint)
    result: dict[str, Any] = {"Problems": [], "Drill": params.drill}
    if params.drill:
        result |= {
            "RtoSeconds": round(rto, 3),
            "RpoSeconds": round(max(0.0, (started - point.time).total_seconds()), 3),
            "Validators": [
                {
                    "Kind": v.Kind,
                    "Name": f"{v.Database}: {v.Query}"[:200],
                    "Passed": True,
                    "Detail": f"every path it returns exists in {v.Directory}",
                }
                for v in params.validators
            ],
            "Sandbox": str(sandbox),
            "Host": socket.gethostname(),
        }
    else:
        result["Validators"] = len(validators)
    return Outcome(State="Success", Group=ref, Result=result)


def _member_for_restore(m: GroupMember) -> Any:
    """A restore needs no live source directory (it may be the one lost)."""
    if m.Source.startswith("dir:"):
        from safehold.db.groups import DirMember

        return DirMember(m.PartitionId, Path(m.Source[4:]))
    return _member(m)


def _os_user(members: list[GroupMember], dests: dict[str, tuple[Path, dict[str, str]]]) -> str:
    users = {dests[m.PartitionId][1].get("os_user") or "postgres" for m in members}
    users.discard("")
    if len(users) > 1:
        raise GroupJobError("the PostgreSQL members of one group restore as one OS user")
    return users.pop() if users else "postgres"


def _swap_all(
    members: list[GroupMember],
    dests: dict[str, tuple[Path, dict[str, str]]],
    results: dict[str, Any],
    targets: dict[str, Path],
) -> None:
    """Put every restored copy in place; start PostgreSQL members asked to (``start=1``)."""
    from safehold.db import LocalServer, find_bindir

    for m in members:
        dest, opts = dests[m.PartitionId]
        pid = m.PartitionId
        restored = targets[pid] if m.Source.startswith("postgres:") else Path(results[pid])
        swap_in(restored, dest)
        if m.Source.startswith("postgres:") and opts.get("start") in ("1", "yes", "true"):
            port = int(opts.get("port") or results[pid].server.port)
            LocalServer(dest, port, find_bindir(), opts.get("os_user") or "postgres").start()
