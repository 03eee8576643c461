"""
Building a local index table from records in any order, in bounded memory.

Records are spilled into 256 files by the first byte of the blob id (a file past
``sort_max`` records is split again by the next byte), and each file is sorted in
memory and appended to the table in order. Memory: the spill buffers
(``SPILL_BYTES``) plus one sorted file (about 90 bytes a record, at most
``sort_max`` records).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from safehold.repo.index_table import BLOB, PACK, TableWriter
from safehold.repo.pack import PackInfo

__all__ = ["SORT_MAX", "TableBuilder"]

SPILL_BYTES = 8 << 20
SORT_MAX = 1_000_000


class TableBuilder:
    """Collect packs and blobs, then ``write`` a table; always ``close`` (or use ``with``)."""

    def __init__(self, directory: Path, *, sort_max: int = SORT_MAX) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="build-", dir=directory))
        self._buckets = [bytearray() for _ in range(256)]
        self._buffered = 0
        self._packs: BinaryIO = open(self._dir / "packs", "w+b")  # noqa: SIM115 - closed in close
        self._sort_max = sort_max
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
        no = self.packs
        self.add_pack_records(PACK.pack(bytes.fromhex(info.id), info.gen, info.eph, info.size))
        buckets = self._buckets
        for e in info.blobs:
            buckets[e.id[0]] += BLOB.pack(
                e.id, no, e.type, e.offset, e.length, e.raw_length, e.compression
            )
        self._grew(len(info.blobs))

    def add_pack_records(self, records: bytes) -> None:
        """Add pack records; they are numbered on from ``packs``."""
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
        writer = TableWriter(path, key, repo_id, self.records)
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
