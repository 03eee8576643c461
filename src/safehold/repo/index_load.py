"""
Loading and refreshing an index (``docs/format.md`` § Local index cache, "Opening
an index"): which index files to read, and whether into memory or into a table.

A damaged index file is skipped and named in ``Index.damaged`` (``strict``
raises instead: prune must see everything). Packs a writer added that no index
file names yet never go into a table, so the cache holds only what the
repository's own index files say.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from safehold.repo.errors import IntegrityError
from safehold.repo.index import Index, read_index_file
from safehold.repo.index_build import TableBuilder
from safehold.repo.index_table import IndexTable, TableDamaged, cache_key
from safehold.repo.pack import PackInfo
from safehold.storage import Storage

__all__ = [
    "MEMORY_BLOBS",
    "TABLE_NAME",
    "IndexSource",
    "default_cache_dir",
    "load_index",
    "read_files",
    "refresh",
]

log = logging.getLogger("safehold.repo")

MEMORY_BLOBS = 100_000
TABLE_NAME = "index-v1.shx"
_BATCH_BYTES = 2 << 20
_REPO_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class IndexSource:
    """
    Where an index comes from and may be cached.

    Attributes:
        cache_dir: the cache root (``repo.cache.default_cache_dir``), or None for
            memory only.
        memory_blobs: past this many blobs in memory, a table is written.
    """

    storage: Storage
    index_key: bytes
    repo_id: str | None
    cache_dir: Path | None
    workers: int = 4
    memory_blobs: int = MEMORY_BLOBS

    @property
    def table_path(self) -> Path | None:
        """The table's path, or None if this repository cannot have one."""
        if self.cache_dir is None or not self.repo_id or not _REPO_ID.match(self.repo_id):
            return None
        return self.cache_dir / self.repo_id / TABLE_NAME

    @property
    def key(self) -> bytes:
        """The cache's MAC key."""
        return cache_key(self.index_key, self.repo_id or "")


def default_cache_dir() -> Path | None:
    """
    ``$SAFEHOLD_CACHE_DIR``, else ``$XDG_CACHE_HOME/safehold``, else ``~/.cache/safehold``.

    ``SAFEHOLD_CACHE_DIR=off`` (or an empty value) turns local caches off.
    """
    env = os.environ.get("SAFEHOLD_CACHE_DIR")
    if env is not None:
        return None if env in ("", "off") else Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "safehold"
    try:
        return Path.home() / ".cache" / "safehold"
    except RuntimeError:  # no home directory
        return None


def read_files(
    storage: Storage,
    index_key: bytes,
    names: Sequence[str],
    workers: int,
    sizes: dict[str, int] | None = None,
) -> Iterator[tuple[str, list[PackInfo] | IntegrityError]]:
    """
    Read index files in parallel, in order; a damaged one yields its error.

    Parsed index files are the peak of a cold load, so a batch in flight holds
    at most ``workers * 2`` files and, when *sizes* are known, about
    ``_BATCH_BYTES`` of them (at least one file).
    """

    def one(name: str) -> list[PackInfo] | IntegrityError:
        try:
            return read_index_file(storage, name, index_key)
        except IntegrityError as exc:
            return exc

    most = max(1, workers) * 2
    with ThreadPoolExecutor(max(1, workers)) as pool:
        i = 0
        while i < len(names):
            batch = [names[i]]
            total = sizes.get(names[i], 0) if sizes else 0
            i += 1
            while i < len(names) and len(batch) < most:
                size = sizes.get(names[i], 0) if sizes else 0
                if total + size > _BATCH_BYTES:
                    break
                batch.append(names[i])
                total += size
                i += 1
            yield from zip(batch, pool.map(one, batch), strict=True)


def open_table(src: IndexSource) -> IndexTable | None:
    """The cached table if it verifies; a damaged one is deleted."""
    path = src.table_path
    if path is None or not path.is_file():
        return None
    try:
        return IndexTable(path, src.key, src.repo_id or "")
    except TableDamaged as exc:
        log.warning("%s", exc)
        with contextlib.suppress(OSError):
            path.unlink()
    except OSError as exc:
        log.warning("cannot read the local index cache %s: %s", path, exc)
    return None


def _listing(storage: Storage) -> tuple[list[str], dict[str, int]]:
    infos = {i.name: i.size for i in storage.list("index/")}
    return sorted(infos), infos


def _diff(table: IndexTable, names: list[str]) -> tuple[bool, list[str]]:
    """``(a file the table holds is gone, the listed files it does not hold)``."""
    held = table.file_hashes()
    cur = next(held, None)
    new: list[str] = []
    for name in names:
        try:
            h = bytes.fromhex(name.removeprefix("index/"))
        except ValueError:
            new.append(name)  # not a hash: reading it reports it as damaged
            continue
        if cur is not None and cur < h:
            return True, []
        if cur == h:
            cur = next(held, None)
        else:
            new.append(name)
    return cur is not None, new


def load_index(src: IndexSource, *, strict: bool = False) -> Index:
    """
    Load the index: the cached table and the files it lacks, or every file.

    Raises:
        IntegrityError: with *strict*, an index file is damaged (named).
    """
    names, sizes = _listing(src.storage)
    table = open_table(src)
    if table is not None:
        gone, new = _diff(table, names)
        if gone:
            table.close()
            table = None
        else:
            names = new
    return _read_into(src, Index(table), names, sizes, strict)


def refresh(src: IndexSource, index: Index) -> Index:
    """
    Bring *index* up to date, reading only index files it does not hold.

    Returns *index* (updated in place) or, if files it holds are gone or its
    in-memory part outgrew ``memory_blobs``, a new index.
    """
    if index.unfiled:  # a failed writer left packs no index file names
        return load_index(src)
    names, sizes = _listing(src.storage)
    mem = set(index.files)
    new = names
    if index.table is not None:
        gone, new = _diff(index.table, names)
        if gone:
            return load_index(src)
    if not mem <= set(names):
        return load_index(src)
    index.damaged = []
    return _read_into(src, index, [n for n in new if n not in mem], sizes, strict=False)


def _read_into(
    src: IndexSource, index: Index, names: list[str], sizes: dict[str, int], strict: bool
) -> Index:
    builder: TableBuilder | None = None
    can_build = src.table_path is not None
    try:
        for name, packs in read_files(src.storage, src.index_key, names, src.workers, sizes):
            if isinstance(packs, IntegrityError):
                if strict:
                    raise packs
                index.damaged.append(str(packs))
                continue
            if builder is not None:
                for p in packs:
                    builder.add_pack(p)
                builder.add_file(name)
                continue
            for p in packs:
                index.add_pack(p, filed=True)
            index.files.append(name)
            if can_build and index.memory_blobs > src.memory_blobs:
                builder = _start_builder(src, index)
                can_build = builder is not None
                if builder is not None:  # the builder has it all now: free the memory
                    index = _emptied(index)
        if builder is None and can_build and index.memory_blobs > src.memory_blobs:
            builder = _start_builder(src, index)
        if builder is None:
            return index
        path = src.table_path
        assert path is not None
        builder.write(path, src.key, src.repo_id or "")
        fresh = Index(IndexTable(path, src.key, src.repo_id or ""))
        fresh.damaged = index.damaged
        return fresh
    finally:
        if builder is not None:
            builder.close()


def _emptied(index: Index) -> Index:
    out = Index(index.table)
    out.damaged = index.damaged
    return out


def _start_builder(src: IndexSource, index: Index) -> TableBuilder | None:
    """A builder seeded with *index*'s table and in-memory files, or None if no cache."""
    path = src.table_path
    assert path is not None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        builder = TableBuilder(path.parent)
    except OSError as exc:
        log.warning("no local index cache (%s): the index stays in memory", exc)
        return None
    if index.table is not None:
        for chunk in index.table.pack_chunks():
            builder.add_pack_records(chunk)
        for chunk in index.table.blob_chunks():
            builder.add_blob_records(chunk)
        builder.files.extend(index.table.file_hashes())
    for info in index.memory_packs():
        builder.add_pack(info)
    for name in index.files:
        builder.add_file(name)
    return builder
