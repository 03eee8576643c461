"""
The index: blob id → pack and position (``docs/format.md`` § Index files, § Local
index cache).

An ``Index`` is a stack of on-disk ``IndexTable``s (large repositories; none for
small ones) plus what is held in memory: index files of a small repository, and
packs this process stored. In memory, entries are packed into 18-byte structs so that a blob costs
about 150 bytes (id key, value, dict slot), not the ~300 of a tuple of ints.
Loading and refreshing are in ``index_load``.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from safehold.repo.crypto import DecryptError, content_hash, open_envelope, seal_envelope
from safehold.repo.errors import IntegrityError
from safehold.repo.index_table import BLOB, PACK, IndexTable
from safehold.repo.pack import BlobEntry, PackInfo
from safehold.storage import Storage

__all__ = ["FILE_MAX_BLOBS", "BlobLocation", "Index", "PackRef", "write_index_files"]

# A complete index (prune, repair) is written in files of about this many blobs,
# so that no single file, and no single read or write of one, grows with the
# repository (restic's limit is the same).
FILE_MAX_BLOBS = 50_000

_ENTRY = struct.Struct("<IBIIIB")


@dataclass(frozen=True)
class PackRef:
    """A pack as the index knows it."""

    id: str
    gen: int
    eph: bytes
    size: int


@dataclass(frozen=True)
class BlobLocation:
    """Where to read a blob."""

    pack: PackRef
    entry: BlobEntry


class Index:
    """
    Maps blob ids to their pack; safe for concurrent readers and one adder at a time.

    Attributes:
        files: the index files held in memory (the tables hold the others).
        damaged: one message per index file that could not be read and was skipped.
        tables: the on-disk tables, oldest (largest) first; empty while everything
            is in memory. A blob may be in several; lookups take the first.
    """

    def __init__(self, tables: Sequence[IndexTable] = ()) -> None:
        self._blobs: dict[bytes, bytes] = {}
        self._packs: list[PackRef] = []
        self._pack_no: dict[str, int] = {}
        self._lock = threading.Lock()
        self._unfiled: set[str] = set()
        self._table_packs: dict[int, PackRef] = {}
        self._by_id: dict[str, PackRef] | None = None
        self.files: list[str] = []
        self.damaged: list[str] = []
        self.tables = list(tables)

    def __len__(self) -> int:
        """Blob records held (a blob in several tables counts in each)."""
        return len(self._blobs) + sum(t.blobs for t in self.tables)

    @property
    def memory_blobs(self) -> int:
        """How many blobs are held in memory (not in the table)."""
        return len(self._blobs)

    @property
    def unfiled(self) -> bool:
        """Whether packs were added that no index file in the repository names yet."""
        return bool(self._unfiled)

    def has(self, blob_id: bytes) -> bool:
        """Whether the blob is stored in an indexed pack."""
        if blob_id in self._blobs:
            return True
        return any(t.find(blob_id) is not None for t in self.tables)

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        """Return where the blob is, or None."""
        raw = self._blobs.get(blob_id)
        if raw is not None:
            pack_no, typ, off, length, raw_len, comp = _ENTRY.unpack(raw)
            return BlobLocation(
                self._packs[pack_no], BlobEntry(blob_id, typ, off, length, raw_len, comp)
            )
        for table in self.tables:
            rec = table.find(blob_id)
            if rec is not None:
                _, no, typ, off, length, raw_len, comp = BLOB.unpack(rec)
                return BlobLocation(
                    self._table_pack(table, no), BlobEntry(blob_id, typ, off, length, raw_len, comp)
                )
        return None

    def _table_pack(self, table: IndexTable, no: int) -> PackRef:
        # Pack numbers run on across the stack's tables: one number, one pack.
        ref = self._table_packs.get(no)
        if ref is None:
            pid, gen, eph, size = PACK.unpack(table.pack_record(no))
            ref = PackRef(pid.hex(), gen, eph, size)
            if len(self._table_packs) > 65536:  # bounded: restore reads pack by pack
                self._table_packs.clear()
            self._table_packs[no] = ref
        return ref

    def add_pack(self, info: PackInfo, *, filed: bool = False) -> None:
        """
        Make a stored pack's blobs known.

        A writer adds its packs as they are stored, before an index file names
        them (*filed* False), then calls ``filed``; loading passes ``filed=True``.
        """
        with self._lock:
            no = self._pack_no.get(info.id)
            if no is None:
                no = len(self._packs)
                ref = PackRef(info.id, info.gen, info.eph, info.size)
                self._packs.append(ref)
                self._pack_no[info.id] = no
                if self._by_id is not None:
                    self._by_id[info.id] = ref
            if not filed:
                self._unfiled.add(info.id)
            for e in info.blobs:
                self._blobs[e.id] = _ENTRY.pack(
                    no, e.type, e.offset, e.length, e.raw_length, e.compression
                )

    def filed(self, name: str, pack_ids: Iterable[str]) -> None:
        """Record that index file *name* is stored and names these packs."""
        ids = list(pack_ids)
        with self._lock:
            self._unfiled.difference_update(ids)
            # If a refresh replaced this index since the packs were added, the
            # file is not held here: the next refresh reads it.
            if all(p in self._pack_no for p in ids):
                self.files.append(name)

    def memory_packs(self) -> Iterator[PackInfo]:
        """The packs held in memory that an index file names, with their blobs."""
        with self._lock:
            items = list(self._blobs.items())
            packs = [None if p.id in self._unfiled else p for p in self._packs]
        blobs: list[list[BlobEntry]] = [[] for _ in packs]
        for blob_id, raw in items:
            no, typ, off, length, raw_len, comp = _ENTRY.unpack(raw)
            blobs[no].append(BlobEntry(blob_id, typ, off, length, raw_len, comp))
        for p, entries in zip(packs, blobs, strict=True):
            if p is not None:
                yield PackInfo(p.id, p.gen, p.eph, p.size, tuple(entries))

    def file_names(self) -> set[str]:
        """Every index file this index holds, in memory or in its tables."""
        names = set(self.files)
        for t in self.tables:
            names.update(f"index/{h.hex()}" for h in t.file_hashes())
        return names

    def pack(self, pack_id: str) -> PackRef | None:
        """The pack with this id, if indexed."""
        no = self._pack_no.get(pack_id)
        if no is not None:
            return self._packs[no]
        if not self.tables:
            return None
        if self._by_id is None:  # prune and check only: they hold every pack anyway
            self._by_id = {p.id: p for p in self.packs()}
        return self._by_id.get(pack_id)

    def packs(self) -> list[PackRef]:
        """Every known pack."""
        out = list(self._packs)
        seen = set(self._pack_no)
        for t in self.tables:
            for rec in t.pack_records():
                pid = rec[:32].hex()
                if pid not in seen:
                    seen.add(pid)
                    _, gen, eph, size = PACK.unpack(rec)
                    out.append(PackRef(pid, gen, eph, size))
        return out

    def blobs_by_pack(self) -> dict[str, list[BlobEntry]]:
        """Group the indexed blobs by pack id (only the copy the index points at)."""
        out: dict[str, list[BlobEntry]] = {p.id: [] for p in self.packs()}
        for blob_id, raw in list(self._blobs.items()):
            no, typ, off, length, raw_len, comp = _ENTRY.unpack(raw)
            out[self._packs[no].id].append(BlobEntry(blob_id, typ, off, length, raw_len, comp))
        for j, t in enumerate(self.tables):
            ids = [rec[:32].hex() for rec in t.pack_records()]
            for rec in self._table_records(j):
                blob_id, no, typ, off, length, raw_len, comp = rec
                entry = BlobEntry(blob_id, typ, off, length, raw_len, comp)
                out[ids[no - t.first_pack]].append(entry)
        return out

    def _table_records(self, j: int) -> Iterator[tuple[bytes, int, int, int, int, int, int]]:
        """The records of table *j* that a lookup finds there (not in memory or before it)."""
        before = self.tables[:j]
        for chunk in self.tables[j].blob_chunks():
            for rec in BLOB.iter_unpack(chunk):
                blob_id = rec[0]
                if blob_id in self._blobs or any(t.find(blob_id) is not None for t in before):
                    continue
                yield rec

    def ids(self) -> Iterator[bytes]:
        """Every indexed blob id, once."""
        yield from list(self._blobs)
        for j in range(len(self.tables)):
            for rec in self._table_records(j):
                yield rec[0]

    def close(self) -> None:
        """Release the tables' files (the index must not be used afterwards)."""
        for t in self.tables:
            t.close()


def read_index_file(storage: Storage, name: str, index_key: bytes) -> list[PackInfo]:
    """Read and verify one index file."""
    blob = storage.get(name)
    if content_hash(blob) != name.rsplit("/", 1)[1]:
        raise IntegrityError(f"index file {name} is damaged: its content does not match its name")
    try:
        doc = json.loads(open_envelope(blob, key=index_key))
        return [
            PackInfo(
                p["id"],
                int(p["gen"]),
                bytes.fromhex(p["eph"]),
                int(p["size"]),
                tuple(BlobEntry.from_json(r) for r in p["blobs"]),
            )
            for p in doc["packs"]
        ]
    except (DecryptError, KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"index file {name} is damaged: {exc}") from exc


def write_index_file(
    storage: Storage, index_key: bytes, packs: Iterable[PackInfo], supersedes: Iterable[str] = ()
) -> str:
    """Store an index file for *packs*; return its name."""
    doc = {
        "packs": [
            {
                "id": p.id,
                "gen": p.gen,
                "eph": p.eph.hex(),
                "size": p.size,
                "blobs": [b.to_json() for b in p.blobs],
            }
            for p in packs
        ],
        "supersedes": list(supersedes),
    }
    blob = seal_envelope(json.dumps(doc, separators=(",", ":")).encode(), key=index_key)
    name = f"index/{content_hash(blob)}"
    storage.put(name, blob)
    return name


def write_index_files(
    storage: Storage,
    index_key: bytes,
    packs: Iterable[PackInfo],
    supersedes: Iterable[str] = (),
    *,
    max_blobs: int | None = None,
) -> list[str]:
    """
    Store *packs* as index files of at most *max_blobs* (``FILE_MAX_BLOBS``) blobs each (a pack is
    never split; one with more blobs gets a file of its own); return their names.

    Every file names all of *supersedes*. Readers take the union of all index
    files, so until the caller deletes the superseded ones, a crash between two
    of these files loses nothing.
    """
    old = list(supersedes)
    limit = max_blobs or FILE_MAX_BLOBS
    names: list[str] = []
    batch: list[PackInfo] = []
    count = 0
    for p in packs:
        if batch and count + len(p.blobs) > limit:
            names.append(write_index_file(storage, index_key, batch, old))
            batch, count = [], 0
        batch.append(p)
        count += len(p.blobs)
    if batch or not names:
        names.append(write_index_file(storage, index_key, batch, old))
    return names
