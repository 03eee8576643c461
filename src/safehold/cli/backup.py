"""``safehold backup``: back up paths or standard input."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from safehold.cli.app import app
from safehold.cli.common import (
    JsonOpt,
    PasswordFileOpt,
    RepoOpt,
    console,
    err_console,
    open_repo,
    print_json,
    progress_sink,
)
from safehold.core.errors import ExitCode, UsageError
from safehold.core.snapshot import SnapshotMeta
from safehold.repo import BackupResult, backup_paths, backup_stream


@app.command()
def backup(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Files and directories to back up.")
    ] = None,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    stdin: Annotated[
        bool, typer.Option("--stdin", help="Back up standard input (a dump).")
    ] = False,
    stdin_name: Annotated[
        str, typer.Option("--stdin-name", help="File name for --stdin.")
    ] = "stdin",
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Tag the snapshot (repeatable).")
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="Record this host name.")] = None,
    parent: Annotated[
        str | None, typer.Option("--parent", help="Compare with this snapshot.")
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """
    Back up PATHS (or standard input with --stdin) into a new snapshot.

    Exit status: 0 on success; 3 if the snapshot was stored but some files could
    not be read or kept changing (they are listed); 10 no repository; 11 locked;
    12 wrong password; 15 storage failure.
    """
    if stdin and paths:
        raise UsageError("give either paths or --stdin, not both")
    if not stdin and not paths:
        raise UsageError("nothing to back up: give paths, or --stdin")
    meta = SnapshotMeta(host=host, tags=tuple(tag or ()))
    with open_repo(repo, password_file) as r:
        sink = progress_sink(json_output)
        if stdin:
            result = backup_stream(r, sys.stdin.buffer, name=stdin_name, meta=meta, progress=sink)
        else:
            result = backup_paths(r, paths or [], meta=meta, progress=sink, parent=parent)
    _report(result, json_output)
    if result.warnings:
        raise typer.Exit(ExitCode.PARTIAL)


def _report(result: BackupResult, json_output: bool) -> None:
    s = result.snapshot
    if json_output:
        print_json(
            {
                "snapshot": s.id,
                "files_new": result.files_new,
                "files_changed": result.files_changed,
                "files_unmodified": result.files_unmodified,
                "dirs": result.dirs,
                "bytes_read": result.bytes_read,
                "sizes": s.sizes,
                "warnings": result.warnings,
            }
        )
        return
    for w in result.warnings:
        err_console.print(f"warning: {w}", markup=False, highlight=False)
    console.print(
        f"files: {result.files_new} new, {result.files_changed} changed, "
        f"{result.files_unmodified} unmodified; {s.sizes.logical} bytes in {s.sizes.files} files"
    )
    console.print(f"added {s.sizes.new} bytes ({s.sizes.stored} stored after compression)")
    console.print(f"snapshot {s.short_id} saved")
