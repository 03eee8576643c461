"""
Local caches of a repository, and repositories kept open across jobs.

``default_cache_dir`` says where caches live (``docs/format.md`` § Local index
cache). ``OpenRepositories`` lets a long-lived process keep each
repository open between jobs: the key (one scrypt per password, not one per job)
and the index, refreshed at each checkout by reading only new index files.
"""

from __future__ import annotations

import hashlib
import secrets
import threading

from safehold.repo.index_load import default_cache_dir
from safehold.repo.repository import Repository
from safehold.storage import Storage

__all__ = ["OpenRepositories", "default_cache_dir"]


class OpenRepositories:
    """
    Repositories kept open across jobs, keyed by storage location and password.

    ``checkout`` returns an open ``Repository`` with its index refreshed. The
    repository belongs to this object: callers must not close it (``close``
    closes them all). Thread-safe, but a checked-out repository's writers add
    to its one index, so concurrent jobs would deduplicate against each other's
    packs before an index file names them: use it for one job at a time per
    repository (the service's engine shares an index safely: ``repo.shared``).
    """

    def __init__(self, max_open: int = 16) -> None:
        self._max = max_open
        self._open: dict[tuple[str, bytes], Repository] = {}
        self._lock = threading.Lock()
        self._salt = secrets.token_bytes(16)  # the password is never kept, only a salted hash

    def _key(self, storage: Storage, password: str) -> tuple[str, bytes]:
        digest = hashlib.blake2b(password.encode(), key=self._salt, digest_size=32).digest()
        return storage.properties.location, digest

    def checkout(self, storage: Storage, password: str) -> Repository:
        """
        The open repository at *storage*, opening it on first use.

        *storage* is a freshly opened storage: it is kept if the repository is
        opened now, and closed if an open repository at the same location is
        reused (that one keeps its own). If the repository at the location is
        no longer the one kept (same location, new id), it is opened afresh.

        Raises:
            Whatever ``Repository.open`` raises.
        """
        key = self._key(storage, password)
        with self._lock:
            repo = self._open.get(key)
        if repo is not None:
            current = Repository.read_config(storage).get("id")
            if current == repo.config.get("id"):
                storage.close()
                repo.refresh_index()
                return repo
            self.discard(repo)
        repo = Repository.open(storage, password, owns_storage=True)
        with self._lock:
            self._open.pop(key, None)
            self._open[key] = repo
            # The oldest go; not closed, as a running job may still use them.
            while len(self._open) > self._max:
                del self._open[next(iter(self._open))]
        return repo

    def discard(self, repo: Repository) -> None:
        """Forget and close *repo* (after a job found it unusable, e.g. its storage failed)."""
        with self._lock:
            self._open = {k: v for k, v in self._open.items() if v is not repo}
        repo.close()

    def close(self) -> None:
        """Close every kept repository."""
        with self._lock:
            repos, self._open = list(self._open.values()), {}
        for r in repos:
            r.close()
