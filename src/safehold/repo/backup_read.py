"""
Reading files for a backup: the chunking window, and read-ahead of small files.

Small files are read by the walker itself (a thread hand-off costs more than
the read when the file is cached). When it is not cached (a first backup after
the data was written, a cold cache), each read waits for the disk in turn: on
the ``make bench`` set, 10,000 files of about 10 KB spent a third of the
backup in ``readv``. So the walker names each small file it will read to a
``Prefetcher`` as soon as it has decided to read it; the prefetcher's thread
asks the kernel to read it ahead (``posix_fadvise(WILLNEED)``), so that the
disk has many reads in flight while the walker goes on, and the walker reads
them in groups of ``GROUP`` a little later, from the page cache.
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
from collections.abc import Iterator

from pyfastcdc import FastCDC

from safehold.repo.repository import Repository

__all__ = ["BLOCK", "GROUP", "INLINE", "Prefetcher", "ReadBuffer", "make_chunker"]

BLOCK = 2 * 1024 * 1024
INLINE = 256 * 1024  # files up to this size are read by the walker itself
#: Small files named to the prefetcher before the walker reads them (at most
#: GROUP × INLINE of page cache ahead).
GROUP = 64


class ReadBuffer:
    """
    One thread's reading window: an anonymous memory map of ``BLOCK`` plus
    the largest chunk, reused for every file the thread reads.
    """

    def __init__(self, chunker: FastCDC, max_chunk: int) -> None:
        self.chunker = chunker
        self.mm = mmap.mmap(-1, BLOCK + max_chunk)

    def chunks(self, fd: int) -> Iterator[memoryview]:
        """
        Yield the content-defined chunks of an open file, reading ``BLOCK`` at a time.

        The unfinished last chunk of each block moves to the front of the
        window, so memory stays fixed whatever the file size. A yielded view is
        valid only until the next one is asked for.
        """
        view = memoryview(self.mm)
        try:
            filled = 0
            while True:
                got = read_into(fd, view[filled : filled + BLOCK])
                total = filled + got
                eof = got < BLOCK
                if not total:
                    return
                chunks = list(self.chunker.cut_buf(view[:total]))
                last = None if eof else chunks.pop()
                for c in chunks:
                    yield view[c.offset : c.offset + c.length]
                if last is None:
                    return
                filled = total - last.offset
                self.mm.move(0, last.offset, filled)
        finally:
            view.release()


def read_into(fd: int, out: memoryview) -> int:
    """Fill *out* from *fd*; short only at end of file."""
    got = 0
    while got < len(out):
        n = os.readv(fd, [out[got:]])
        if not n:
            break
        got += n
    return got


def make_chunker(repo: Repository) -> FastCDC:
    """The repository's content-defined chunker (its sizes and secret seed)."""
    c = repo.chunker
    return FastCDC(c.avg, min_size=c.min, max_size=c.max, seed=repo.keys.chunker_seed)


class Prefetcher:
    """
    A thread that asks the kernel to read small files ahead of the walker.

    Only a hint: a file that cannot be opened is skipped (the walker reports
    it when it reads it), and no byte is read into this process. Files are
    opened without following links and without blocking (a FIFO that took a
    regular file's place is not waited on).
    """

    _FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

    def __init__(self, length: int = INLINE) -> None:
        self._length = length
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.hinted = 0
        self._thread: threading.Thread | None = None  # started by the first add

    def add(self, path: str) -> None:
        """Ask for *path* to be read ahead."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="safehold-prefetch", daemon=True)
            self._thread.start()
        self._queue.put(path)

    def _run(self) -> None:
        advise = getattr(os, "posix_fadvise", None)
        while (path := self._queue.get()) is not None:
            if advise is None:
                continue
            try:
                fd = os.open(path, self._FLAGS)
            except OSError:
                continue
            try:
                advise(fd, 0, self._length, os.POSIX_FADV_WILLNEED)
                self.hinted += 1
            except OSError:
                pass
            finally:
                os.close(fd)

    def close(self) -> None:
        """Stop the thread once the paths queued so far are done."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
