"""
Opening the storages that policies and requests describe, from the controller.

The controller touches a storage only to create its repository once (so that
agents never race to create it), to validate a policy's connection on request,
and to list backups straight from a storage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from safehold.core.errors import UsageError
from safehold.core.policy import StorageSpec
from safehold.repo.errors import WrongPassword
from safehold.service.context import ServiceContext
from safehold.service.errors import ForeignRepository
from safehold.storage.errors import StorageError

__all__ = [
    "StorageUnreachable",
    "ensure_repository",
    "foreign_repository_is_bad_input",
    "validate_connection",
]


def storage_key(spec: StorageSpec | dict[str, Any]) -> str:
    """Identify a storage location (not its credentials), to group chains by storage."""
    doc = spec if isinstance(spec, dict) else spec.to_json()
    parts = [
        doc.get(k) or "" for k in ("StorageKind", "Path", "ContainerName", "BucketName", "Prefix")
    ]
    return "|".join(parts)


class StorageUnreachable(UsageError):
    """ValidateConnection: the policy's storage cannot be used with the given settings."""

    code = "SAFEHOLD_E_STORAGE_UNREACHABLE"


def ensure_repository(ctx: ServiceContext, storage: StorageSpec) -> None:
    """
    Create the storage's repository once, here, before any agent writes to it.

    Two agents starting the first backups of two partitions at once would
    otherwise both create a repository in the same storage. Called under
    ``ctx.job_lock``.
    """
    key = storage_key(storage)
    if key in ctx.ready_storages:
        return
    store = ctx.open_storage(storage)
    try:
        with foreign_repository_is_bad_input(ctx, storage):
            ctx.engine.ensure_repository(store)
    finally:
        store.close()
    ctx.ready_storages.add(key)


@contextmanager
def foreign_repository_is_bad_input(ctx: ServiceContext, storage: StorageSpec) -> Iterator[None]:
    try:
        yield
    except WrongPassword as exc:
        raise ForeignRepository(
            f"the repository in storage {ctx.storage_label(storage)} was not created with "
            "this controller's password"
        ) from exc


def validate_connection(ctx: ServiceContext, storage: StorageSpec) -> None:
    """Check that *storage* can be reached and holds (or can hold) our repository."""
    try:
        ensure_repository(ctx, storage)
    except StorageError as exc:
        raise StorageUnreachable(
            f"cannot use storage {ctx.storage_label(storage)}: {exc.message}"
        ) from exc
