"""``safehold restore`` and ``safehold dump``: get data back."""

from __future__ import annotations

import sys
from pathlib import Path
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
    progress_sink,
    select_snapshot,
    snapshot_filter,
)
from safehold.repo import dump as dump_file
from safehold.repo import restore as restore_snapshot


@app.command()
def restore(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id, unique prefix, or 'latest'.")],
    target: Annotated[Path, typer.Option("--target", "-t", help="Directory to restore into.")],
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include", "-i", help="Only this path, as backed up, e.g. /srv/data/sub (repeatable)."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be written.")] = False,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    host: HostFilterOpt = None,
    tag: TagFilterOpt = None,
    path_filter: PathFilterOpt = None,
    skip_damaged: SkipDamagedOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """
    Restore a snapshot into a directory, verifying every byte.

    Exit status: 0; 13 damaged data (the damaged files are named and not left
    behind); 16 no such snapshot.
    """
    with open_repo(repo, password_file) as r:
        snap = select_snapshot(
            r, snapshot, snapshot_filter(host, tag, path_filter), skip_damaged=skip_damaged
        )
        result = restore_snapshot(
            r,
            snap,
            target,
            include=[snap.tree_path(i) for i in include or ()],
            dry_run=dry_run,
            progress=progress_sink(json_output),
        )
    if json_output:
        print_json({"snapshot": snap.id, "target": str(target), **vars(result)})
        return
    for w in result.warnings:
        err_console.print(f"warning: {w}", markup=False, highlight=False)
    if dry_run:
        for p in result.planned:
            console.print(f"would restore /{p}", markup=False, highlight=False)
    verb = "would restore" if dry_run else "restored"
    console.print(
        f"{verb} {result.files} files, {result.dirs} directories, "
        f"{result.bytes} bytes from {snap.short_id}"
    )


@app.command()
def dump(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id, unique prefix, or 'latest'.")],
    path: Annotated[
        str | None, typer.Argument(help="File in the snapshot (default: its only file).")
    ] = None,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    host: HostFilterOpt = None,
    tag: TagFilterOpt = None,
    path_filter: PathFilterOpt = None,
    skip_damaged: SkipDamagedOpt = False,
) -> None:
    """
    Write one file of a snapshot (such as a --stdin dump) to standard output.

    Exit status: 0; 13 damaged data; 16 no such snapshot or file.
    """
    with open_repo(repo, password_file) as r:
        snap = select_snapshot(
            r, snapshot, snapshot_filter(host, tag, path_filter), skip_damaged=skip_damaged
        )
        dump_file(r, snap, sys.stdout.buffer, None if path is None else snap.tree_path(path))
        sys.stdout.buffer.flush()
