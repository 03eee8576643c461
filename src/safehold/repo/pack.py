"""
Packs: many encrypted blobs in one immutable file (``docs/format.md`` § Packs).

``PackBuilder`` assembles one pack in memory; ``parse_header`` reads a pack's
trailing header back, for ``check`` and index repair.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from safehold.repo.compress import compress, decompress
from safehold.repo.crypto import DecryptError, Generation, content_hash, decrypt, encrypt, seal_key

__all__ = ["DATA", "TREE", "BlobEntry", "PackBuilder", "PackInfo", "parse_header"]

DATA = 0
TREE = 1
PACK_MAGIC = b"SHPK"
PACK_VERSION = 1
_PREFIX = struct.Struct("<4sBI32s")
PREFIX_SIZE = _PREFIX.size
_HEADER_AAD = b"safehold pack header v1"
_LEN = struct.Struct("<I")


@dataclass(frozen=True)
class BlobEntry:
    """Where one blob sits in its pack."""

    id: bytes
    type: int
    offset: int
    length: int
    raw_length: int
    compression: int

    def to_json(self) -> list[Any]:
        """The compact list form used in headers and index files."""
        return [
            self.id.hex(),
            self.type,
            self.offset,
            self.length,
            self.raw_length,
            self.compression,
        ]

    @classmethod
    def from_json(cls, row: list[Any]) -> BlobEntry:
        """Parse the compact list form; ``ValueError``/``TypeError`` if malformed."""
        blob_id, typ, off, length, raw, comp = row
        return cls(
            bytes.fromhex(str(blob_id)), int(typ), int(off), int(length), int(raw), int(comp)
        )


@dataclass(frozen=True)
class PackInfo:
    """A stored pack: its name, key material and blobs."""

    id: str
    gen: int
    eph: bytes
    size: int
    blobs: tuple[BlobEntry, ...]

    @property
    def name(self) -> str:
        """The pack's object name in the storage."""
        return pack_name(self.id)


def pack_name(pack_id: str) -> str:
    """Return the storage name of a pack."""
    return f"data/{pack_id[:2]}/{pack_id}"


def blob_aad(blob_type: int, blob_id: bytes) -> bytes:
    """Bind a blob's type and id into its authentication tag."""
    return bytes([blob_type]) + blob_id


class PackBuilder:
    """Collects encrypted blobs for one pack; not thread-safe (one owner at a time)."""

    def __init__(self, gen: Generation) -> None:
        self.key, self.eph = seal_key(gen)
        self.gen = gen.gen
        self._buf = bytearray(_PREFIX.pack(PACK_MAGIC, PACK_VERSION, gen.gen, self.eph))
        self._entries: list[BlobEntry] = []

    @property
    def size(self) -> int:
        """Bytes so far."""
        return len(self._buf)

    @property
    def count(self) -> int:
        """Blobs so far."""
        return len(self._entries)

    def add(
        self,
        blob_id: bytes,
        blob_type: int,
        stored: bytes | memoryview,
        raw_length: int,
        compression: int,
    ) -> int:
        """Encrypt and append one blob; return its stored length."""
        ct = encrypt(self.key, stored, aad=blob_aad(blob_type, blob_id))
        self._entries.append(
            BlobEntry(blob_id, blob_type, len(self._buf), len(ct), raw_length, compression)
        )
        self._buf += ct
        return len(ct)

    def finish(self) -> tuple[PackInfo, bytes]:
        """Append the header and return the pack's info and bytes; the builder is spent."""
        header = json.dumps({"blobs": [e.to_json() for e in self._entries]}).encode()
        hdr = encrypt(self.key, compress(header), aad=_HEADER_AAD)
        self._buf += hdr
        self._buf += _LEN.pack(len(hdr))
        data = bytes(self._buf)
        self._buf = bytearray()
        return PackInfo(
            content_hash(data), self.gen, self.eph, len(data), tuple(self._entries)
        ), data


def parse_prefix(data: bytes) -> tuple[int, bytes]:
    """Return ``(gen, ephemeral public key)`` from a pack's first bytes."""
    if len(data) < PREFIX_SIZE:
        raise DecryptError("pack too short")
    magic, version, gen, eph = _PREFIX.unpack_from(data)
    if magic != PACK_MAGIC or version != PACK_VERSION:
        raise DecryptError("not a pack: bad magic or version")
    return gen, eph


def header_length(tail: bytes) -> int:
    """Return the header length from a pack's last 4 bytes."""
    return int(_LEN.unpack(tail[-4:])[0])


def parse_header(key: bytes, header: bytes) -> list[BlobEntry]:
    """Decrypt a pack header; ``DecryptError`` if it is damaged."""
    doc = json.loads(decompress(decrypt(key, header, aad=_HEADER_AAD)))
    try:
        return [BlobEntry.from_json(row) for row in doc["blobs"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise DecryptError("malformed pack header") from exc
