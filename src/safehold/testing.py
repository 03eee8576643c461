"""
Test helpers shipped as first-class code: a fake engine, a fake clock, a server in a thread.

``FakeEngine`` implements ``service.engine.BackupEngine`` in memory, so tests
of the service layer need no repository; the real adapter (``RepoEngine``) is
tested against the real engine with file storage.
"""

from __future__ import annotations

import copy
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal

from safehold.core.policy import EntityRef
from safehold.core.progress import ProgressSink
from safehold.core.snapshot import Snapshot, SnapshotMeta, SnapshotSizes
from safehold.repo.errors import SnapshotNotFound
from safehold.service.model import BackupRecord, JobRecord, PartitionRecord
from safehold.service.uow import UnitOfWork
from safehold.storage.base import Storage

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
        self, storage: Storage, path: Path, *, meta: SnapshotMeta, progress: ProgressSink
    ) -> Snapshot:
        """Read every file under *path*."""
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


@dataclass
class FakeCatalog:
    """What a ``FakeUnitOfWork`` stores: the catalog's tables as dictionaries."""

    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    partitions: dict[str, PartitionRecord] = field(default_factory=dict)
    mappings: dict[EntityRef, tuple[str, datetime]] = field(default_factory=dict)
    suspensions: set[EntityRef] = field(default_factory=set)
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    backups: dict[str, BackupRecord] = field(default_factory=dict)
    agents: dict[str, datetime] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)


class _FakePolicies:
    def __init__(self, c: FakeCatalog) -> None:
        self.c = c

    def get(self, name: str) -> dict[str, Any] | None:
        doc = self.c.policies.get(name)
        return copy.deepcopy(doc) if doc is not None else None

    def list(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(self.c.policies[n]) for n in sorted(self.c.policies)]

    def add(self, name: str, doc: dict[str, Any], now: datetime) -> None:
        del now
        if name in self.c.policies:
            raise KeyError(f"duplicate policy {name}")
        self.c.policies[name] = copy.deepcopy(doc)

    def update(self, name: str, doc: dict[str, Any]) -> None:
        if name in self.c.policies:
            self.c.policies[name] = copy.deepcopy(doc)

    def delete(self, name: str) -> None:
        self.c.policies.pop(name, None)


class _FakePartitions:
    def __init__(self, c: FakeCatalog) -> None:
        self.c = c

    def get(self, partition_id: str) -> PartitionRecord | None:
        p = self.c.partitions.get(partition_id)
        return copy.deepcopy(p) if p is not None else None

    def list(
        self, *, application: str | None = None, service: str | None = None
    ) -> list[PartitionRecord]:
        return [
            copy.deepcopy(p)
            for _, p in sorted(self.c.partitions.items())
            if (application is None or p.application == application)
            and (service is None or p.service == service)
        ]

    def save(self, p: PartitionRecord) -> None:
        self.c.partitions[p.partition_id] = copy.deepcopy(p)

    def delete(self, partition_id: str) -> None:
        self.c.partitions.pop(partition_id, None)


class _FakeMappings:
    def __init__(self, c: FakeCatalog) -> None:
        self.c = c

    def all(self) -> dict[EntityRef, str]:
        return {e: name for e, (name, _) in self.c.mappings.items()}

    def enabled_at(self, entity: EntityRef) -> datetime | None:
        found = self.c.mappings.get(entity)
        return found[1] if found else None

    def assign(self, entity: EntityRef, policy: str, now: datetime) -> None:
        if policy not in self.c.policies:
            raise KeyError(f"no policy {policy}")  # the catalog's foreign key
        self.c.mappings[entity] = (policy, now)

    def remove(self, entity: EntityRef) -> bool:
        return self.c.mappings.pop(entity, None) is not None

    def of_policy(self, policy: str) -> list[EntityRef]:
        return [e for e, (name, _) in self.c.mappings.items() if name == policy]

    def suspensions(self) -> set[EntityRef]:
        return set(self.c.suspensions)

    def suspend(self, entity: EntityRef) -> None:
        self.c.suspensions.add(entity)

    def resume(self, entity: EntityRef) -> None:
        self.c.suspensions.discard(entity)


class _FakeJobs:
    def __init__(self, c: FakeCatalog) -> None:
        self.c = c

    def get(self, job_id: str) -> JobRecord | None:
        j = self.c.jobs.get(job_id)
        return copy.deepcopy(j) if j is not None else None

    def latest(self, partition_id: str, kinds: Iterable[str]) -> JobRecord | None:
        wanted = set(kinds)
        mine = [
            j for j in self.c.jobs.values() if j.partition_id == partition_id and j.kind in wanted
        ]
        return copy.deepcopy(max(mine, key=lambda j: (j.created_at, j.id))) if mine else None

    def active(self, partition_id: str | None = None) -> list[JobRecord]:
        found = [
            j
            for j in self.c.jobs.values()
            if j.active and (partition_id is None or j.partition_id == partition_id)
        ]
        return [copy.deepcopy(j) for j in sorted(found, key=lambda j: j.created_at)]

    def save(self, j: JobRecord) -> None:
        self.c.jobs[j.id] = copy.deepcopy(j)

    def finished_backups(self, limit: int = 1000) -> list[JobRecord]:
        done = [j for j in self.c.jobs.values() if j.kind == "backup" and not j.active]
        done.sort(key=lambda j: j.finished_at or j.created_at, reverse=True)
        return [copy.deepcopy(j) for j in done[:limit]]


class _FakeBackups:
    def __init__(self, c: FakeCatalog) -> None:
        self.c = c

    def get(self, backup_id: str) -> BackupRecord | None:
        b = self.c.backups.get(backup_id)
        return copy.deepcopy(b) if b is not None else None

    def list(
        self,
        *,
        partition_id: str | None = None,
        application: str | None = None,
        service: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[BackupRecord]:
        out = [
            b
            for b in self.c.backups.values()
            if (partition_id is None or b.partition_id == partition_id)
            and (application is None or b.application == application)
            and (service is None or b.service == service)
            and (start is None or b.created_at >= start)
            and (end is None or b.created_at <= end)
        ]
        return [copy.deepcopy(b) for b in sorted(out, key=lambda b: (b.created_at, b.backup_id))]

    def add(self, b: BackupRecord) -> None:
        self.c.backups[b.backup_id] = copy.deepcopy(b)

    def delete(self, backup_ids: Iterable[str]) -> None:
        for bid in list(backup_ids):
            self.c.backups.pop(bid, None)


class _FakeAgents:
    def __init__(self, c: FakeCatalog) -> None:
        self.c = c

    def seen(self, agent_id: str, now: datetime) -> None:
        self.c.agents[agent_id] = now

    def all(self) -> dict[str, datetime]:
        return dict(self.c.agents)


class _FakeOperations:
    def __init__(self, c: FakeCatalog) -> None:
        self.c = c

    def get(self, op_id: str) -> dict[str, Any] | None:
        op = self.c.operations.get(op_id)
        return dict(op) if op is not None else None

    def save(self, op_id: str, **values: Any) -> None:
        self.c.operations.setdefault(
            op_id, {"id": op_id, "finished_at": None, "message": None}
        ).update(values)

    def fail_in_progress(self, now: datetime, message: str) -> None:
        for op in self.c.operations.values():
            if op["state"] == "InProgress":
                op.update(state="Failed", finished_at=now, message=message)


class FakeUnitOfWork:
    """
    A ``UnitOfWork`` in memory: a transaction works on a copy of the catalog,
    which ``commit`` puts back. Transactions are serialised, as SQLite's are.
    """

    def __init__(self, catalog: FakeCatalog) -> None:
        self._shared = catalog
        self.committed = False

    def __enter__(self) -> FakeUnitOfWork:
        self._shared.lock.acquire()
        work = copy.copy(self._shared)
        for name in (
            "policies",
            "partitions",
            "mappings",
            "suspensions",
            "jobs",
            "backups",
            "agents",
            "operations",
        ):
            setattr(work, name, copy.deepcopy(getattr(self._shared, name)))
        self._work = work
        self.policies = _FakePolicies(work)
        self.partitions = _FakePartitions(work)
        self.mappings = _FakeMappings(work)
        self.jobs = _FakeJobs(work)
        self.backups = _FakeBackups(work)
        self.agents = _FakeAgents(work)
        self.operations = _FakeOperations(work)
        return self

    def __exit__(
        self, t_: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._shared.lock.release()

    def commit(self) -> None:
        """Put the working copy back."""
        for name in (
            "policies",
            "partitions",
            "mappings",
            "suspensions",
            "jobs",
            "backups",
            "agents",
            "operations",
        ):
            setattr(self._shared, name, getattr(self._work, name))
        self.committed = True

    def lock_partition(self, partition_id: str) -> None:
        """Nothing to do: fake transactions are serialised already."""
        del partition_id


def _fake_uow_is_a_unit_of_work(catalog: FakeCatalog) -> UnitOfWork:
    # mypy checks here that the fake keeps up with the UnitOfWork Protocol.
    return FakeUnitOfWork(catalog)
