"""``safehold snapshots`` and ``safehold ls``: what the repository holds."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from safehold.cli.app import app
from safehold.cli.common import (
    JsonOpt,
    PasswordFileOpt,
    RepoOpt,
    console,
    err_console,
    open_repo,
    print_json,
)
from safehold.core.errors import NotFoundError
from safehold.repo.restore import walk


@app.command()
def snapshots(
    repo: RepoOpt = "", password_file: PasswordFileOpt = None, json_output: JsonOpt = False
) -> None:
    """
    List the snapshots, oldest first.

    Exit status: 0; 10 no repository; 12 wrong password.
    """
    with open_repo(repo, password_file, load_index=False) as r:
        snaps = r.snapshots()
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
    path: Annotated[str, typer.Argument(help="Only list under this path.")] = "",
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """
    List the files of a snapshot.

    Exit status: 0; 16 no such snapshot or path.
    """
    prefix = path.strip("/")
    with open_repo(repo, password_file) as r:
        snap = r.find_snapshot(snapshot)
        rows = [
            (p, n)
            for p, n in walk(r, bytes.fromhex(snap.tree))
            if not prefix or p == prefix or p.startswith(prefix + "/")
        ]
    if prefix and not rows:
        raise NotFoundError(f"no path {prefix!r} in snapshot {snap.short_id}")
    if json_output:
        print_json(
            [
                {
                    "path": "/" + p,
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
        console.print(f"/{p}{'/' if n.type == 'dir' else ''}", markup=False, highlight=False)
