"""
Building a local index table from records in any order, in bounded memory; and
merging neighbouring tables of a stack into one.

Records are spilled into 256 files by the first byte of the blob id (a file past
``sort_max`` records is split again by the next byte), and each file is sorted in
memory and appended to the table in order. Memory: the spill buffers
(``SPILL_BYTES``) plus one sorted file (about 90 bytes a record, at most
``sort_max`` records).

A merge streams the tables' records, which are sorted already: the oldest
(largest) table is copied in runs of whole records between the records of the
others, which are merged one by one. Memory: a few chunks of 64 Ki records.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from safehold.repo.index_table import BLOB, PACK, IndexTable, TableWriter
from safehold.repo.pack import PackInfo

__all__ = ["SORT_MAX", "TableBuilder", "merge_tables"]

SPILL_BYTES = 8 << 20
SORT_MAX = 1_000_000


class TableBuilder:
    """Collect packs and blobs, then ``write`` a table; always ``close`` (or use ``with``)."""

    def __init__(self, directory: Path, *, sort_max: int = SORT_MAX, first_pack: int = 0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="build-", dir=directory))
        self._buckets = [bytearray() for _ in range(256)]
        self._buffered = 0
        self._packs: BinaryIO = open(self._dir / "packs", "w+b")  # noqa: SIM115 - closed in close
        self._sort_max = sort_max
        self.first_pack = first_pack
        self.packs = 0
        self.records = 0
        self.files: list[bytes] = []

    def __enter__(self) -> TableBuilder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the spill files."""
        self._packs.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def add_file(self, name: str) -> None:
        """Record that the table holds index file *name* (``index/<hash>``) whole."""
        self.files.append(bytes.fromhex(name.rsplit("/", 1)[1]))

    def add_pack(self, info: PackInfo) -> None:
        """Add a pack and its blobs."""
        no = self.first_pack + self.packs
        self.add_pack_records(PACK.pack(bytes.fromhex(info.id), info.gen, info.eph, info.size))
        buckets = self._buckets
        for e in info.blobs:
            buckets[e.id[0]] += BLOB.pack(
                e.id, no, e.type, e.offset, e.length, e.raw_length, e.compression
            )
        self._grew(len(info.blobs))

    def add_pack_records(self, records: bytes) -> None:
        """Add pack records; they are numbered on from ``first_pack + packs``."""
        self._packs.write(records)
        self.packs += len(records) // PACK.size

    def add_blob_records(self, records: bytes) -> None:
        """Add blob records whose pack numbers are already those of this builder."""
        buckets = self._buckets
        size = BLOB.size
        for i in range(0, len(records), size):
            buckets[records[i]] += records[i : i + size]
        self._grew(len(records) // size)

    def _grew(self, n: int) -> None:
        self.records += n
        self._buffered += n * BLOB.size
        if self._buffered >= SPILL_BYTES:
            self._spill()

    def _spill(self) -> None:
        for b, buf in enumerate(self._buckets):
            if buf:
                with open(self._dir / f"{b:02x}", "ab") as f:
                    f.write(buf)
                buf.clear()
        self._buffered = 0

    def write(self, path: Path, key: bytes, repo_id: str) -> None:
        """Sort everything and write the table at *path* (renamed into place)."""
        self._spill()
        writer = TableWriter(path, key, repo_id, self.records, self.first_pack)
        try:
            for b in range(256):
                self._emit(self._dir / f"{b:02x}", 1, writer)
            self._packs.seek(0)
            while chunk := self._packs.read(PACK.size * 65536):
                writer.add_packs(chunk)
            writer.finish(self.files)
        except BaseException:
            writer.abort()
            raise

    def _emit(self, path: Path, depth: int, writer: TableWriter) -> None:
        if not path.exists():
            return
        size = BLOB.size
        if path.stat().st_size // size > self._sort_max and depth < 32:
            for part in self._split(path, depth):
                self._emit(part, depth + 1, writer)
            return
        data = path.read_bytes()
        path.unlink()
        records = sorted(data[i : i + size] for i in range(0, len(data), size))
        del data
        out = bytearray()
        last = b""
        for r in records:
            blob_id = r[:32]
            if blob_id != last:  # the same blob in several packs: any copy will do
                out += r
                last = blob_id
        del records
        writer.add_blobs(out)

    def _split(self, path: Path, depth: int) -> list[Path]:
        """Split a spill file by the id's byte at *depth*; return the parts in order."""
        size = BLOB.size
        parts = [bytearray() for _ in range(256)]

        def flush() -> None:
            for b, buf in enumerate(parts):
                if buf:
                    with open(path.with_name(f"{path.name}{b:02x}"), "ab") as f:
                        f.write(buf)
                    buf.clear()

        with open(path, "rb") as f:
            while chunk := f.read(size * 65536):
                for i in range(0, len(chunk), size):
                    parts[chunk[i + depth]] += chunk[i : i + size]
                flush()
        path.unlink()
        parts_made = (path.with_name(f"{path.name}{b:02x}") for b in range(256))
        return [p for p in parts_made if p.exists()]


def _record_lists(table: IndexTable) -> Iterator[list[bytes]]:
    size = BLOB.size
    for chunk in table.blob_chunks():
        yield [chunk[i : i + size] for i in range(0, len(chunk), size)]


def _unique_lists(tables: list[IndexTable]) -> Iterator[list[bytes]]:
    """The records of several tables in id order, each id once, in lists."""
    out: list[bytes] = []
    last = b""
    for r in heapq.merge(*map(_flat, tables)):
        if r[:32] != last:  # the same blob in two tables: one copy will do
            last = r[:32]
            out.append(r)
            if len(out) >= 65536:
                yield out
                out = []
    if out:
        yield out


def _flat(table: IndexTable) -> Iterator[bytes]:
    for records in _record_lists(table):
        yield from records


def merge_tables(tables: list[IndexTable], path: Path, key: bytes, repo_id: str) -> None:
    """
    Write at *path* one table holding everything *tables* (neighbours in a stack,
    oldest first) hold: their packs in order, keeping their numbers; each blob
    once; the union of their index files.
    """
    first = tables[0]
    for a, b in itertools.pairwise(tables):
        if b.first_pack != a.first_pack + a.packs:
            raise ValueError("only neighbouring tables of one stack can be merged")
    total = sum(t.blobs for t in tables)
    writer = TableWriter(path, key, repo_id, total, first.first_pack)
    try:
        rest = tables[1:]
        # One table's records are unique already; several are merged first.
        small = _record_lists(rest[0]) if len(rest) == 1 else _unique_lists(rest)
        _merge_blobs(first, small, writer)
        for t in tables:
            for chunk in t.pack_chunks():
                writer.add_packs(chunk)
        files = sorted({h for t in tables for h in t.file_hashes()})
        writer.finish(files)
    except BaseException:
        writer.abort()
        raise


def _merge_blobs(big: IndexTable, small: Iterator[list[bytes]], writer: TableWriter) -> None:
    """
    Write *big*'s records and *small*'s (sorted, unique, in lists) in order, each
    id once (*big*'s copy). Each chunk of *big* is merged with the records of
    *small* up to its last id by one sort of two sorted runs (a linear merge in C).
    """
    size = BLOB.size
    pending: list[bytes] = []
    at = 0
    for chunk in big.blob_chunks():
        bound = chunk[len(chunk) - size : len(chunk) - size + 32] + b"\xff" * (size - 32)
        mine: list[bytes] = []
        while True:
            if at >= len(pending):
                pending, at = next(small, []), 0
                if not pending:
                    break
            end = bisect.bisect_right(pending, bound, at)
            mine += pending[at:end]
            at = end
            if end < len(pending):
                break
        if not mine:
            writer.add_blobs(chunk)
            continue
        records = [chunk[i : i + size] for i in range(0, len(chunk), size)]
        for r in mine:  # a blob both hold: keep one (rare: a pack stored twice)
            i = bisect.bisect_left(records, r[:32])
            if i < len(records) and records[i][:32] == r[:32]:
                mine = _without_ids(mine, records)
                break
        writer.add_blobs(b"".join(sorted(records + mine)))
    writer.add_blobs(b"".join(pending[at:]))
    for rest in small:
        writer.add_blobs(b"".join(rest))


def _without_ids(mine: list[bytes], records: list[bytes]) -> list[bytes]:
    ids = {r[:32] for r in records}
    return [r for r in mine if r[:32] not in ids]
