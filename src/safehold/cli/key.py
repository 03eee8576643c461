"""``safehold key``: key files, passphrases and key generations."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from safehold.cli.app import app
from safehold.cli.common import (
    JsonOpt,
    PasswordFileOpt,
    RepoOpt,
    console,
    open_repo,
    print_json,
    read_password,
)
from safehold.core.errors import UsageError
from safehold.repo import KdfParams

key_app = typer.Typer(help="Manage key files and key generations.", no_args_is_help=True)
app.add_typer(key_app, name="key")

NewPasswordFileOpt = Annotated[
    str | None,
    typer.Option(
        "--new-password-file", help="Read the new password from this file (else a prompt)."
    ),
]


def _new_password(path: str | None) -> str:
    if path is None:
        pw = getpass.getpass("new password: ")
        if getpass.getpass("enter it again: ") != pw:
            raise UsageError("the two passwords differ")
        if not pw:
            raise UsageError("the password is empty")
        return pw
    return read_password(Path(path))


@key_app.command("list")
def key_list(
    repo: RepoOpt = "", password_file: PasswordFileOpt = None, json_output: JsonOpt = False
) -> None:
    """List the key files; the one in use is marked."""
    with open_repo(repo, password_file, load_index=False) as r:
        keys = r.key_store.list(r.keys.key_id)
        gens = sorted(r.keys.generations)
    if json_output:
        print_json({"keys": keys, "generations": gens})
        return
    table = Table(" ", "ID", "Kind", "Created", "Host", "User", box=None)
    for k in keys:
        table.add_row("*" if k.current else "", k.id[:8], k.kind, k.created, k.host, k.user)
    console.print(table)
    console.print(f"key generations: {', '.join(map(str, gens))} (new data uses {gens[-1]})")


@key_app.command("add")
def key_add(
    write_only: Annotated[
        bool, typer.Option("--write-only", help="A key that can back up but not read.")
    ] = False,
    new_password_file: NewPasswordFileOpt = None,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
) -> None:
    """Add a key file with a new password (a full key, or --write-only for backup hosts)."""
    with open_repo(repo, password_file, load_index=False) as r:
        key_id = r.key_store.add(
            r.keys,
            _new_password(new_password_file),
            "write-only" if write_only else "full",
            KdfParams(),
        )
    console.print(f"added {'write-only' if write_only else 'full'} key {key_id[:8]}")


@key_app.command("remove")
def key_remove(
    key_id: Annotated[str, typer.Argument(help="Id or unique prefix of the key to remove.")],
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
) -> None:
    """Remove a key file (never the one in use, never the last full key)."""
    with open_repo(repo, password_file, load_index=False) as r:
        r.key_store.remove(r.keys, key_id)
    console.print(f"removed key {key_id}")


@key_app.command("passwd")
def key_passwd(
    new_password_file: NewPasswordFileOpt = None,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
) -> None:
    """Change the password of the key in use (only its key file is rewritten)."""
    with open_repo(repo, password_file, load_index=False) as r:
        new_id = r.key_store.passwd(r.keys, _new_password(new_password_file), KdfParams())
    console.print(f"password changed; key is now {new_id[:8]}")


@key_app.command("rotate")
def key_rotate(repo: RepoOpt = "", password_file: PasswordFileOpt = None) -> None:
    """Start a new key generation for new data; old snapshots stay readable."""
    with open_repo(repo, password_file, load_index=False) as r:
        gen = r.key_store.rotate(r.keys)
    console.print(f"new data is now written under key generation {gen}")
