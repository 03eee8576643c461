"""
One repository's index shared by the concurrent jobs of a long-lived process
(``docs/format.md`` § Keeping a repository open (agents)).

``SharedIndex`` holds what the repository's index files say, and nothing else:
no job's writer ever adds to it. Each job sees it through its own ``JobIndex``,
which adds the packs that job stored. So a job deduplicates only against blobs
that an index file in the repository names, or that it stored itself; never
against another job's pack whose index file may not be written yet (a crash
then would leave a snapshot naming blobs no index file names).

Refreshes are coalesced: a job that asks for a refresh gets one that started
after it asked (its own, or one that another job started meanwhile), so a job
that refreshes under its lock sees every change made before it took the lock,
as when each job loaded its own index.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from safehold.repo.index import BlobLocation, Index, PackRef
from safehold.repo.index_load import IndexSource, load_index, refresh

__all__ = ["JobIndex", "SharedIndex"]


class SharedIndex:
    """A repository's filed index, refreshed incrementally and at most once at a time."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._mutex = threading.Lock()
        self._started = 0  # refreshes started
        self._done = 0  # the start number of the newest finished refresh

    def refresh(self, src: IndexSource, *, full: bool = False, strict: bool = False) -> Index:
        """
        Bring the index up to date with a refresh that starts after this call.

        Only new index files are read, unless *full* (everything, as at an open).
        Returns the current index.
        """
        asked = self._started
        with self._mutex:
            if self._done > asked and not full:
                return self.index  # one that started after we asked has finished
            self._started += 1
            number = self._started
            if full or self._done == 0:  # never loaded (an open that failed): load it all
                self.index = load_index(src, strict=strict)
            else:
                self.index = refresh(src, self.index)
            self._done = number
            return self.index


class JobIndex(Index):
    """
    One job's view: the packs it stored itself (held here, as a writer adds
    them), then the shared index as it is at each lookup.
    """

    def __init__(self, shared: Callable[[], Index]) -> None:
        super().__init__()
        self._shared = shared

    @property
    def base(self) -> Index:
        """The shared index at this moment."""
        return self._shared()

    def __len__(self) -> int:
        return super().__len__() + len(self.base)

    def has(self, blob_id: bytes) -> bool:
        return super().has(blob_id) or self.base.has(blob_id)

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        return super().lookup(blob_id) or self.base.lookup(blob_id)

    def pack(self, pack_id: str) -> PackRef | None:
        return super().pack(pack_id) or self.base.pack(pack_id)

    @property
    def damaged(self) -> list[str]:
        """The shared index's damaged files (a job reads none of its own)."""
        return self.base.damaged

    @damaged.setter
    def damaged(self, value: list[str]) -> None:
        pass  # Index.__init__ sets it; the shared index owns the list

    def file_names(self) -> set[str]:
        return super().file_names() | self.base.file_names()
