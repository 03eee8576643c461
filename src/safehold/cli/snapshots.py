"""``safehold snapshots`` and ``safehold ls``: what the repository holds."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from safehold.cli.app import app
from safehold.cli.common import (
    HostFilterOpt,
    JsonOpt,
    PasswordFileOpt,
    PathFilterOpt,
    RepoOpt,
    SkipDamagedOpt,
    TagFilterOpt,
    console,
    err_console,
    open_repo,
    print_json,
    select_snapshot,
    snapshot_filter,
)
from safehold.core.errors import NotFoundError
from safehold.repo.restore import walk


@app.command()
def snapshots(
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    host: HostFilterOpt = None,
    tag: TagFilterOpt = None,
    path: PathFilterOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """
    List the snapshots, oldest first; --host, --tag and --path select some.

    Exit status: 0; 10 no repository; 12 wrong password.
    """
    where = snapshot_filter(host, tag, path)
    with open_repo(repo, password_file, load_index=False) as r:
        snaps = [s for s in r.snapshots() if where.matches(s)]
        for msg in r.damaged_snapshots:
            err_console.print(f"warning: {msg}", markup=False, highlight=False)
    if json_output:
        print_json([{"id": s.id, **s.to_json()} for s in snaps])
        return
    table = Table("ID", "Time", "Host", "Tags", "Paths", "Size", box=None)
    for s in snaps:
        table.add_row(
            s.short_id,
            s.time.strftime("%Y-%m-%d %H:%M:%S"),
            s.host,
            ",".join(s.tags),
            "\n".join(s.paths),
            str(s.sizes.logical),
        )
    console.print(table)
    console.print(f"{len(snaps)} snapshots")


@app.command()
def ls(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id, unique prefix, or 'latest'.")],
    path: Annotated[
        str, typer.Argument(help="Only list under this path (as backed up, e.g. /srv/data/sub).")
    ] = "",
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    host: HostFilterOpt = None,
    tag: TagFilterOpt = None,
    path_filter: PathFilterOpt = None,
    skip_damaged: SkipDamagedOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """
    List the files of a snapshot, by the absolute paths they were backed up from.

    --host, --tag and --path select which snapshot 'latest' is.

    Exit status: 0; 13 'latest' is uncertain (a snapshot file is damaged);
    16 no such snapshot or path.
    """
    with open_repo(repo, password_file) as r:
        snap = select_snapshot(
            r, snapshot, snapshot_filter(host, tag, path_filter), skip_damaged=skip_damaged
        )
        prefix = snap.tree_path(path)
        rows = [
            (snap.source_path(p), n)
            for p, n in walk(r, bytes.fromhex(snap.tree))
            if not prefix or p == prefix or p.startswith(prefix + "/")
        ]
    if prefix and not rows:
        raise NotFoundError(f"no path {path!r} in snapshot {snap.short_id}")
    if json_output:
        print_json(
            [
                {
                    "path": p,
                    "type": n.type,
                    "size": n.size,
                    "mode": n.mode,
                    "mtime_ns": n.mtime_ns,
                }
                for p, n in rows
            ]
        )
        return
    for p, n in rows:
        console.print(
            f"{p}{'/' if n.type == 'dir' else ''}", markup=False, highlight=False, soft_wrap=True
        )
