"""``safehold init``: create a repository."""

from __future__ import annotations

from enum import StrEnum
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
from safehold.core.errors import UsageError
from safehold.repo import Repository
from safehold.repo.errors import RepositoryExists
from safehold.storage import LockPolicy, ObjectNotFound, Storage, StorageNotFound, immutable


class LockChoice(StrEnum):
    """``--lock``: how the storage holds what is written (docs/storage.md § Immutability)."""

    compliance = "compliance"
    governance = "governance"
    append_only = "append-only"


@app.command()
def init(
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    pack_size: Annotated[
        int, typer.Option("--pack-size", help="Pack size in MiB.", min=1, max=1024)
    ] = 16,
    lock: Annotated[
        LockChoice | None,
        typer.Option(
            "--lock",
            help="Hold everything written against deletion and replacement: compliance or "
            "governance (S3 Object Lock, Azure immutability) for --lock-days, or append-only "
            "(file and SMB repositories) for good.",
        ),
    ] = None,
    lock_days: Annotated[
        int | None,
        typer.Option("--lock-days", help="Days each object is held from its write.", min=1),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """
    Create a new, empty, encrypted repository; with --lock, an immutable one.

    Exit status: 0 on success, 1 if a repository already exists there, 2 on bad
    input, 15 if the storage cannot hold objects as --lock asks.
    """
    storage = storage_for(repo)
    policy = _policy(lock, lock_days)
    password = read_password(password_file, confirm=True)
    if policy is not None:
        _enable_lock(storage, policy)
    r = Repository.init(storage, password, pack_size=pack_size * 1024 * 1024, owns_storage=True)
    r.close()
    where = storage.properties.location
    if json_output:
        print_json({"id": r.config["id"], "location": where, "lock": policy})
    else:
        console.print(f"created repository {r.config['id'][:8]} at {where}")
        if policy is not None:
            held = f"for {policy.days} days each" if policy.days else "for good"
            console.print(f"every object but lock files is held ({policy.mode}) {held}")
        console.print("[bold]Keep the password safe: without it the data cannot be restored.[/]")


def _policy(lock: LockChoice | None, days: int | None) -> LockPolicy | None:
    """Turn the options into a lock policy; ``UsageError`` when they do not fit together."""
    if lock is None:
        if days is not None:
            raise UsageError("--lock-days needs --lock compliance or --lock governance")
        return None
    if lock is LockChoice.append_only:
        if days is not None:
            raise UsageError("an append-only repository holds objects for good: no --lock-days")
        return LockPolicy("append-only")
    if days is None:
        raise UsageError(f"--lock {lock.value} needs --lock-days N")
    return LockPolicy(lock.value, days)  # type: ignore[arg-type]


def _enable_lock(storage: Storage, policy: LockPolicy) -> None:
    """Turn holds on before anything is written, so that the keys and config are held too."""
    cap = immutable(storage)
    if cap is None:
        raise UsageError(f"{storage.properties.location} cannot hold objects (no --lock)")
    try:
        storage.stat("config")
    except (ObjectNotFound, StorageNotFound):
        pass
    else:
        raise RepositoryExists(f"a repository already exists at {storage.properties.location}")
    cap.enable_lock(policy)
