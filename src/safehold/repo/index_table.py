"""
The local index tables: sorted, keyed-MAC'd files of blob records, and the
manifest that says which tables make up a repository's index (``docs/format.md``
§ Local index cache).

``TableWriter`` writes one from records that arrive sorted; ``IndexTable`` reads
it with ``pread`` (no map), so looking blobs up costs the process no memory that
grows with the table. Every 4 KiB block is checked against its MAC the first
time this process reads it. Tables form a stack whose pack numbers run on from
one table to the next, so that merging neighbours never renumbers a record.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import os
import secrets
import struct
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import blake3

from safehold.repo.errors import IntegrityError

__all__ = [
    "BLOB",
    "PACK",
    "IndexTable",
    "TableDamaged",
    "TableWriter",
    "cache_key",
    "fanout_bits",
    "read_manifest",
    "table_file",
    "write_manifest",
]

MAGIC = b"SHIXTBL\x00"
VERSION = 2
MANIFEST_MAGIC = b"SHIXLST\x00"
BLOCK = 4096
DATA_START = 4096
MAC_LEN = 16

# id | pack number | type | offset | length | raw length | compression
BLOB = struct.Struct("<32sIBIIIB")
# id | generation | ephemeral public key | size
PACK = struct.Struct("<32sI32sQ")
_U64 = struct.Struct("<Q")
_HEADER = struct.Struct("<8sII16sII4Q5QQ")
# magic | version | tables | repository id; then per table: name | header MAC
_MANIFEST_HEAD = struct.Struct("<8sII16s")
_MANIFEST_ENTRY = struct.Struct("<16s32s")
_FANOUT_PAIR = struct.Struct("<QQ")


class TableDamaged(IntegrityError):
    """The local table does not verify; it is a cache, so it is rebuilt."""


def cache_key(index_key: bytes, repo_id: str) -> bytes:
    """The MAC key of a repository's local cache files."""
    data = b"safehold index cache v1" + repo_id.encode()
    return blake3.blake3(data, key=index_key).digest()


def fanout_bits(blobs: int) -> int:
    """Bits of fanout for about 8 blobs a bucket, between 8 and 24."""
    return max(8, min(24, (max(blobs, 1) // 8).bit_length()))


def _block_mac(key: bytes, no: int, data: bytes | bytearray | memoryview) -> bytes:
    h = blake3.blake3(key=key, max_threads=1)
    h.update(_U64.pack(no))
    h.update(data)
    return h.digest(length=MAC_LEN)


def _header_mac(key: bytes, fields: bytes, macs: bytes | bytearray) -> bytes:
    h = blake3.blake3(key=key, max_threads=1)
    h.update(fields)
    h.update(blake3.blake3(macs).digest())
    return h.digest()


class TableWriter:
    """
    Write a table at *path*: ``add_blobs`` (sorted, unique, in order), then
    ``add_packs`` (records in pack-number order), then ``finish``.

    The file is written under a temporary name and renamed into place by
    ``finish``, so a reader sees a whole table or none.
    """

    def __init__(
        self, path: Path, key: bytes, repo_id: str, expected_blobs: int, first_pack: int = 0
    ) -> None:
        self._path = path
        self._first_pack = first_pack
        self._tmp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(6)}")
        self._key = key
        self._repo_id = bytes.fromhex(repo_id)
        self._bits = fanout_bits(expected_blobs)
        self._shift = 256 - self._bits
        self._f: BinaryIO = open(self._tmp, "wb")  # noqa: SIM115 - closed in finish/abort
        self._fanout: BinaryIO = open(self._tmp.with_suffix(".fanout"), "w+b")  # noqa: SIM115
        self._f.seek(DATA_START)
        self._buf = bytearray()
        self._macs = bytearray()
        self._pos = DATA_START
        self._blobs = 0
        self._packs = 0
        self._next_prefix = 0
        self._last = b""
        self._blobs_off = DATA_START
        self._packs_off = -1

    def add_blobs(self, records: bytes | bytearray | memoryview) -> None:
        """Append blob records (50 bytes each), sorted by id and after every earlier one."""
        data = records if isinstance(records, bytes) else bytes(records)
        size = BLOB.size
        if not data:
            return
        if data[:32] <= self._last:
            raise ValueError("blob records must arrive sorted and unique")
        self._last = data[len(data) - size : len(data) - size + 32]
        # The fanout is found by bisecting columns of the ids' first three bytes
        # once per entry (about one entry per 8 blobs), without a step per
        # record: merges copy whole tables through here.
        count = len(data) // size
        c0, c1, c2 = (data[b::size] for b in range(3))
        drop = 24 - self._bits
        last = ((c0[-1] << 16) | (c1[-1] << 8) | c2[-1]) >> drop
        n = self._blobs
        fan = array.array("Q", [0]) * max(0, last + 1 - self._next_prefix)
        cur0 = cur1 = -1
        lo0 = hi0 = lo1 = hi1 = 0
        for j, p in enumerate(range(self._next_prefix, last + 1)):
            v = p << drop
            x, y = v >> 16, (v >> 8) & 255
            if x != cur0:
                cur0, cur1 = x, -1
                lo0 = bisect.bisect_left(c0, x)
                hi0 = bisect.bisect_right(c0, x, lo0)
                lo1 = lo0
            if drop < 16 and y != cur1:
                cur1 = y
                lo1 = bisect.bisect_left(c1, y, lo0, hi0)
                hi1 = bisect.bisect_right(c1, y, lo1, hi0)
            fan[j] = n + (bisect.bisect_left(c2, v & 255, lo1, hi1) if drop < 8 else lo1)
        if sys.byteorder != "little":
            fan.byteswap()
        self._fanout.write(fan.tobytes())
        self._next_prefix = max(self._next_prefix, last + 1)
        self._blobs = n + count
        self._write(data)

    def add_packs(self, records: bytes | bytearray | memoryview) -> None:
        """Append pack records (76 bytes each) in pack-number order."""
        if self._packs_off < 0:
            self._end_blobs()
        self._write(records)
        self._packs += len(records) // PACK.size

    def _end_blobs(self) -> None:
        remaining = (1 << self._bits) + 1 - self._next_prefix
        while remaining > 0:
            n = min(remaining, 1 << 17)
            self._fanout.write(_U64.pack(self._blobs) * n)
            remaining -= n
        self._fanout_off = self._pos + len(self._buf)
        self._fanout.seek(0)
        while chunk := self._fanout.read(1 << 20):
            self._write(chunk)
        self._fanout.close()
        os.unlink(self._fanout.name)
        self._packs_off = self._pos + len(self._buf)

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        buf = self._buf
        buf += data
        if len(buf) < BLOCK:
            return
        whole = len(buf) - len(buf) % BLOCK
        view = memoryview(buf)
        for off in range(0, whole, BLOCK):
            self._macs += _block_mac(self._key, len(self._macs) // MAC_LEN, view[off : off + BLOCK])
        self._f.write(view[:whole])
        view.release()
        del buf[:whole]
        self._pos += whole

    def finish(self, files: list[bytes]) -> Path:
        """Write the file list, MACs and header; rename the table into place."""
        if self._packs_off < 0:
            self._end_blobs()
        files_off = self._pos + len(self._buf)
        for name in sorted(files):
            self._write(name)
        if self._buf:
            self._macs += _block_mac(self._key, len(self._macs) // MAC_LEN, self._buf)
            self._f.write(self._buf)
            self._pos += len(self._buf)
            self._buf.clear()
        macs_off = self._pos
        self._f.write(self._macs)
        fields = _HEADER.pack(
            MAGIC,
            VERSION,
            BLOCK,
            self._repo_id,
            self._bits,
            0,
            self._blobs,
            self._packs,
            len(files),
            len(self._macs) // MAC_LEN,
            self._blobs_off,
            self._fanout_off,
            self._packs_off,
            files_off,
            macs_off,
            self._first_pack,
        )
        self._f.seek(0)
        self._f.write(fields + _header_mac(self._key, fields, self._macs))
        self._f.close()
        os.chmod(self._tmp, 0o600)
        os.replace(self._tmp, self._path)
        return self._path

    def abort(self) -> None:
        """Drop the unfinished table."""
        for f in (self._f, self._fanout):
            f.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f.name)


class IndexTable:
    """
    A verified, read-only table. Thread-safe; ``close`` when done.

    Raises ``TableDamaged`` on open if the header or MAC array does not verify,
    and from any read whose block does not.
    """

    blobs: int
    packs: int
    files: int
    blocks: int
    bits: int
    first_pack: int
    header_mac: bytes

    def __init__(self, path: Path, key: bytes, repo_id: str) -> None:
        self.path = path
        self._key = key
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        # An index replaced by a refresh may still be in use by another thread:
        # its file is closed when the last reference goes.
        self._closer = weakref.finalize(self, os.close, self._fd)
        try:
            self._open(repo_id)
        except BaseException:
            self._closer()
            raise
        # Races only verify a block twice: a flag is set after its check.
        self._verified = bytearray(self.blocks)

    def _open(self, repo_id: str) -> None:
        head = os.pread(self._fd, _HEADER.size + 32, 0)
        if len(head) != _HEADER.size + 32 or head[:8] != MAGIC:
            raise self._damaged("not an index table")
        fields = head[: _HEADER.size]
        (_, version, block, rid, bits, _, *counts) = _HEADER.unpack(fields)
        if version != VERSION or block != BLOCK:
            raise self._damaged(f"table version {version}, block size {block}")
        if rid != bytes.fromhex(repo_id):
            raise self._damaged("the table belongs to another repository")
        self.blobs, self.packs, self.files, self.blocks = counts[:4]
        self._blobs_off, self._fanout_off, self._packs_off, self._files_off, macs_off = counts[4:9]
        self.first_pack = counts[9]
        self.bits = bits
        self._shift = 256 - bits
        self._macs = os.pread(self._fd, self.blocks * MAC_LEN, macs_off)
        if len(self._macs) != self.blocks * MAC_LEN or not secrets.compare_digest(
            _header_mac(self._key, fields, self._macs), head[_HEADER.size :]
        ):
            raise self._damaged("its header does not verify")
        self.header_mac = head[_HEADER.size :]
        self._end = macs_off
        sections = [
            (self._blobs_off, self.blobs * BLOB.size, self._fanout_off),
            (self._fanout_off, ((1 << bits) + 1) * 8, self._packs_off),
            (self._packs_off, self.packs * PACK.size, self._files_off),
            (self._files_off, self.files * 32, macs_off),
        ]
        if self._blobs_off != DATA_START or any(a + n != b for a, n, b in sections):
            raise self._damaged("its sections do not add up")
        if self.blocks != -(-(macs_off - DATA_START) // BLOCK):
            raise self._damaged("its block count is wrong")

    def _damaged(self, why: str) -> TableDamaged:
        return TableDamaged(f"local index cache {self.path} is damaged ({why}); it is rebuilt")

    def _discard(self) -> None:
        """Delete the file (if it is still this table) so that the next open rebuilds it."""
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)

    def close(self) -> None:
        """Release the file."""
        self._closer()

    # -- reading ------------------------------------------------------------------

    def _read(self, off: int, length: int) -> bytes:
        """Read verified bytes from the data region."""
        if length <= 0:
            return b""
        if off < DATA_START or off + length > self._end:
            raise self._damaged("a record points outside it")
        first = (off - DATA_START) // BLOCK
        last = (off + length - 1 - DATA_START) // BLOCK
        if all(self._verified[first : last + 1]):
            data = os.pread(self._fd, length, off)
            if len(data) != length:
                self._discard()
                raise self._damaged("it is shorter than its header says")
            return data
        start = DATA_START + first * BLOCK
        span = os.pread(self._fd, (last - first + 1) * BLOCK, start)
        view = memoryview(span)
        for i in range(first, last + 1):
            if self._verified[i]:
                continue
            end = min((i - first + 1) * BLOCK, self._end - start)
            piece = view[(i - first) * BLOCK : end]
            if i >= self.blocks or not secrets.compare_digest(
                _block_mac(self._key, i, piece), self._macs[i * MAC_LEN : (i + 1) * MAC_LEN]
            ):
                self._discard()
                raise self._damaged(f"block {i} does not verify")
            self._verified[i] = 1
        return span[off - start : off - start + length]

    def find(self, blob_id: bytes) -> bytes | None:
        """The 50-byte record of *blob_id*, or None."""
        p = int.from_bytes(blob_id, "big") >> self._shift
        lo, hi = _FANOUT_PAIR.unpack(self._read(self._fanout_off + 8 * p, 16))
        if lo >= hi:
            return None
        size = BLOB.size
        recs = self._read(self._blobs_off + lo * size, (hi - lo) * size)
        a, b = 0, hi - lo
        while a < b:
            m = (a + b) // 2
            key = recs[m * size : m * size + 32]
            if key < blob_id:
                a = m + 1
            elif key > blob_id:
                b = m
            else:
                return recs[m * size : (m + 1) * size]
        return None

    def pack_record(self, no: int) -> bytes:
        """The 76-byte record of pack number *no* (numbered from ``first_pack``)."""
        i = no - self.first_pack
        if not 0 <= i < self.packs:
            raise self._damaged(f"it names pack number {no}, not one of its {self.packs}")
        return self._read(self._packs_off + i * PACK.size, PACK.size)

    def blob_chunks(self, records: int = 65536) -> Iterator[bytes]:
        """Every blob record in id order, in chunks of whole records."""
        size = BLOB.size
        for start in range(0, self.blobs, records):
            n = min(records, self.blobs - start)
            yield self._read(self._blobs_off + start * size, n * size)

    def pack_chunks(self, records: int = 65536) -> Iterator[bytes]:
        """Every pack record in number order, in chunks of whole records."""
        size = PACK.size
        for start in range(0, self.packs, records):
            n = min(records, self.packs - start)
            yield self._read(self._packs_off + start * size, n * size)

    def pack_records(self, records: int = 65536) -> Iterator[bytes]:
        """Every pack record in number order, one at a time."""
        size = PACK.size
        for start in range(0, self.packs, records):
            n = min(records, self.packs - start)
            chunk = self._read(self._packs_off + start * size, n * size)
            for i in range(0, len(chunk), size):
                yield chunk[i : i + size]

    def file_hashes(self) -> Iterator[bytes]:
        """The raw hashes of the index files the table holds, sorted."""
        for start in range(0, self.files, 65536):
            n = min(65536, self.files - start)
            chunk = self._read(self._files_off + start * 32, n * 32)
            for i in range(0, len(chunk), 32):
                yield chunk[i : i + 32]

    def fanout_bytes(self) -> bytes:
        """The whole fanout, verified (tests)."""
        return self._read(self._fanout_off, ((1 << self.bits) + 1) * 8)

    def verify_all(self) -> None:
        """Read and check every block (tests, and a damaged-table probe)."""
        for i in range(self.blocks):
            off = DATA_START + i * BLOCK
            self._read(off, min(BLOCK, self._end - off))


def table_file(name: bytes) -> str:
    """The file name of the table called *name* (16 random bytes) in a cache directory."""
    return f"index-v{VERSION}-{name.hex()}.shx"


def _manifest_mac(key: bytes, body: bytes) -> bytes:
    return blake3.blake3(body, key=key, max_threads=1).digest()


def write_manifest(path: Path, key: bytes, repo_id: str, tables: list[tuple[bytes, bytes]]) -> None:
    """
    Atomically replace the manifest at *path* with *tables*, ``(name, header MAC)``
    pairs, oldest (the base) first.
    """
    body = _MANIFEST_HEAD.pack(MANIFEST_MAGIC, VERSION, len(tables), bytes.fromhex(repo_id))
    body += b"".join(_MANIFEST_ENTRY.pack(n, m) for n, m in tables)
    tmp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(6)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(body + _manifest_mac(key, body))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_manifest(path: Path, key: bytes, repo_id: str) -> list[tuple[bytes, bytes]]:
    """
    The ``(name, header MAC)`` pairs of the manifest at *path*, oldest first.

    Raises:
        TableDamaged: it does not verify (another key, another repository, a
            flipped bit, a truncated or older-format file).
        OSError: it cannot be read.
    """
    data = path.read_bytes()
    why = ""
    if len(data) < _MANIFEST_HEAD.size + 32 or data[:8] != MANIFEST_MAGIC:
        why = "not an index manifest"
    else:
        _, version, count, rid = _MANIFEST_HEAD.unpack_from(data)
        body = data[:-32]
        if version != VERSION:
            why = f"manifest version {version}"
        elif len(body) != _MANIFEST_HEAD.size + count * _MANIFEST_ENTRY.size:
            why = "its manifest has the wrong length"
        elif not secrets.compare_digest(_manifest_mac(key, body), data[-32:]):
            why = "its manifest does not verify"
        elif rid != bytes.fromhex(repo_id):
            why = "the manifest belongs to another repository"
        else:
            return [
                (bytes(n), bytes(m))
                for n, m in _MANIFEST_ENTRY.iter_unpack(body[_MANIFEST_HEAD.size :])
            ]
    raise TableDamaged(f"local index cache {path} is damaged ({why}); it is rebuilt")
