"""``safehold repo copy``: copy snapshots to another repository."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from safehold.cli.app import app
from safehold.cli.common import (
    JsonOpt,
    PasswordFileOpt,
    RepoOpt,
    console,
    open_repo,
    print_json,
    progress_sink,
    read_password,
    storage_for,
)
from safehold.core.errors import UsageError
from safehold.repo import Repository, copy_snapshots
from safehold.repo.errors import RepositoryNotFound
from safehold.storage import Storage

repo_app = typer.Typer(help="Work with whole repositories.", no_args_is_help=True)
app.add_typer(repo_app, name="repo")


def _to_password(path: Path | None) -> str:
    if path is None and os.environ.get("SAFEHOLD_TO_PASSWORD"):
        return os.environ["SAFEHOLD_TO_PASSWORD"]
    if path is None:
        raise UsageError(
            "no password for the destination: set SAFEHOLD_TO_PASSWORD or pass --to-password-file"
        )
    return read_password(path)


@repo_app.command("copy")
def copy(
    to: Annotated[str, typer.Option("--to", help="Destination repository URL.")],
    snapshot: Annotated[
        list[str] | None, typer.Option("--snapshot", help="Copy only this (repeatable).")
    ] = None,
    to_password_file: Annotated[
        Path | None,
        typer.Option(
            "--to-password-file", help="Destination password file (else $SAFEHOLD_TO_PASSWORD)."
        ),
    ] = None,
    init: Annotated[
        bool, typer.Option("--init", help="Create the destination if it does not exist.")
    ] = False,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """
    Copy snapshots to another repository (another region or kind of storage).

    Only blobs the destination lacks are uploaded, and snapshots copied before
    are skipped, so it can be rerun after any failure.
    Exit status: 0; 10 no source or destination repository; 12 wrong password.
    """
    dst_storage = storage_for(to)
    dst_password = _to_password(to_password_file)
    with open_repo(repo, password_file) as src:
        if init and not _exists(dst_storage):
            Repository.init(dst_storage, dst_password, pack_size=src.pack_size).close()
        with Repository.open(dst_storage, dst_password, owns_storage=True) as dst:
            result = copy_snapshots(
                src, dst, snapshot_ids=snapshot or (), progress=progress_sink(json_output)
            )
    if json_output:
        print_json(result)
        return
    console.print(
        f"copied {len(result.copied)} snapshots ({result.bytes_uploaded} bytes uploaded), "
        f"skipped {len(result.skipped)} copied before"
    )


def _exists(storage: Storage) -> bool:
    try:
        Repository.read_config(storage)
    except RepositoryNotFound:
        return False
    return True
