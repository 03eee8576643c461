"""
What every use case is given: the catalog, the secret box, the clock and the limits.

The composition root (``safehold.bootstrap``) builds one ``ServiceContext``;
tests build theirs with a fake clock and a temporary catalog.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from safehold.core.policy import StorageSpec
from safehold.service.engine import BackupEngine, StorageOpener
from safehold.service.secrets import SecretBox
from safehold.service.uow import UowFactory

__all__ = ["Clock", "ServiceContext", "system_clock"]

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Return the current UTC time."""
    return datetime.now(UTC)


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
        max_running_jobs: how many jobs may run at once across all partitions.
        agent_timeout: an agent not heard from for this long has disappeared.
    """

    uow: UowFactory
    secrets: SecretBox
    open_storage: StorageOpener
    engine: BackupEngine
    clock: Clock = system_clock
    max_running_jobs: int = 4
    agent_timeout: timedelta = timedelta(seconds=60)
    job_lock: threading.Lock = field(default_factory=threading.Lock)
    ready_storages: set[str] = field(default_factory=set)

    def storage_label(self, spec: StorageSpec) -> str:
        """Describe a storage for messages, without secrets."""
        return spec.friendly_name or spec.kind
