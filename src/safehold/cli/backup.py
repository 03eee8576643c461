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
    parse_size,
    print_json,
    progress_sink,
)
from safehold.core.errors import ExitCode, UsageError
from safehold.core.snapshot import SnapshotMeta
from safehold.repo import BackupResult, backup_paths, backup_stream
from safehold.repo.backup import LOCK_WAIT
from safehold.repo.exclude import ExcludeOptions, read_pattern_file

_Patterns = list[str] | None


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
        list[str] | None, typer.Option("--tag", help="Tag the snapshot (repeatable, or a,b).")
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="Record this host name.")] = None,
    parent: Annotated[
        str | None, typer.Option("--parent", help="Compare with this snapshot.")
    ] = None,
    exclude: Annotated[
        _Patterns,
        typer.Option(
            "--exclude", "-e", help="Leave out what matches this pattern (repeatable; see docs)."
        ),
    ] = None,
    iexclude: Annotated[
        _Patterns, typer.Option("--iexclude", help="Like --exclude, ignoring case.")
    ] = None,
    exclude_file: Annotated[
        _Patterns, typer.Option("--exclude-file", help="Read --exclude patterns from a file.")
    ] = None,
    iexclude_file: Annotated[
        _Patterns, typer.Option("--iexclude-file", help="Read --iexclude patterns from a file.")
    ] = None,
    exclude_if_present: Annotated[
        _Patterns,
        typer.Option(
            "--exclude-if-present",
            help="Leave out directories holding this file (NAME or NAME:HEADER; repeatable).",
        ),
    ] = None,
    exclude_caches: Annotated[
        bool,
        typer.Option("--exclude-caches", help="Keep only CACHEDIR.TAG of tagged cache dirs."),
    ] = False,
    exclude_larger_than: Annotated[
        str | None,
        typer.Option("--exclude-larger-than", help="Leave out files larger than this (e.g. 1G)."),
    ] = None,
    one_file_system: Annotated[
        bool,
        typer.Option("--one-file-system", "-x", help="Do not cross into other file systems."),
    ] = False,
    no_ignore_files: Annotated[
        bool,
        typer.Option("--no-ignore-files", help="Do not read .safeholdignore files."),
    ] = False,
    lock_wait: Annotated[
        float,
        typer.Option(
            "--lock-wait",
            min=0,
            help="Seconds to wait for an exclusive lock (a prune) before exit 11.",
        ),
    ] = LOCK_WAIT,
    json_output: JsonOpt = False,
) -> None:
    """
    Back up PATHS (or standard input with --stdin) into a new snapshot.

    Patterns are gitignore-like: '*.log' matches a name anywhere, '/srv/x/tmp'
    an absolute path, 'cache/' directories only, '!keep.log' re-includes.
    A .safeholdignore file adds patterns for its directory's subtree.

    Exit status: 0 on success; 3 if the snapshot was stored but some files could
    not be read or kept changing (they are listed); 10 no repository; 11 locked;
    12 wrong password; 15 storage failure.
    """
    if stdin and paths:
        raise UsageError("give either paths or --stdin, not both")
    if not stdin and not paths:
        raise UsageError("nothing to back up: give paths, or --stdin")
    excludes = ExcludeOptions(
        patterns=(*(exclude or ()), *_from_files(exclude_file)),
        ipatterns=(*(iexclude or ()), *_from_files(iexclude_file)),
        if_present=tuple(exclude_if_present or ()),
        larger_than=parse_size(exclude_larger_than) if exclude_larger_than else None,
        one_file_system=one_file_system,
        exclude_caches=exclude_caches,
        ignore_files=not no_ignore_files,
    )
    # "--tag a,b" is two tags, as in restic.
    tags = tuple(t.strip() for group in tag or () for t in group.split(",") if t.strip())
    meta = SnapshotMeta(host=host, tags=tags)
    with open_repo(repo, password_file) as r:
        sink = progress_sink(json_output)
        if stdin:
            result = backup_stream(
                r,
                sys.stdin.buffer,
                name=stdin_name,
                meta=meta,
                progress=sink,
                lock_wait=lock_wait,
            )
        else:
            result = backup_paths(
                r,
                paths or [],
                meta=meta,
                progress=sink,
                parent=parent,
                excludes=excludes,
                lock_wait=lock_wait,
            )
    _report(result, json_output)
    if result.warnings:
        raise typer.Exit(ExitCode.PARTIAL)


def _from_files(files: _Patterns) -> list[str]:
    return [p for f in files or () for p in read_pattern_file(f)]


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
