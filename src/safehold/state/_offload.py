"""
Storing backup files from a child process, so that the repository's work holds another GIL.

A backup's file (the SQLite copy or the incremental's JSON lines) is written by the
store's process, on a thread; storing it in the repository (chunking, hashing,
compression, encryption, packs, index and snapshot files) is Python that holds the
GIL for most of its time, and every commit on the event loop waits for the GIL
while it runs. ``StoreProcess`` runs that part in a child process instead, started
at the first backup and reused by every later one: ``python -m
safehold.state._offload_child``, told the repository once and then one file per job.

What the child is told goes through its stdin pipe, never argv or the environment:
the storage's description (a ``FileStorage`` root: a storage in memory, or one with
clients and credentials of its own, stays in the parent) and the repository's
unlocked ``Keyring`` (so the password itself never leaves the parent, and the
child derives no key). Nothing of it is printed or logged; the child's errors come
back pickled and are raised in the parent. The child exits when its stdin closes
(the target is closed or collected, or the parent died), and at once when the
parent dies in the middle of a job (a thread watches the parent's pidfd), as a
thread of the parent would have stopped.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import IO, Any

from safehold.core.snapshot import Snapshot, SnapshotMeta
from safehold.repo import Repository
from safehold.state.errors import StateError

__all__ = ["StoreProcess", "describe", "recv", "send"]

_LEN = struct.Struct("<Q")


def describe(repo: Repository) -> tuple[Any, ...] | None:
    """What a child needs to open *repo*'s storage again; None: it cannot (stay in-process)."""
    from safehold.storage.file import FileStorage

    storage = repo.storage
    if type(storage) is not FileStorage:
        return None
    props = storage.properties
    return ("file", props.location, props.connections)


class StoreProcess:
    """
    A child process storing backup files into one repository; see the module doc.

    ``store`` blocks (the store calls it from a worker thread) and runs one job at a
    time. A child that died is started again at the next job.

    Args:
        repo: the open repository (its keys are handed to the child through a pipe).
        storage: ``describe(repo)``.
    """

    def __init__(self, repo: Repository, storage: tuple[Any, ...]) -> None:
        self._hello = (storage, repo.keys, repo.cache_dir)
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize[Any, StoreProcess] | None = None

    def store(self, path: Path, *, name: str, meta: SnapshotMeta) -> Snapshot:
        """
        Store the file *path* as one snapshot named *name*, described by *meta*.

        Raises:
            Whatever the engine raised in the child (``StateError`` if it cannot be
            carried back, or the child died).
        """
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None
            assert proc.stdout is not None
            try:
                send(proc.stdin, ("store", str(path), name, meta))
                kind, value = recv(proc.stdout)
            except Exception as exc:  # a broken pipe, a dead child, a reply it cannot read
                self._stop()
                raise StateError(f"the backup process failed: {exc!r}") from exc
        if kind == "ok":
            assert isinstance(value, Snapshot)
            return value
        raise value

    def close(self) -> None:
        """Stop the child (it finishes nothing: call between backups)."""
        with self._lock:
            self._stop()

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        proc = subprocess.Popen(  # our own module, no shell, no secret in argv
            [sys.executable, "-m", "safehold.state._offload_child", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert proc.stdin is not None
        try:
            send(proc.stdin, self._hello)
        except OSError as exc:
            _end(proc)
            raise StateError(f"the backup process did not start: {exc!r}") from exc
        self._proc = proc
        self._finalizer = weakref.finalize(self, _end, proc)
        return proc

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if proc is not None:
            _end(proc)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Close the child's stdin (it exits), and reap it."""
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def send(out: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_LEN.pack(len(data)) + data)
    out.flush()


def recv(inp: IO[bytes]) -> Any:
    head = inp.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError("the backup process closed its pipe")
    (n,) = _LEN.unpack(head)
    data = inp.read(n)
    if len(data) < n:
        raise EOFError("the backup process closed its pipe")
    return pickle.loads(data)  # noqa: S301 - our own child, over its own pipe
