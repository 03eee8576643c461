"""
The in-memory index: blob id → pack and position (``docs/format.md`` § Index files).

Entries are packed into 18-byte structs so that a blob costs about 150 bytes of
memory (id key, value, dict slot), not the ~300 of a tuple of ints.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from safehold.repo.crypto import DecryptError, content_hash, open_envelope, seal_envelope
from safehold.repo.errors import IntegrityError
from safehold.repo.pack import BlobEntry, PackInfo
from safehold.storage import Storage

__all__ = ["BlobLocation", "Index", "PackRef"]

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
    """Maps blob ids to their pack; safe for concurrent readers and one adder at a time."""

    def __init__(self) -> None:
        self._blobs: dict[bytes, bytes] = {}
        self._packs: list[PackRef] = []
        self._pack_no: dict[str, int] = {}
        self._lock = threading.Lock()
        self.files: list[str] = []

    def __len__(self) -> int:
        return len(self._blobs)

    def has(self, blob_id: bytes) -> bool:
        """Whether the blob is stored in an indexed pack."""
        return blob_id in self._blobs

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        """Return where the blob is, or None."""
        raw = self._blobs.get(blob_id)
        if raw is None:
            return None
        pack_no, typ, off, length, raw_len, comp = _ENTRY.unpack(raw)
        return BlobLocation(
            self._packs[pack_no], BlobEntry(blob_id, typ, off, length, raw_len, comp)
        )

    def add_pack(self, info: PackInfo) -> None:
        """Make a stored pack's blobs known."""
        with self._lock:
            no = self._pack_no.get(info.id)
            if no is None:
                no = len(self._packs)
                self._packs.append(PackRef(info.id, info.gen, info.eph, info.size))
                self._pack_no[info.id] = no
            for e in info.blobs:
                self._blobs[e.id] = _ENTRY.pack(
                    no, e.type, e.offset, e.length, e.raw_length, e.compression
                )

    def pack(self, pack_id: str) -> PackRef | None:
        """The pack with this id, if indexed."""
        no = self._pack_no.get(pack_id)
        return None if no is None else self._packs[no]

    def packs(self) -> list[PackRef]:
        """Every known pack."""
        return list(self._packs)

    def blobs_by_pack(self) -> dict[str, list[BlobEntry]]:
        """Group the indexed blobs by pack id (only the copy the index points at)."""
        out: dict[str, list[BlobEntry]] = {p.id: [] for p in self._packs}
        for blob_id, raw in self._blobs.items():
            no, typ, off, length, raw_len, comp = _ENTRY.unpack(raw)
            out[self._packs[no].id].append(BlobEntry(blob_id, typ, off, length, raw_len, comp))
        return out

    def ids(self) -> Iterator[bytes]:
        """Every indexed blob id."""
        return iter(list(self._blobs))

    # -- storage ----------------------------------------------------------------

    def load(self, storage: Storage, index_key: bytes, workers: int = 4) -> None:
        """
        Read every index file.

        Raises:
            IntegrityError: an index file is damaged; the message names it.
        """
        names = [i.name for i in storage.list("index/")]
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for name, packs in zip(
                names,
                pool.map(lambda n: read_index_file(storage, n, index_key), names),
                strict=True,
            ):
                for p in packs:
                    self.add_pack(p)
                self.files.append(name)


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
