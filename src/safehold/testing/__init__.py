"""
Test helpers shipped as first-class code: a fake engine, a fake clock, a server in a thread.

``FakeEngine`` implements ``service.engine.BackupEngine`` in memory, so tests
of the service layer need no repository; the real adapter (``RepoEngine``) is
tested against the real engine with file storage.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal

from safehold.core.progress import ProgressSink
from safehold.core.snapshot import Snapshot, SnapshotMeta, SnapshotSizes
from safehold.repo.errors import SnapshotNotFound
from safehold.storage.base import Storage
from safehold.testing.catalog import FakeCatalog, FakeUnitOfWork

__all__ = [
    "FakeCatalog",
    "FakeClock",
    "FakeEngine",
    "FakeUnitOfWork",
    "free_port",
    "serve_in_thread",
]


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, **kwargs: float) -> datetime:
        """Move forward by ``timedelta(**kwargs)``."""
        with self._lock:
            self.now += timedelta(**kwargs)
            return self.now


class FakeEngine:
    """An in-memory ``BackupEngine``: snapshots keyed by the storage's location."""

    def __init__(self) -> None:
        self.repos: dict[str, list[tuple[Snapshot, dict[str, bytes]]]] = {}
        self.fail_next: Exception | None = None
        self.gate: threading.Event | None = None  # when set, backups wait for it
        self.ensured: list[str] = []
        self._lock = threading.Lock()

    def _save(
        self,
        storage: Storage,
        meta: SnapshotMeta,
        files: dict[str, bytes],
        kind: str,
        paths: tuple[str, ...],
    ) -> Snapshot:
        if self.gate is not None:
            self.gate.wait(30)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        digest = hashlib.sha256(
            repr((sorted(files.items()), time.monotonic_ns())).encode()
        ).hexdigest()
        snap = Snapshot(
            id=digest,
            time=meta.time or datetime.now(UTC),
            host=meta.host or "fake",
            user="fake",
            paths=paths,
            tree="0" * 64,
            source_kind="stdin" if kind == "stdin" else "dir",
            source_name=paths[0] if kind == "stdin" else None,
            tags=meta.tags,
            partition=meta.partition,
            backup_type=meta.backup_type,
            parent=meta.parent,
            chain_id=meta.chain_id,
            epoch=meta.epoch,
            lsn=meta.lsn,
            sizes=SnapshotSizes(logical=sum(len(v) for v in files.values()), files=len(files)),
        )
        with self._lock:
            self.repos.setdefault(storage.properties.location, []).append((snap, files))
        return snap

    def _find(self, storage: Storage, snapshot_id: str) -> tuple[Snapshot, dict[str, bytes]]:
        for snap, files in self.repos.get(storage.properties.location, []):
            if snap.id.startswith(snapshot_id):
                return snap, files
        raise SnapshotNotFound(f"no snapshot {snapshot_id}")

    def backup_dir(
        self,
        storage: Storage,
        path: Path,
        *,
        meta: SnapshotMeta,
        progress: ProgressSink,
        parent: str | None = None,
    ) -> Snapshot:
        """Read every file under *path* (whatever *parent* is)."""
        del parent
        files = {
            str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
        }
        progress.advance(done_bytes=sum(len(v) for v in files.values()), items=len(files))
        return self._save(storage, meta, files, "dir", (str(path),))

    def backup_stream(
        self,
        storage: Storage,
        stream: BinaryIO,
        *,
        name: str,
        meta: SnapshotMeta,
        progress: ProgressSink,
    ) -> Snapshot:
        """Read the stream."""
        data = stream.read()
        progress.advance(done_bytes=len(data))
        return self._save(storage, meta, {name: data}, "stdin", (name,))

    def restore_dir(
        self, storage: Storage, snapshot_id: str, target: Path, *, progress: ProgressSink
    ) -> Snapshot:
        """Write the files under ``target/<basename>``, as the real engine does."""
        snap, files = self._find(storage, snapshot_id)
        root = target / Path(snap.paths[0]).name
        root.mkdir(parents=True, exist_ok=True)
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        progress.advance(items=len(files))
        return snap

    def dump(self, storage: Storage, snapshot_id: str, out: BinaryIO) -> int:
        """Write the stream's content."""
        _, files = self._find(storage, snapshot_id)
        data = next(iter(files.values()))
        out.write(data)
        return len(data)

    def snapshots(self, storage: Storage) -> list[Snapshot]:
        """Oldest first."""
        return sorted(
            (s for s, _ in self.repos.get(storage.properties.location, [])), key=lambda s: s.time
        )

    def ensure_repository(self, storage: Storage) -> None:
        """Count the calls (the fake needs no repository)."""
        self.ensured.append(storage.properties.location)

    def forget(self, storage: Storage, snapshot_ids: Sequence[str]) -> None:
        """Drop snapshots."""
        gone = set(snapshot_ids)
        with self._lock:
            key = storage.properties.location
            self.repos[key] = [(s, f) for s, f in self.repos.get(key, []) if s.id not in gone]

    def retime(self, snapshot_id: str, when: datetime) -> None:
        """Change a snapshot's time (to test time filters and retention)."""
        for key, items in self.repos.items():
            self.repos[key] = [
                (replace(s, time=when) if s.id == snapshot_id else s, f) for s, f in items
            ]


def free_port() -> int:
    """Return a TCP port that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve_in_thread(app: Any, *, lifespan: Literal["auto", "on", "off"] = "on") -> Iterator[str]:
    """Serve an ASGI *app* with uvicorn on a free port; yield its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Return every file under *root* by relative path (to compare directories)."""
    return {
        os.path.relpath(p, root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# --- An in-memory unit of work -----------------------------------------------------
