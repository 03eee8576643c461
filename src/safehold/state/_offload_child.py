"""The backup process's side of ``_offload``: ``python -m safehold.state._offload_child PPID``."""

from __future__ import annotations

import os
import pickle
import select
import sys
import threading

from safehold.repo import Repository, backup_stream
from safehold.state._offload import recv, send
from safehold.state.errors import StateError
from safehold.storage.file import FileStorage


def _watch_parent(ppid: int) -> None:
    """Exit at once when the parent dies (a pidfd where there is one, else polling)."""
    try:
        fd = os.pidfd_open(ppid)
    except (AttributeError, OSError):
        fd = None
    while True:
        if fd is not None:
            select.select([fd], [], [])
        else:
            threading.Event().wait(0.05)
        if fd is not None or os.getppid() != ppid:
            os._exit(1)


def _serve(ppid: int) -> None:
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True).start()
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the reply pipe
    try:
        (kind, root, connections), keys, cache_dir = recv(inp)
    except EOFError:
        return
    assert kind == "file"
    repo: Repository | Exception
    try:
        repo = Repository.open(FileStorage(root, connections=connections), "", keys=keys)
        repo.cache_dir = cache_dir
    except Exception as exc:  # each job answers it: the parent raises the real cause
        repo = exc
    while True:
        try:
            job = recv(inp)
        except EOFError:
            return
        _, path, name, meta = job
        try:
            if isinstance(repo, Exception):
                raise repo
            with open(path, "rb") as f:
                snap = backup_stream(repo, f, name=name, meta=meta).snapshot
            reply: tuple[str, object] = ("ok", snap)
        except Exception as exc:  # carried back to the parent, which raises it
            reply = ("error", exc)
        try:
            send(out, reply)
        except (pickle.PicklingError, TypeError, AttributeError):
            send(out, ("error", StateError(f"the backup failed: {reply[1]!r}")))


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
