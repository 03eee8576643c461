"""
Packs: many encrypted blobs in one immutable file (``docs/format.md`` § Packs).

``PackBuilder`` assembles one pack in memory; ``parse_header`` reads a pack's
trailing header back, for ``check`` and index repair.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold.repo.compress import compress, decompress
from safehold.repo.crypto import (
    NONCE_SIZE,
    TAG_SIZE,
    DecryptError,
    Generation,
    content_hash,
    decrypt,
    encrypt,
    seal_key,
)

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
    """
    Collects encrypted blobs for one pack; not thread-safe (one owner at a time).

    The pack is assembled in an anonymous memory map that the caller lends
    (and gets back from ``release``, to reuse): pages are resident only once
    written, blobs are encrypted straight into place, and no allocator keeps
    freed buffers from the system.
    """

    def __init__(self, gen: Generation, buffer: mmap.mmap) -> None:
        self.key, self.eph = seal_key(gen)
        self.gen = gen.gen
        self._aead = AESGCM(self.key)
        self._mm = buffer
        self._pos = 0
        self._write(_PREFIX.pack(PACK_MAGIC, PACK_VERSION, gen.gen, self.eph))
        self._entries: list[BlobEntry] = []

    @property
    def size(self) -> int:
        """Bytes so far."""
        return self._pos

    @property
    def count(self) -> int:
        """Blobs so far."""
        return len(self._entries)

    def _reserve(self, n: int) -> None:
        if self._pos + n > len(self._mm):
            # Only an oversized blob (a huge directory's tree) gets here.
            bigger = mmap.mmap(-1, max(2 * len(self._mm), self._pos + n))
            bigger[: self._pos] = self._mm[: self._pos]
            self._mm.close()
            self._mm = bigger

    def _write(self, data: bytes) -> None:
        self._reserve(len(data))
        self._mm[self._pos : self._pos + len(data)] = data
        self._pos += len(data)

    def add(
        self,
        blob_id: bytes,
        blob_type: int,
        stored: bytes | memoryview,
        raw_length: int,
        compression: int,
    ) -> int:
        """Encrypt and append one blob; return its stored length."""
        n = NONCE_SIZE + len(stored) + TAG_SIZE
        self._reserve(n)
        nonce = os.urandom(NONCE_SIZE)
        self._mm[self._pos : self._pos + NONCE_SIZE] = nonce
        with memoryview(self._mm) as view:
            out = view[self._pos + NONCE_SIZE : self._pos + n]
            self._aead.encrypt_into(nonce, stored, blob_aad(blob_type, blob_id), out)
            out.release()
        self._entries.append(BlobEntry(blob_id, blob_type, self._pos, n, raw_length, compression))
        self._pos += n
        return n

    def finish(self) -> tuple[PackInfo, memoryview]:
        """
        Append the header; return the pack's info and a view of its bytes.

        The view stays valid until ``release``.
        """
        header = json.dumps({"blobs": [e.to_json() for e in self._entries]}).encode()
        hdr = encrypt(self.key, compress(header), aad=_HEADER_AAD)
        self._write(hdr)
        self._write(_LEN.pack(len(hdr)))
        view = memoryview(self._mm)[: self._pos]
        info = PackInfo(content_hash(view), self.gen, self.eph, self._pos, tuple(self._entries))
        return info, view

    def release(self) -> mmap.mmap:
        """Hand back the buffer, for another pack; views from ``finish`` must be released first."""
        mm, self._mm = self._mm, mmap.mmap(-1, 1)
        return mm


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
