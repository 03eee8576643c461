"""``safehold find``: which snapshots hold a file."""

from __future__ import annotations

from typing import Annotated

import typer

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
from safehold.repo.find import find as find_matches


@app.command()
def find(
    patterns: Annotated[
        list[str], typer.Argument(help="Name or path patterns, as for --exclude ('*.sql').")
    ],
    snapshot: Annotated[
        list[str] | None,
        typer.Option(
            "--snapshot", "-s", help="Search only this snapshot (id, prefix, 'latest'; repeatable)."
        ),
    ] = None,
    ignore_case: Annotated[
        bool, typer.Option("--ignore-case", "-i", help="Match without regard to case.")
    ] = False,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    host: HostFilterOpt = None,
    tag: TagFilterOpt = None,
    path_filter: PathFilterOpt = None,
    skip_damaged: SkipDamagedOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """
    Find files and directories whose name or path matches PATTERNS, in every
    snapshot that --host, --tag and --path select (or those given by --snapshot).

    Exit status: 0 something matched; 16 nothing matched; 13 damaged data.
    """
    where = snapshot_filter(host, tag, path_filter)
    with open_repo(repo, password_file) as r:
        if snapshot:
            snaps = [select_snapshot(r, s, where, skip_damaged=skip_damaged) for s in snapshot]
        else:
            snaps = [s for s in r.snapshots() if where.matches(s)]
            for msg in r.damaged_snapshots:
                err_console.print(f"warning: {msg}", markup=False, highlight=False)
        matches = list(find_matches(r, snaps, patterns, ignore_case=ignore_case))
    if json_output:
        print_json(
            [
                {
                    "snapshot": m.snapshot.id,
                    "time": m.snapshot.time,
                    "path": m.path,
                    "type": m.node.type,
                    "size": m.node.size,
                    "mtime_ns": m.node.mtime_ns,
                }
                for m in matches
            ]
        )
    else:
        current = None
        for m in matches:
            if m.snapshot.id != current:
                current = m.snapshot.id
                console.print(
                    f"snapshot {m.snapshot.short_id} of {m.snapshot.time:%Y-%m-%d %H:%M:%S}:",
                    highlight=False,
                )
            console.print(
                f"  {m.path}{'/' if m.node.type == 'dir' else ''}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    if not matches:
        raise NotFoundError(f"nothing matches {', '.join(patterns)} in {len(snaps)} snapshots")
