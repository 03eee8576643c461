"""``safehold check`` and ``safehold repair``: verify and mend a repository."""

from __future__ import annotations

import re
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
from safehold.repo import check as check_repo
from safehold.repo import rebuild_index

repair_app = typer.Typer(help="Mend a damaged repository.", no_args_is_help=True)
app.add_typer(repair_app, name="repair")


def parse_subset(text: str) -> float:
    """Parse ``10%`` or ``1/5`` into a share between 0 and 1."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)%", text.strip())
    if m:
        share = float(m.group(1)) / 100
    else:
        m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
        if not m or int(m.group(2)) == 0:
            raise UsageError(f"invalid --read-data-subset {text!r}: use e.g. 10% or 1/5")
        share = int(m.group(1)) / int(m.group(2))
    if not 0 < share <= 1:
        raise UsageError(f"--read-data-subset must be above 0% and at most 100%, not {text!r}")
    return share


@app.command()
def check(
    read_data: Annotated[
        bool, typer.Option("--read-data", help="Read and verify all data.")
    ] = False,
    read_data_subset: Annotated[
        str | None, typer.Option("--read-data-subset", help="Read a random share: 10% or 1/5.")
    ] = None,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """
    Verify the repository's structure and, optionally, its data.

    Exit status: 0 if all is well; 13 if anything is damaged or missing (every
    damaged file, and every snapshot and path it affects, is named).
    """
    share = 1.0 if read_data else parse_subset(read_data_subset) if read_data_subset else 0.0
    with open_repo(repo, password_file, load_index=False) as r:
        report = check_repo(r, read_data=share, progress=progress_sink(json_output))
    if json_output:
        print_json({"ok": report.ok, **vars(report)})
    else:
        for w in report.warnings:
            err_console.print(f"warning: {w}", markup=False, highlight=False)
        for e in report.errors:
            err_console.print(f"error: {e}", markup=False, highlight=False)
        read = f", read {report.packs_read} packs whole" if share else ""
        console.print(
            f"checked {report.snapshots} snapshots, {report.packs} packs, "
            f"{report.blobs} blobs{read}"
        )
        console.print("no errors were found" if report.ok else f"{len(report.errors)} errors found")
    if not report.ok:
        raise typer.Exit(ExitCode.INTEGRITY)


@repair_app.command("index")
def repair_index(repo: RepoOpt = "", password_file: PasswordFileOpt = None) -> None:
    """
    Rebuild the index from the packs' own headers (after index damage).

    Exit status: 0; 13 if some packs were unreadable (they are named).
    """
    with open_repo(repo, password_file, load_index=False) as r:
        n, problems = rebuild_index(r, progress_sink(False))
    for p in problems:
        err_console.print(f"error: {p}", markup=False, highlight=False)
    console.print(f"indexed {n} packs")
    if problems:
        raise typer.Exit(ExitCode.INTEGRITY)
