"""
Snapshot manifests: what a backup recorded, as the domain sees it.

A ``Snapshot`` is what the engine stores in ``snapshots/<id>`` (see
``docs/format.md``). It carries what the service needs later: the source, the
partition it belongs to, its place in a backup chain, and its sizes.
"""

from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "Epoch",
    "PartitionRef",
    "Snapshot",
    "SnapshotFilter",
    "SnapshotMeta",
    "SnapshotSizes",
    "format_time",
    "root_name",
]

BackupType = Literal["full", "incremental"]
SourceKind = Literal["dir", "stdin"]


def format_time(t: datetime) -> str:
    """Format a UTC time as the format's ISO 8601 string with microseconds and ``Z``."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(s: str) -> datetime:
    """Parse a time written by ``format_time`` (or any ISO 8601 string with an offset)."""
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)


def root_name(source: str) -> str:
    """
    The name of the entry that *source* (a backed-up path) gets in a snapshot's root tree.

    It is the last component, or ``root`` for ``/``; ``backup_paths`` names the
    entries so, and every format version has done so.
    """
    return posixpath.basename(source.rstrip("/")) or "root"


@dataclass(frozen=True)
class PartitionRef:
    """
    The Service Fabric-style identity of the state a snapshot holds; all optional.

    ``kind`` with ``low_key``/``high_key`` or ``name`` is SF's partition
    information (Singleton, Int64Range, Named): a restore into another cluster
    maps partitions by it, since partition ids differ between clusters.
    """

    application: str | None = None
    service: str | None = None
    partition_id: str | None = None
    kind: str | None = None
    low_key: int | None = None
    high_key: int | None = None
    name: str | None = None


@dataclass(frozen=True)
class Epoch:
    """A partition's epoch: it moves when data is lost or the configuration changes."""

    data_loss_number: int = 0
    configuration_number: int = 0

    def key(self) -> tuple[int, int]:
        """Order epochs: data loss first, then configuration."""
        return (self.data_loss_number, self.configuration_number)


@dataclass(frozen=True)
class SnapshotSizes:
    """Sizes in bytes: logical (the source), stored (after dedup and compression), new."""

    logical: int = 0
    stored: int = 0
    new: int = 0
    files: int = 0


@dataclass(frozen=True)
class SnapshotMeta:
    """What the caller of a backup says about it; the engine adds the rest."""

    host: str | None = None
    tags: tuple[str, ...] = ()
    partition: PartitionRef | None = None
    backup_type: BackupType = "full"
    parent: str | None = None
    chain_id: str | None = None
    epoch: Epoch | None = None
    lsn: int | None = None
    time: datetime | None = None


@dataclass(frozen=True)
class Snapshot:
    """A stored snapshot manifest, with its id (the hash of its file)."""

    id: str
    time: datetime
    host: str
    user: str
    paths: tuple[str, ...]
    tree: str
    source_kind: SourceKind = "dir"
    source_name: str | None = None
    tags: tuple[str, ...] = ()
    partition: PartitionRef | None = None
    backup_type: BackupType = "full"
    parent: str | None = None
    chain_id: str | None = None
    epoch: Epoch | None = None
    lsn: int | None = None
    sizes: SnapshotSizes = field(default_factory=SnapshotSizes)
    warnings: tuple[str, ...] = ()
    program: str = ""
    original: str | None = None  # the snapshot this one was copied from, in another repository

    def roots(self) -> dict[str, str]:
        """Map each root entry's name to the absolute source path it was backed up from."""
        return {root_name(p): p for p in self.paths if p.startswith("/")}

    def tree_path(self, path: str) -> str:
        """
        Resolve a path given by a user to a path in the snapshot's tree (no leading ``/``).

        The absolute source path (``/srv/x/data/sub``) is the primary form. The
        tree's own form (``/data/sub``), the only form before sources were
        resolved, is still accepted when no source path matches. ``""`` is the
        whole snapshot.
        """
        path = path.rstrip("/")
        if not path:
            return ""
        best: tuple[int, str] | None = None
        for name, source in self.roots().items():
            base = source.rstrip("/")
            if path == base or path.startswith(base + "/"):
                rest = path[len(base) :]
                if best is None or len(base) > best[0]:
                    best = (len(base), name + rest)
        if best is not None:
            return best[1]
        return path.lstrip("/")

    def source_path(self, tree_path: str) -> str:
        """The absolute source path of a tree path (the inverse of ``tree_path``)."""
        name, sep, rest = tree_path.partition("/")
        source = self.roots().get(name)
        if source is None:
            return "/" + tree_path
        return source.rstrip("/") + sep + rest if rest else source

    @property
    def short_id(self) -> str:
        """The first 8 hex digits, as listings show it."""
        return self.id[:8]

    def to_json(self) -> dict[str, Any]:
        """Return the manifest's JSON form, without the id (the id is the file's hash)."""
        doc: dict[str, Any] = {
            "version": 1,
            "time": format_time(self.time),
            "host": self.host,
            "user": self.user,
            "paths": list(self.paths),
            "tags": list(self.tags),
            "tree": self.tree,
            "source": {"kind": self.source_kind, "name": self.source_name},
            "partition": _partition_json(self.partition) if self.partition else None,
            "backup_type": self.backup_type,
            "parent": self.parent,
            "chain_id": self.chain_id,
            "epoch": asdict(self.epoch) if self.epoch else None,
            "lsn": self.lsn,
            "sizes": asdict(self.sizes),
            "warnings": list(self.warnings),
            "program": self.program,
        }
        if self.original:
            doc["original"] = self.original
        return doc

    @classmethod
    def from_json(cls, snapshot_id: str, doc: dict[str, Any]) -> Snapshot:
        """Build a snapshot from its manifest JSON; ``KeyError``/``TypeError`` if malformed."""
        source = doc.get("source") or {}
        part = doc.get("partition")
        epoch = doc.get("epoch")
        return cls(
            id=snapshot_id,
            time=parse_time(doc["time"]),
            host=doc["host"],
            user=doc.get("user", ""),
            paths=tuple(doc.get("paths", ())),
            tree=doc["tree"],
            source_kind=source.get("kind", "dir"),
            source_name=source.get("name"),
            tags=tuple(doc.get("tags", ())),
            partition=_partition_ref(part) if part else None,
            backup_type=doc.get("backup_type", "full"),
            parent=doc.get("parent"),
            chain_id=doc.get("chain_id"),
            epoch=Epoch(**epoch) if epoch else None,
            lsn=doc.get("lsn"),
            sizes=SnapshotSizes(**doc.get("sizes", {})),
            warnings=tuple(doc.get("warnings", ())),
            program=doc.get("program", ""),
            original=doc.get("original"),
        )


@dataclass(frozen=True)
class SnapshotFilter:
    """
    Which snapshots a command considers, as restic selects them.

    A snapshot matches when its host is one of ``hosts``, it carries every tag
    of at least one group in ``tags`` (``--tag a,b --tag c`` is "a and b, or
    c"), and its paths include every one of ``paths`` (absolute; a stream
    snapshot's path is ``/NAME``). An empty field matches everything.
    """

    hosts: tuple[str, ...] = ()
    tags: tuple[tuple[str, ...], ...] = ()
    paths: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls, hosts: list[str] | None, tags: list[str] | None, paths: list[str] | None
    ) -> SnapshotFilter:
        """Build a filter from option values; paths are made absolute by the caller."""
        groups = tuple(
            tuple(t.strip() for t in group.split(",") if t.strip()) for group in tags or ()
        )
        return cls(
            hosts=tuple(hosts or ()),
            tags=tuple(g for g in groups if g),
            paths=tuple(p.rstrip("/") or "/" for p in paths or ()),
        )

    def is_empty(self) -> bool:
        """True when the filter lets every snapshot through."""
        return not (self.hosts or self.tags or self.paths)

    def matches(self, snap: Snapshot) -> bool:
        """Whether *snap* is selected."""
        if self.hosts and snap.host not in self.hosts:
            return False
        if self.tags and not any(set(g) <= set(snap.tags) for g in self.tags):
            return False
        # A stream snapshot's path is its file name: it matches as "/NAME".
        have = {("" if p.startswith("/") else "/") + p.rstrip("/") or "/" for p in snap.paths}
        return all(p in have for p in self.paths)

    def describe(self) -> str:
        """The filter in words, for messages."""
        parts = ["host " + " or ".join(repr(h) for h in self.hosts)] if self.hosts else []
        if self.tags:
            parts.append("tags " + " or ".join(",".join(g) for g in self.tags))
        parts += [f"path {p!r}" for p in self.paths]
        return " and ".join(parts) if parts else "any snapshot"


def _partition_ref(doc: dict[str, Any]) -> PartitionRef:
    # Fields this version does not know (a newer writer's) are ignored.
    known = {f.name for f in fields(PartitionRef)}
    return PartitionRef(**{k: v for k, v in doc.items() if k in known})


def _partition_json(p: PartitionRef) -> dict[str, Any]:
    # Only what is set: snapshots of a Singleton partition read as before.
    return {k: v for k, v in asdict(p).items() if v is not None or k == "partition_id"}
