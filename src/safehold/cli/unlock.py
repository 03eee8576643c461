"""``safehold unlock``: remove stale (or, when forced, all) lock files."""

from __future__ import annotations

from typing import Annotated

import typer

from safehold.cli.app import app
from safehold.cli.common import JsonOpt, PasswordFileOpt, RepoOpt, console, open_repo, print_json
from safehold.core.snapshot import format_time
from safehold.repo.locks import remove_locks


@app.command()
def unlock(
    remove_all: Annotated[
        bool,
        typer.Option(
            "--remove-all",
            help="Remove every lock, live ones too: only when no safehold process uses the "
            "repository.",
        ),
    ] = False,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """
    Remove stale lock files: damaged ones, ones not refreshed for 10 minutes, and
    those of processes on this host that are gone.

    Exit status: 0; 10 no repository; 12 wrong password.
    """
    with open_repo(repo, password_file, load_index=False) as r:
        removed = remove_locks(r.storage, remove_all=remove_all)
    if json_output:
        print_json({"removed": [lk.name for lk in removed]})
        return
    for lk in removed:
        what = (
            f"damaged ({lk.damaged})"
            if lk.damaged
            else f"pid {lk.pid} on {lk.host} since {format_time(lk.time)}"
        )
        console.print(f"removed {lk.name}: {what}", markup=False, highlight=False)
    console.print(f"removed {len(removed)} lock file{'s' if len(removed) != 1 else ''}")
