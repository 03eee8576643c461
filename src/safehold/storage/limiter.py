"""
A storage that limits the bandwidth of another storage, as restic's limiter does.

``--limit-upload`` and ``--limit-download`` wrap the repository's storage in a
``LimitedStorage``. Each direction has one token bucket shared by every
thread, so eight packs uploading at once share the limit instead of getting it
eight times. A transfer takes its bytes from the bucket and may leave it in
debt; the caller then sleeps until the debt is paid. Over any window longer
than the bucket's one second of burst, the average rate stays at the limit.

Only object bodies count (``put`` data, ``get`` results); listings and stats
are small and not limited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from safehold.storage.base import ObjectInfo, Storage, StorageProperties

__all__ = ["LimitedStorage", "TokenBucket"]


class TokenBucket:
    """
    Allow *rate* bytes a second on average, with bursts of up to one second's worth.

    ``sleep`` and ``clock`` are injectable for tests.
    """

    def __init__(
        self,
        rate: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("the rate must be positive")
        self.rate = float(rate)
        self._capacity = self.rate
        self._tokens = self._capacity
        self._sleep = sleep
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def take(self, n: int) -> float:
        """Spend *n* bytes; sleep as long as the limit needs. Return the time slept."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            # Later takers see the debt of earlier ones, so concurrent callers
            # queue up behind each other instead of all sleeping the same time.
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


class LimitedStorage:
    """
    Wrap *inner* so that object uploads and downloads keep to the given rates.

    Args:
        inner: the storage to wrap.
        upload: bytes a second for ``put``, or None for no limit.
        download: bytes a second for ``get``, or None for no limit.
    """

    def __init__(
        self,
        inner: Storage,
        *,
        upload: TokenBucket | None = None,
        download: TokenBucket | None = None,
    ) -> None:
        self._inner = inner
        self.upload = upload
        self.download = download

    @property
    def inner(self) -> Storage:
        """The wrapped storage."""
        return self._inner

    @property
    def properties(self) -> StorageProperties:
        """Describe the wrapped storage."""
        return self._inner.properties

    def create(self) -> None:
        """Create the container; not limited."""
        self._inner.create()

    def stat(self, name: str) -> ObjectInfo:
        """Stat an object; not limited."""
        return self._inner.stat(name)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """List objects; not limited."""
        return self._inner.list(prefix)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Read an object, then wait for the download limit."""
        data = self._inner.get(name, offset, length)
        if self.download is not None:
            self.download.take(len(data))
        return data

    def put(self, name: str, data: bytes) -> None:
        """Wait for the upload limit, then store the object."""
        if self.upload is not None:
            self.upload.take(len(data))
        self._inner.put(name, data)

    def delete(self, name: str) -> None:
        """Delete an object; not limited."""
        self._inner.delete(name)

    def close(self) -> None:
        """Close the wrapped storage."""
        self._inner.close()
