"""``safehold init``: create a repository."""

from __future__ import annotations

from typing import Annotated

import typer

from safehold.cli.app import app
from safehold.cli.common import (
    JsonOpt,
    PasswordFileOpt,
    RepoOpt,
    console,
    print_json,
    read_password,
    storage_for,
)
from safehold.repo import Repository


@app.command()
def init(
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    pack_size: Annotated[
        int, typer.Option("--pack-size", help="Pack size in MiB.", min=1, max=1024)
    ] = 16,
    json_output: JsonOpt = False,
) -> None:
    """
    Create a new, empty, encrypted repository.

    Exit status: 0 on success, 1 if a repository already exists there, 2 on bad input.
    """
    storage = storage_for(repo)
    password = read_password(password_file, confirm=True)
    r = Repository.init(storage, password, pack_size=pack_size * 1024 * 1024)
    r.close()
    if json_output:
        print_json({"id": r.config["id"], "location": storage.properties.location})
    else:
        console.print(f"created repository {r.config['id'][:8]} at {storage.properties.location}")
        console.print("[bold]Keep the password safe: without it the data cannot be restored.[/]")
