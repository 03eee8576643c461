"""
Storing blobs: deduplication, compression, encryption, packing and upload.

``BlobWriter.save`` is called from many threads at once. There is one open
pack for data and one for trees; hashing and compression run in the calling
threads, in parallel, and only encryption into the pack is serialized.
``save_many`` stores a batch (a database's pages): one pass of dedup checks
under the lock, the batch compressed by zstd's threads with the GIL released
(``maybe_compress_many``), and one turn of the pack lock to encrypt it.
Full packs are uploaded by a bounded pool, and after every
``INDEX_EVERY`` uploaded packs an index file is written for them, so that the
order data → index holds and a killed backup leaves reusable data behind.
"""

from __future__ import annotations

import contextlib
import mmap
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from safehold.core.progress import NullProgress, ProgressSink
from safehold.repo.compress import maybe_compress, maybe_compress_many
from safehold.repo.index import write_index_file
from safehold.repo.pack import DATA, TREE, PackBuilder, PackInfo
from safehold.repo.repository import Repository

__all__ = ["BlobWriter"]

INDEX_EVERY = 8


class BlobWriter:
    """Writes blobs into packs; use as a context manager or call ``flush``."""

    def __init__(
        self, repo: Repository, *, progress: ProgressSink | None = None, uploads: int | None = None
    ) -> None:
        self._repo = repo
        self._progress = progress or NullProgress()
        n = uploads or repo.storage.properties.connections
        self._pool = ThreadPoolExecutor(n, thread_name_prefix="safehold-upload")
        # Bounds packs held in memory waiting for upload.
        # Bounds the data packs alive (one open, the rest uploading or queued),
        # which is most of a backup's memory.
        self._slots = threading.BoundedSemaphore(n + 1)
        self._lock = threading.Lock()
        self._pending: set[bytes] = set()
        self._open: dict[int, PackBuilder] = {}
        self._pack_locks = {DATA: threading.Lock(), TREE: threading.Lock()}
        self._uploads: list[Future[None]] = []
        self._unindexed: list[PackInfo] = []
        self._error: BaseException | None = None
        self.index_files: list[str] = []
        self.new_bytes = 0
        self.stored_bytes = 0

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def save(
        self,
        blob_type: int,
        data: bytes | memoryview,
        blob_id: bytes | None = None,
        *,
        force: bool = False,
    ) -> tuple[bytes, bool]:
        """
        Store *data* unless the repository already has it (or *force*: prune's repack).

        Returns:
            ``(id, new)``: the blob id, and whether this call stored it.
        """
        self._check()
        if blob_id is None:
            blob_id = self._repo.blob_id(data)
        if not force and self._repo.index.has(blob_id):
            return blob_id, False
        with self._lock:
            if blob_id in self._pending:
                return blob_id, False
            self._pending.add(blob_id)
        stored, comp = maybe_compress(data)
        # One open pack per blob type, each under its own lock: encryption into
        # the pack is the only work done under it (about 0.3 ms a MiB), and one
        # open pack instead of one per thread keeps memory down.
        lock = self._pack_locks[blob_type]
        with lock:
            pack = self._open.get(blob_type)
            if pack is None:
                pack = self._open[blob_type] = self._new_pack(blob_type)
            n = pack.add(blob_id, blob_type, stored, len(data), comp)
            full = pack.size >= self._repo.pack_size
            if full:
                del self._open[blob_type]
        with self._lock:
            self.new_bytes += len(data)
            self.stored_bytes += n
        if full:
            self._upload(pack, blob_type)
        return blob_id, True

    def save_many(
        self, blob_type: int, chunks: Sequence[bytes | memoryview]
    ) -> list[tuple[bytes, bool]]:
        """
        ``save`` for each of *chunks*, in order; the same ids, dedup and packs.

        Made for many small blobs: the per-blob Python work is what a page costs
        (docs/bench-write-path.md), so it is done once per batch where it can be.
        ``reserve_many`` and ``store_many`` are its two halves, for a caller that
        stores one batch in another thread while it hashes the next.
        """
        result, todo = self.reserve_many(chunks)
        if todo:
            self.store_many(blob_type, chunks, result, todo)
        return result

    def reserve_many(
        self, chunks: Sequence[bytes | memoryview]
    ) -> tuple[list[tuple[bytes, bool]], list[int]]:
        """
        Hash *chunks* and claim those nobody stored or is storing.

        Returns ``save``'s ``(id, new)`` for each chunk, and the positions of the
        new ones, which the caller must then pass to ``store_many`` (until it
        does, another writer of the same blob takes it as stored).
        """
        self._check()
        blob_id = self._repo.blob_id
        has = self._repo.index.has
        ids = [blob_id(c) for c in chunks]
        known = [has(i) for i in ids]
        todo: list[int] = []
        with self._lock:
            pending = self._pending
            for k, bid in enumerate(ids):
                if known[k] or bid in pending:
                    continue
                pending.add(bid)
                todo.append(k)
        result = [(bid, False) for bid in ids]
        for k in todo:
            result[k] = (ids[k], True)
        return result, todo

    def store_many(
        self,
        blob_type: int,
        chunks: Sequence[bytes | memoryview],
        reserved: list[tuple[bytes, bool]],
        todo: list[int],
    ) -> None:
        """Compress (on zstd's threads) and encrypt the chunks ``reserve_many`` claimed."""
        self._check()
        stored = maybe_compress_many([chunks[k] for k in todo])
        limit = self._repo.pack_size
        written = raw = 0
        with self._pack_locks[blob_type]:
            pack = self._open.get(blob_type)
            for k, (data, comp) in zip(todo, stored, strict=True):
                if pack is None:
                    pack = self._open[blob_type] = self._new_pack(blob_type)
                n = len(chunks[k])
                written += pack.add(reserved[k][0], blob_type, data, n, comp)
                raw += n
                if pack.size >= limit:
                    del self._open[blob_type]
                    self._upload(pack, blob_type)  # before a new pack takes a slot
                    pack = None
        with self._lock:
            self.new_bytes += raw
            self.stored_bytes += written

    def _new_pack(self, blob_type: int) -> PackBuilder:
        if blob_type == DATA:
            self._slots.acquire()  # released once the pack is stored
        # Room for a full pack plus the largest chunk, so it rarely has to grow.
        # A fresh map holds no memory until written, and closing it returns it
        # at once; recycling maps was measured to raise peak memory, not speed.
        capacity = self._repo.pack_size + self._repo.chunker.max + 1024 * 1024
        return PackBuilder(self._repo.keys.newest, mmap.mmap(-1, capacity))

    def _upload(self, pack: PackBuilder, blob_type: int) -> None:
        fut = self._pool.submit(self._put, pack, blob_type)
        with self._lock:
            self._uploads.append(fut)

    def _put(self, pack: PackBuilder, blob_type: int) -> None:
        try:
            info, view = pack.finish()
            storage = self._repo.storage
            try:
                storage.put(info.name, view if storage.properties.accepts_views else bytes(view))  # type: ignore[arg-type]
            finally:
                view.release()
                _close(pack.release())
            with self._lock:
                self._repo.index.add_pack(info)
                for e in info.blobs:
                    self._pending.discard(e.id)
                self._unindexed.append(info)
                batch = self._unindexed if len(self._unindexed) >= INDEX_EVERY else []
                if batch:
                    self._unindexed = []
            if batch:
                self._write_index(batch)
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            if blob_type == DATA:
                self._slots.release()

    def _write_index(self, packs: list[PackInfo]) -> None:
        name = write_index_file(self._repo.storage, self._repo.keys.index_key, packs)
        with self._lock:
            self.index_files.append(name)
        self._repo.index.filed(name, [p.id for p in packs])

    def flush(self) -> None:
        """Upload every open pack and write the index for all of them; raise the first error."""
        for blob_type, lock in self._pack_locks.items():
            with lock:
                pack = self._open.pop(blob_type, None)
            if pack is not None and pack.count:
                self._upload(pack, blob_type)
            elif pack is not None:
                _close(pack.release())
                if blob_type == DATA:
                    self._slots.release()
        with self._lock:
            uploads, self._uploads = self._uploads, []
        for fut in uploads:
            fut.result()
        self._check()
        with self._lock:
            rest, self._unindexed = self._unindexed, []
        if rest:
            self._write_index(rest)

    def close(self) -> None:
        """Stop the upload pool (after ``flush``, or to abandon the work)."""
        self._pool.shutdown(wait=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ += ["DATA", "TREE"]


def _close(buffer: mmap.mmap) -> None:
    """Unmap a pack buffer now, or, if a storage client still holds a view of it, when that goes."""
    # Else the map is unmapped with the client's last reference to it.
    with contextlib.suppress(BufferError):
        buffer.close()
