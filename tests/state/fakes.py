"""
A stand-in for the engine, for the state store's unit tests only.

``FakeTarget`` keeps the ``BackupTarget`` contract the way ``RepositoryTarget``
does over the engine (``backup_stream`` to store, ``dump`` to fetch), without
chunking or encryption. Given a directory, it keeps snapshots there, so a backup
made by a killed subprocess is seen by the test that killed it; it writes the data
before the manifest, as the engine does, so a half-stored backup is never listed.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from safehold.core.snapshot import Snapshot, SnapshotMeta, SnapshotSizes
from safehold.state import BackupTarget


class FakeTarget:
    """Snapshots in a dict, or in a directory when *root* is given."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root
        self._data: dict[str, bytes] = {}
        self._snaps: dict[str, Snapshot] = {}
        self._lock = threading.Lock()
        self.stored = 0
        self.fetched: list[str] = []
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)

    @property
    def location(self) -> str:
        """Where the fake keeps its snapshots."""
        return f"fake:{self.root or 'memory'}"

    def store(self, stream: BinaryIO, *, name: str, meta: SnapshotMeta) -> Snapshot:
        """Store the stream as ``backup_stream`` would: data first, then the manifest."""
        data = stream.read()
        snap = Snapshot(
            id="",
            time=meta.time or datetime.now(UTC),
            host="test",
            user="test",
            paths=(name,),
            tree=hashlib.sha256(data).hexdigest(),
            source_kind="stdin",
            source_name=name,
            tags=meta.tags,
            partition=meta.partition,
            backup_type=meta.backup_type,
            parent=meta.parent,
            chain_id=meta.chain_id,
            epoch=meta.epoch,
            lsn=meta.lsn,
            sizes=SnapshotSizes(logical=len(data), stored=len(data), new=len(data), files=1),
        )
        doc = snap.to_json()
        sid = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
        snap = Snapshot.from_json(sid, doc)
        with self._lock:
            if self.root is None:
                self._data[sid] = data
                self._snaps[sid] = snap
            else:
                _write_atomic(self.root / f"{sid}.data", data)
                _write_atomic(self.root / f"{sid}.json", json.dumps(doc).encode())
            self.stored += 1
        return snap

    def forget(self, snapshot_id: str) -> None:
        """Remove the manifest (the data stays, as until a prune)."""
        with self._lock:
            self._snaps.pop(snapshot_id, None)
            if self.root is not None:
                (self.root / f"{snapshot_id}.json").unlink(missing_ok=True)

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot, oldest first, as ``Repository.snapshots`` orders them."""
        with self._lock:
            if self.root is None:
                snaps = list(self._snaps.values())
            else:
                snaps = [
                    Snapshot.from_json(p.stem, json.loads(p.read_text()))
                    for p in self.root.glob("*.json")
                ]
        return sorted(snaps, key=lambda s: (s.time, s.id))

    def fetch(self, snapshot: Snapshot, out: BinaryIO) -> int:
        """Write the snapshot's content, as ``dump`` would."""
        with self._lock:
            if self.root is None:
                data = self._data[snapshot.id]
            else:
                data = (self.root / f"{snapshot.id}.data").read_bytes()
            self.fetched.append(snapshot.id)
        out.write(data)
        return len(data)

    def corrupt(self, snapshot_id: str, data: bytes) -> None:
        """Replace a snapshot's content (to test damage detection)."""
        with self._lock:
            if self.root is None:
                self._data[snapshot_id] = data
            else:
                (self.root / f"{snapshot_id}.data").write_bytes(data)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


_: type[BackupTarget] = FakeTarget  # the fake keeps the Protocol
