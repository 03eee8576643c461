"""
Opening the storages that policies and requests describe, from the controller.

The controller touches a storage only to create its repository once (so that
agents never race to create it), to validate a policy's connection on request,
and to list backups straight from a storage. It never does so inside a catalog
transaction or under a lock: a storage that cannot be reached fails only the
request or the jobs that need it. Controller-side calls use the context's
``check_storage`` opener, whose retry budget is short; a storage found
unreachable is remembered for ``StorageHealth.quarantine`` so that a tick does
not wait on it again and again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from safehold.core.errors import SafeholdError, UsageError
from safehold.core.policy import StorageSpec
from safehold.repo.errors import WrongPassword
from safehold.service.context import ServiceContext
from safehold.service.errors import ForeignRepository, RepositoryBusy
from safehold.storage.errors import StorageError

#: How often, and how far apart, a request looks again while another creates a repository.
BUSY_TRIES = 50
BUSY_PAUSE = 0.1

__all__ = [
    "StorageHealth",
    "StorageUnreachable",
    "ensure_repositories",
    "ensure_repository",
    "foreign_repository_is_bad_input",
    "storage_key",
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


@dataclass
class StorageHealth:
    """
    What this controller process knows of storages: ready ones, and failing ones for a while.

    A cache, not coordination: another replica that does not know a storage is
    ready just checks it again (creating a repository is idempotent).
    """

    quarantine: float = 60.0
    ready: set[str] = field(default_factory=set)
    failing: dict[str, tuple[float, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def failure(self, key: str) -> str | None:
        """The message of a recent failure of storage *key*, or None."""
        with self._lock:
            until, message = self.failing.get(key, (0.0, ""))
            return message if until > time.monotonic() else None

    def mark_failed(self, key: str, message: str) -> None:
        """Remember that storage *key* failed, for the quarantine period."""
        with self._lock:
            self.failing[key] = (time.monotonic() + self.quarantine, message)

    def mark_ready(self, key: str) -> None:
        """Remember that storage *key* holds a repository."""
        with self._lock:
            self.ready.add(key)
            self.failing.pop(key, None)


def ensure_repository(ctx: ServiceContext, storage: StorageSpec) -> None:
    """
    Create the storage's repository once, here, before any agent writes to it.

    Two agents starting the first backups of two partitions at once would
    otherwise both create a repository in the same storage. Call it outside any
    catalog transaction.

    Raises:
        StorageError (and its subclasses): the storage cannot be reached.
        ForeignRepository: the storage holds a repository of another password.
        RepositoryBusy: another request or replica is creating it right now.
    """
    key = storage_key(storage)
    if key in ctx.storages.ready:
        return
    # One creator per storage across replicas. The others never block on the
    # lock: they look again a few times (it takes a second to create one), then
    # answer "try again".
    for _ in range(BUSY_TRIES):
        with ctx.key_locks.try_hold(f"repository:{key}") as mine:
            if mine:
                if key in ctx.storages.ready:
                    return
                store = ctx.check_storage(storage)
                try:
                    with foreign_repository_is_bad_input(ctx, storage):
                        ctx.engine.ensure_repository(store)
                finally:
                    store.close()
                ctx.storages.mark_ready(key)
                return
        time.sleep(BUSY_PAUSE)
    raise RepositoryBusy(
        f"the repository in storage {ctx.storage_label(storage)} is being created; "
        "try again in a few seconds"
    )


def ensure_repositories(
    ctx: ServiceContext, specs: Mapping[str, StorageSpec], *, timeout: float = 15.0
) -> dict[str, str]:
    """
    Make sure each storage of *specs* (by ``storage_key``) holds a repository.

    The storages are checked at once, each in its own thread, for at most
    *timeout* seconds in all. Returns the keys that failed, with why; a storage
    failing recently is not tried again until its quarantine ends.
    """
    failed: dict[str, str] = {}
    todo: dict[str, StorageSpec] = {}
    for key, spec in specs.items():
        if key in ctx.storages.ready:
            continue
        recent = ctx.storages.failure(key)
        if recent is not None:
            failed[key] = recent
        else:
            todo[key] = spec
    if not todo:
        return failed

    def check(key: str, spec: StorageSpec) -> None:
        try:
            ensure_repository(ctx, spec)
        except RepositoryBusy:
            pass  # someone else creates it: not a failure of the storage
        except SafeholdError as exc:
            ctx.storages.mark_failed(key, exc.message)

    pool = ThreadPoolExecutor(max_workers=min(8, len(todo)), thread_name_prefix="storage-check")
    futures = [pool.submit(check, key, spec) for key, spec in todo.items()]
    wait(futures, timeout=timeout)
    # Threads still waiting on a storage finish in the background; nothing holds a lock.
    pool.shutdown(wait=False, cancel_futures=True)
    for key in todo:
        if key in ctx.storages.ready:
            continue
        recent = ctx.storages.failure(key)
        if recent is None and not all(f.done() for f in futures):
            recent = f"no answer within {timeout:.0f} s"
            ctx.storages.mark_failed(key, recent)
        failed[key] = recent or "the repository is being created elsewhere; trying again soon"
    return failed


@contextmanager
def foreign_repository_is_bad_input(ctx: ServiceContext, storage: StorageSpec) -> Iterator[None]:
    """Turn a wrong-password error of a storage's repository into ``ForeignRepository``."""
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
