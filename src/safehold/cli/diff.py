"""``safehold diff``: what changed between two snapshots."""

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
    open_repo,
    print_json,
    select_snapshot,
    snapshot_filter,
)
from safehold.repo.diff import diff_snapshots


@app.command()
def diff(
    snapshot_a: Annotated[str, typer.Argument(help="The older snapshot: id, prefix or 'latest'.")],
    snapshot_b: Annotated[str, typer.Argument(help="The newer snapshot: id, prefix or 'latest'.")],
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    host: HostFilterOpt = None,
    tag: TagFilterOpt = None,
    path_filter: PathFilterOpt = None,
    skip_damaged: SkipDamagedOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """
    Show what changed from snapshot A to snapshot B.

    Each line is '+' added, '-' removed, 'M' content changed, 'T' type changed
    or 'U' metadata changed, then the path as backed up.

    Exit status: 0; 13 damaged data; 16 no such snapshot.
    """
    where = snapshot_filter(host, tag, path_filter)
    with open_repo(repo, password_file) as r:
        a = select_snapshot(r, snapshot_a, where, skip_damaged=skip_damaged)
        b = select_snapshot(r, snapshot_b, where, skip_damaged=skip_damaged)
        result = diff_snapshots(r, a, b)

    def shown(kind: str, path: str) -> str:
        return (a if kind == "-" else b).source_path(path)

    if json_output:
        print_json(
            {
                "snapshot_a": a.id,
                "snapshot_b": b.id,
                "changes": [
                    {
                        "change": c.kind,
                        "path": shown(c.kind, c.path),
                        "type": c.type,
                        "size_before": c.size_before,
                        "size_after": c.size_after,
                    }
                    for c in result.changes
                ],
                "added_files": result.added_files,
                "removed_files": result.removed_files,
                "changed_files": result.changed_files,
                "added_dirs": result.added_dirs,
                "removed_dirs": result.removed_dirs,
                "bytes_added": result.bytes_added,
                "bytes_removed": result.bytes_removed,
            }
        )
        return
    console.print(f"comparing snapshot {a.short_id} to {b.short_id}:", highlight=False)
    for c in result.changes:
        suffix = "/" if c.type == "dir" else ""
        console.print(
            f"{c.kind}    {shown(c.kind, c.path)}{suffix}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"files: {result.added_files} added, {result.removed_files} removed, "
        f"{result.changed_files} changed; directories: {result.added_dirs} added, "
        f"{result.removed_dirs} removed; {result.bytes_added} bytes added, "
        f"{result.bytes_removed} bytes removed",
        highlight=False,
        soft_wrap=True,
    )
