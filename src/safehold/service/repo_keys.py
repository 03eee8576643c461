"""
Repository keys of a policy's storage: list the key generations, rotate the key.

Rotation is ``safehold key rotate`` for the repository a backup policy's
storage holds: a new generation of keys that new data is written under; older
snapshots stay readable with the older generations and nothing is uploaded
again (docs/format.md § Keys). The repository password stays inside the engine
(``RepoEngine``); these use cases never see it.

The storage is opened outside any catalog transaction, with the controller's
short retry budget (``ctx.check_storage``). One rotation per storage at a time
across replicas (``ctx.key_locks``): a second one at the same moment is told
to try again rather than race the first.

Errors::

    PolicyNotFound          404 FABRIC_E_BACKUP_POLICY_NOT_EXISTING
    NoRepositoryYet         409 SAFEHOLD_E_NO_REPOSITORY_YET
    KeyRotationBusy         409 SAFEHOLD_E_KEY_ROTATION_BUSY
    KeysUnsupported         409 SAFEHOLD_E_KEYS_UNSUPPORTED
    ForeignRepository       400 SAFEHOLD_E_FOREIGN_REPOSITORY
    KeyStorageUnavailable   503 SAFEHOLD_E_STORAGE_UNAVAILABLE
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from safehold.core.errors import ConflictError, SafeholdError
from safehold.core.policy import StorageSpec
from safehold.repo.errors import RepositoryNotFound
from safehold.service.context import ServiceContext
from safehold.service.policies import load_policy
from safehold.service.storages import foreign_repository_is_bad_input, storage_key
from safehold.storage.base import Storage
from safehold.storage.errors import StorageError

__all__ = [
    "KeyRotation",
    "KeyRotationBusy",
    "KeyStorageUnavailable",
    "KeysUnsupported",
    "NoRepositoryYet",
    "key_generations",
    "rotate_key",
]

T = TypeVar("T")


@runtime_checkable
class KeyedEngine(Protocol):
    """What these use cases need of the engine (``RepoEngine`` has it)."""

    def key_generations(self, storage: Storage) -> list[int]:
        """The repository's key generations, oldest first."""
        ...

    def rotate_key(self, storage: Storage) -> list[int]:
        """Add a generation; return the generations."""
        ...


class NoRepositoryYet(ConflictError):
    """The policy's storage holds no repository yet (the first backup creates it)."""

    code = "SAFEHOLD_E_NO_REPOSITORY_YET"


class KeyRotationBusy(ConflictError):
    """Another rotation of the same repository is running."""

    code = "SAFEHOLD_E_KEY_ROTATION_BUSY"


class KeysUnsupported(ConflictError):
    """The service's engine keeps no repository keys (a test double)."""

    code = "SAFEHOLD_E_KEYS_UNSUPPORTED"


class KeyStorageUnavailable(SafeholdError):
    """The policy's storage did not answer: nothing was changed; try again later."""

    http_status = 503
    code = "SAFEHOLD_E_STORAGE_UNAVAILABLE"


@dataclass(frozen=True)
class KeyRotation:
    """A policy's repository keys: every generation, and the one new data uses."""

    policy: str
    generations: list[int]

    @property
    def current(self) -> int:
        """The generation new data is written under."""
        return self.generations[-1]

    def to_json(self) -> dict[str, object]:
        """The API shape."""
        return {
            "PolicyName": self.policy,
            "KeyGeneration": self.current,
            "KeyGenerations": self.generations,
        }


def _storage_of(ctx: ServiceContext, policy_name: str) -> StorageSpec:
    with ctx.uow() as uow:
        return load_policy(ctx, uow, policy_name).storage  # 404 if unknown


def _engine(ctx: ServiceContext) -> KeyedEngine:
    if not isinstance(ctx.engine, KeyedEngine):
        raise KeysUnsupported("this controller's engine has no repository keys to manage")
    return ctx.engine


def _with_repository(ctx: ServiceContext, spec: StorageSpec, work: Callable[[Storage], T]) -> T:
    """Open *spec*'s storage (short retry budget), run *work* on it, map the errors."""
    label = ctx.storage_label(spec)
    try:
        store = ctx.check_storage(spec)
        try:
            with foreign_repository_is_bad_input(ctx, spec):
                return work(store)
        finally:
            store.close()
    except RepositoryNotFound as exc:
        raise NoRepositoryYet(
            f"storage {label} holds no repository yet: the first backup creates it"
        ) from exc
    except StorageError as exc:
        raise KeyStorageUnavailable(
            f"storage {label} cannot be reached: {exc.message}; nothing was changed"
        ) from exc


def key_generations(ctx: ServiceContext, policy_name: str) -> KeyRotation:
    """Read the key generations of the repository in policy *policy_name*'s storage."""
    spec = _storage_of(ctx, policy_name)
    engine = _engine(ctx)
    return KeyRotation(policy_name, _with_repository(ctx, spec, engine.key_generations))


def rotate_key(ctx: ServiceContext, policy_name: str) -> KeyRotation:
    """
    Rotate the key of the repository in policy *policy_name*'s storage.

    Returns the generations after the rotation (``current`` is the new one).
    Call it outside any catalog transaction; it holds no catalog lock.
    """
    spec = _storage_of(ctx, policy_name)
    engine = _engine(ctx)
    with ctx.key_locks.try_hold(f"repository-keys:{storage_key(spec)}") as mine:
        if not mine:
            raise KeyRotationBusy(
                f"the key of storage {ctx.storage_label(spec)} is being rotated right now"
            )
        return KeyRotation(policy_name, _with_repository(ctx, spec, engine.rotate_key))
