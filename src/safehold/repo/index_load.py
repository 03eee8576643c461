"""
Loading and refreshing an index (``docs/format.md`` § Local index cache, "Opening
an index"): which index files to read, and whether into memory or into a table;
the stack of cached tables, its manifest, and when its tables are merged.

A damaged index file is skipped and named in ``Index.damaged`` (``strict``
raises instead: prune must see everything). Packs a writer added that no index
file names yet never go into a table, so the cache holds only what the
repository's own index files say.

The cache directory of a repository is changed only under its lock file
(``flock``), so two processes never interleave their updates; readers take no
lock: a table a reader has open stays readable after it is replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from safehold.repo.errors import IntegrityError
from safehold.repo.index import Index, read_index_file
from safehold.repo.index_build import TableBuilder, merge_tables
from safehold.repo.index_table import (
    IndexTable,
    TableDamaged,
    cache_key,
    read_manifest,
    table_file,
    write_manifest,
)
from safehold.repo.pack import PackInfo
from safehold.storage import ObjectNotFound, Storage

__all__ = [
    "MANIFEST_NAME",
    "MEMORY_BLOBS",
    "MERGE_FACTOR",
    "IndexSource",
    "default_cache_dir",
    "load_index",
    "read_files",
    "refresh",
]

log = logging.getLogger("safehold.repo")

MEMORY_BLOBS = 100_000
MANIFEST_NAME = "index-v2.shx"
# A table is merged with the newer ones after it when it is less than this many
# times their size: at most about log4(blobs / blobs added at a time) tables,
# each record rewritten about 16 to 20 times over its life, the base only once
# the rest is a quarter of it.
MERGE_FACTOR = 4
_LOCK_NAME = "index.lock"
# A fleet's agents compact while others load: a load that finds a listed file
# gone lists again, after a short random pause (a compactor deletes its batch
# at once), up to this many times.
_RELISTS = 8
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
    def directory(self) -> Path | None:
        """The repository's cache directory, or None if it cannot have one."""
        if self.cache_dir is None or not self.repo_id or not _REPO_ID.match(self.repo_id):
            return None
        return self.cache_dir / self.repo_id

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


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[bool]:
    """Hold the cache directory's lock; yields False if there can be no cache."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        log.warning("no local index cache (%s): the index stays in memory", exc)
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # and with it the lock


def open_stack(src: IndexSource) -> list[IndexTable] | None:
    """
    The cached tables, oldest first, if the manifest and every table it names
    verify; else None, and a damaged cache is deleted. Call with the lock held.
    """
    directory = src.directory
    if directory is None:
        return None
    rid = src.repo_id or ""
    try:
        entries = read_manifest(directory / MANIFEST_NAME, src.key, rid)
    except FileNotFoundError:
        return None
    except (TableDamaged, OSError) as exc:
        log.warning("%s", exc)
        _clear(directory)
        return None
    tables: list[IndexTable] = []
    try:
        for name, mac in entries:
            t = IndexTable(directory / table_file(name), src.key, rid)
            tables.append(t)
            nxt = tables[-2].first_pack + tables[-2].packs if len(tables) > 1 else 0
            if not secrets.compare_digest(t.header_mac, mac) or t.first_pack != nxt:
                raise TableDamaged(
                    f"local index cache {t.path} is not the table its manifest names"
                )
        if not tables:
            raise TableDamaged(f"local index cache {directory} names no table")
    except (TableDamaged, OSError) as exc:
        log.warning("%s", exc)
        _close(tables)
        _clear(directory)
        return None
    return tables


def _close(tables: Sequence[IndexTable]) -> None:
    for t in tables:
        t.close()


def _clear(directory: Path, keep: frozenset[str] = frozenset()) -> None:
    """
    Delete the cache files in *directory* but *keep* and the lock: tables no manifest
    names (a crash between writing one and the manifest), leftovers of crashed
    writers, caches of older formats. Only under the lock: no one else writes then.
    """
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if entry.name in keep or entry.name == _LOCK_NAME:
                continue
            if entry.name.startswith("build-") and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            elif entry.name.startswith("index-") and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _commit(src: IndexSource, tables: list[IndexTable]) -> None:
    """Make *tables* the cached index (the manifest is replaced atomically), drop the rest."""
    directory = src.directory
    assert directory is not None
    entries = [(bytes.fromhex(t.path.name[9:-4]), t.header_mac) for t in tables]
    write_manifest(directory / MANIFEST_NAME, src.key, src.repo_id or "", entries)
    _clear(directory, frozenset([MANIFEST_NAME, *(t.path.name for t in tables)]))


def _new_path(src: IndexSource) -> Path:
    assert src.directory is not None
    return src.directory / table_file(secrets.token_bytes(16))


def _listing(storage: Storage) -> tuple[list[str], dict[str, int]]:
    infos = {i.name: i.size for i in storage.list("index/")}
    return sorted(infos), infos


def _held(tables: Sequence[IndexTable]) -> Iterator[bytes]:
    last = None
    for h in heapq.merge(*(t.file_hashes() for t in tables)):
        if h != last:
            last = h
            yield h


def _diff(tables: Sequence[IndexTable], names: list[str]) -> tuple[bool, list[str]]:
    """``(a file the tables hold is gone, the listed files they do not hold)``."""
    held = _held(tables)
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
    Load the index: the cached tables, plus a new table for the files they lack;
    or every file, into memory or (past ``memory_blobs``) into a new table.

    A listed file that is gone when read (an index compaction or prune deleted
    it since the listing) makes the load start again from a new listing, up to
    ``_RELISTS`` times.

    Raises:
        IntegrityError: with *strict*, an index file is damaged (named).
        ObjectNotFound: listed files kept vanishing.
    """
    for attempt in range(_RELISTS):
        try:
            return _load(src, strict)
        except ObjectNotFound as exc:
            if attempt == _RELISTS - 1:
                raise
            log.info("an index file went while the index was read (%s): listing again", exc)
            time.sleep((attempt + 1) * (0.01 + secrets.randbelow(20) / 1000))
    raise AssertionError("unreachable")


def _load(src: IndexSource, strict: bool) -> Index:
    names, sizes = _listing(src.storage)
    directory = src.directory
    if directory is None:
        return _read_into(src, Index(), names, sizes, strict, build=False)
    with _locked(directory) as locked:
        if not locked:
            return _read_into(src, Index(), names, sizes, strict, build=False)
        tables = open_stack(src)
        kept = _without_gone(tables, names) if tables is not None else []
        if kept:
            gone, new = _diff(kept, names)
            assert not gone
            if not new and tables is not None and len(kept) < len(tables):
                _commit(src, kept)  # the tables dropped held only files that are gone
            return _add_table(src, kept, new, sizes, strict)
        _clear(directory)
        return _read_into(src, Index(), names, sizes, strict, build=True)


def _without_gone(tables: list[IndexTable], names: list[str]) -> list[IndexTable]:
    """
    *tables* up to the oldest one holding an index file that is gone (closing the
    rest): their entries must go, and the listed files they held are read again
    into a new table. When the base holds one (prune and ``repair index`` replace
    every index file), nothing is left and the whole cache is rebuilt.
    """
    listed = set()
    for name in names:
        with contextlib.suppress(ValueError):
            listed.add(bytes.fromhex(name.removeprefix("index/")))
    for i, t in enumerate(tables):
        if any(h not in listed for h in t.file_hashes()):
            _close(tables[i:])
            return tables[:i]
    return tables


def refresh(src: IndexSource, index: Index) -> Index:
    """
    Bring *index* up to date, reading only index files it does not hold.

    Returns *index* (unchanged, or updated in place while it is all in memory) or
    a new index: with tables, new files go into a new table; if files it holds
    are gone, everything is loaded again (the tables that still hold only listed
    files are kept).
    """
    if index.unfiled:  # a failed writer left packs no index file names
        return load_index(src)
    names, sizes = _listing(src.storage)
    mem = set(index.files)
    reload = not mem <= set(names)
    new = [n for n in names if n not in mem]
    if index.tables and not reload:
        gone, new = _diff(index.tables, names)
        new = [n for n in new if n not in mem]
        # The new files (and this process's own) go into a table.
        reload = gone or bool(new)
        new = []
    if not reload and new:
        index.damaged = []
        try:
            index = _read_into(src, index, new, sizes, False, build=False)
        except ObjectNotFound:  # a listed file went since (a compaction): start again
            reload = True
        reload = reload or (src.directory is not None and index.memory_blobs > src.memory_blobs)
    return load_index(src) if reload else index


def _add_table(
    src: IndexSource,
    tables: list[IndexTable],
    names: list[str],
    sizes: dict[str, int],
    strict: bool,
) -> Index:
    """Put the index files *names* into a new table on top of *tables*, merge, commit."""
    damaged: list[str] = []
    try:
        if names:
            top = tables[-1]
            assert src.directory is not None
            with TableBuilder(src.directory, first_pack=top.first_pack + top.packs) as builder:
                for name, packs in read_files(
                    src.storage, src.index_key, names, src.workers, sizes
                ):
                    if isinstance(packs, IntegrityError):
                        if strict:
                            raise packs
                        damaged.append(str(packs))
                        continue
                    for p in packs:
                        builder.add_pack(p)
                    builder.add_file(name)
                if builder.files:
                    path = _new_path(src)
                    builder.write(path, src.key, src.repo_id or "")
                    tables = _merged(src, [*tables, IndexTable(path, src.key, src.repo_id or "")])
                    _commit(src, tables)
    except BaseException:
        _close(tables)
        raise
    index = Index(tables)
    index.damaged = damaged
    return index


def _merged(src: IndexSource, tables: list[IndexTable]) -> list[IndexTable]:
    """
    *tables*, the newest merged into one for as long as the table before them is
    less than ``MERGE_FACTOR`` times their size (records of all kinds).
    """
    weight = [t.blobs + t.packs + t.files for t in tables]
    i, tail = len(tables) - 1, weight[-1]
    while i > 0 and weight[i - 1] < MERGE_FACTOR * tail:
        i -= 1
        tail += weight[i]
    if i == len(tables) - 1:
        return tables
    path = _new_path(src)
    merge_tables(tables[i:], path, src.key, src.repo_id or "")
    merged = IndexTable(path, src.key, src.repo_id or "")
    _close(tables[i:])
    return [*tables[:i], merged]


def _read_into(
    src: IndexSource,
    index: Index,
    names: list[str],
    sizes: dict[str, int],
    strict: bool,
    *,
    build: bool,
) -> Index:
    """
    Read *names* into the all-in-memory *index*; with *build* (the lock held), past
    ``memory_blobs`` everything goes into a new base table instead.
    """
    builder: TableBuilder | None = None
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
            if build and index.memory_blobs > src.memory_blobs:
                builder = _start_builder(src, index)
                build = builder is not None
                if builder is not None:  # the builder has it all now: free the memory
                    index = _emptied(index)
        if builder is None:
            return index
        path = _new_path(src)
        builder.write(path, src.key, src.repo_id or "")
        base = IndexTable(path, src.key, src.repo_id or "")
        _commit(src, [base])
        fresh = Index([base])
        fresh.damaged = index.damaged
        return fresh
    finally:
        if builder is not None:
            builder.close()


def _emptied(index: Index) -> Index:
    out = Index()
    out.damaged = index.damaged
    return out


def _start_builder(src: IndexSource, index: Index) -> TableBuilder | None:
    """A builder seeded with the in-memory *index*, or None if there can be no cache."""
    assert src.directory is not None
    try:
        builder = TableBuilder(src.directory)
    except OSError as exc:
        log.warning("no local index cache (%s): the index stays in memory", exc)
        return None
    for info in index.memory_packs():
        builder.add_pack(info)
    for name in index.files:
        builder.add_file(name)
    return builder
