"""``safehold stats``: restore size and stored size."""

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
from safehold.repo.stats import stats as repo_stats


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@app.command()
def stats(
    snapshots: Annotated[
        list[str] | None,
        typer.Argument(help="Snapshots (id, prefix, 'latest'); by default all that are selected."),
    ] = None,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    host: HostFilterOpt = None,
    tag: TagFilterOpt = None,
    path_filter: PathFilterOpt = None,
    skip_damaged: SkipDamagedOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """
    Show what the snapshots would restore (restore size, summed over them) and
    what they store (their distinct chunks: raw size, and the bytes they take
    in the repository after compression and encryption).

    Exit status: 0; 13 damaged data; 16 no such snapshot.
    """
    where = snapshot_filter(host, tag, path_filter)
    with open_repo(repo, password_file) as r:
        if snapshots:
            snaps = [select_snapshot(r, s, where, skip_damaged=skip_damaged) for s in snapshots]
        else:
            snaps = [s for s in r.snapshots() if where.matches(s)]
            for msg in r.damaged_snapshots:
                err_console.print(f"warning: {msg}", markup=False, highlight=False)
        result = repo_stats(r, snaps)
    if json_output:
        print_json({**vars(result), "compression_ratio": round(result.compression_ratio, 3)})
        return
    console.print(
        f"snapshots:     {result.snapshots}\n"
        f"restore size:  {_human(result.restore_size)} in {result.files} files "
        f"and {result.dirs} directories ({result.restore_size} bytes)\n"
        f"stored chunks: {result.blobs}\n"
        f"raw size:      {_human(result.raw_size)} ({result.raw_size} bytes)\n"
        f"stored size:   {_human(result.stored_size)} ({result.stored_size} bytes), "
        f"compression {result.compression_ratio:.2f}x",
        highlight=False,
        soft_wrap=True,
    )
