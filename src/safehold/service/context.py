"""
What every use case is given: the catalog, the secret box, the clock and the limits.

The composition root (``safehold.bootstrap``) builds one ``ServiceContext``;
tests build theirs with a fake clock and a temporary catalog. Nothing here
coordinates replicas: that is the catalog's job (row locks, ``SKIP LOCKED``,
conditional updates and an advisory lock for the leader).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from safehold.core.policy import StorageSpec
from safehold.service.engine import BackupEngine, StorageOpener
from safehold.service.leader import KeyLocks, LocalKeyLocks
from safehold.service.secrets import SecretBox
from safehold.service.uow import UnitOfWork, UowFactory
from safehold.service.work_signal import WorkSignal

if TYPE_CHECKING:
    from safehold.service.storages import StorageHealth

__all__ = ["Clock", "ServiceContext", "system_clock"]

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Return the current UTC time."""
    return datetime.now(UTC)


def _storage_health() -> StorageHealth:
    from safehold.service.storages import StorageHealth

    return StorageHealth()


@dataclass
class ServiceContext:
    """
    The service's dependencies.

    Attributes:
        uow: makes a unit of work (one catalog transaction).
        secrets: seals and opens the secrets inside policies.
        open_storage: opens the storage a policy or request describes.
        engine: the backup engine, used for listings straight from a storage.
        clock: the current time; injected so that tests never sleep.
        max_running_jobs: at most this many jobs run at once across the fleet
            (0: no limit; jobs run as fast as the agents' slots allow).
        agent_timeout: a running job not heard of for this long has lost its agent.
        job_retention: finished jobs older than this are purged (backups never are).
        schedule_spread: how much of an interval periodic backups are spread over
            (1: all of it; 0: each partition's first backup when it was enabled).
        check_storage_opener: opens a storage for the controller's own short
            checks (a short retry budget); *open_storage* if not given.
        storages: what this process knows of storages (ready, failing).
        key_locks: named try-locks every replica sees (repository creation).
        work: wakes the claims that wait for work; give the catalog's unit of
            work the same one, so that new jobs wake them.
        read_uow: makes a unit of work that only reads (on SQLite it holds no
            write lock, so a long fleet-wide read never delays a writer);
            *uow* if not given.
        agents_seen: when this replica last wrote each agent's row, and with
            which incarnation (claims skip the write for a moment after it).
    """

    uow: UowFactory
    secrets: SecretBox
    open_storage: StorageOpener
    engine: BackupEngine
    clock: Clock = system_clock
    max_running_jobs: int = 0
    agent_timeout: timedelta = timedelta(seconds=60)
    job_retention: timedelta = timedelta(days=7)
    schedule_spread: float = 1.0
    check_storage_opener: StorageOpener | None = None
    storages: StorageHealth = field(default_factory=_storage_health)
    key_locks: KeyLocks = field(default_factory=LocalKeyLocks)
    work: WorkSignal = field(default_factory=WorkSignal)
    read_uow: UowFactory | None = None
    agents_seen: dict[str, tuple[str | None, datetime]] = field(default_factory=dict)

    def reader(self) -> UnitOfWork:
        """A unit of work for reads only (see *read_uow*)."""
        return (self.read_uow or self.uow)()

    @property
    def check_storage(self) -> StorageOpener:
        """The opener for the controller's own storage checks."""
        return self.check_storage_opener or self.open_storage

    def storage_label(self, spec: StorageSpec) -> str:
        """Describe a storage for messages, without secrets."""
        return spec.friendly_name or spec.kind
