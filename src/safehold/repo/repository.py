"""
An open repository: its config, keys and index, and reading what it stores.

Writing goes through ``writer.BlobWriter``; the use cases (backup, restore,
check, prune) are functions in their own modules that take a ``Repository``.
"""

from __future__ import annotations

import json
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import blake3
import zstandard

from safehold import __version__
from safehold.core.errors import UsageError
from safehold.core.snapshot import Snapshot, SnapshotFilter, format_time
from safehold.repo.compress import ZSTD, decompress
from safehold.repo.crypto import (
    DecryptError,
    content_hash,
    decrypt,
    open_envelope,
    seal_envelope,
    unseal_key,
)
from safehold.repo.errors import (
    IntegrityError,
    RepositoryExists,
    RepositoryNotFound,
    SnapshotNotFound,
    UnsupportedFormat,
)
from safehold.repo.index import BlobLocation, Index, PackRef
from safehold.repo.index_load import IndexSource, default_cache_dir, load_index, refresh
from safehold.repo.keys import KdfParams, Keyring, KeyStore, config_damage, sign_config
from safehold.repo.pack import blob_aad, pack_name
from safehold.repo.shared import JobIndex, SharedIndex
from safehold.storage import ObjectNotFound, Storage, StorageNotFound

__all__ = ["ChunkerParams", "Repository"]

FORMAT_NAME = "safehold-repository"
FORMAT_VERSION = 2
"""Version 2 adds the config's MAC (docs/format.md § Config); version 1 still opens."""
DEFAULT_PACK_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class ChunkerParams:
    """FastCDC sizes. The expected chunk is about ``min + avg`` (FastCDC skips ``min``)."""

    min: int = 512 * 1024
    avg: int = 512 * 1024
    max: int = 8 * 1024 * 1024


class Repository:
    """An open repository. Thread-safe for reading; close it when done."""

    def __init__(
        self,
        storage: Storage,
        config: dict[str, Any],
        keys: Keyring,
        *,
        owns_storage: bool = False,
    ) -> None:
        self.storage = storage
        self.owns_storage = owns_storage
        self.config = config
        self.keys = keys
        self.index = Index()
        self.cache_dir = default_cache_dir()  # local index cache root; None: memory only
        self.pack_size = int(config.get("pack_size", DEFAULT_PACK_SIZE))
        ch = config.get("chunker", {})
        self.chunker = ChunkerParams(
            ch.get("min", 512 * 1024), ch.get("avg", 512 * 1024), ch.get("max", 8 << 20)
        )
        self.damaged_snapshots: list[str] = []
        self._pack_keys: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.shared: SharedIndex | None = None

    @classmethod
    def for_job(
        cls,
        storage: Storage,
        config: dict[str, Any],
        keys: Keyring,
        shared: SharedIndex,
        pack_keys: dict[str, bytes] | None = None,
    ) -> Repository:
        """
        A repository for one job of a long-lived process that keeps *config*,
        *keys* (checked against the config) and the *shared* index across jobs
        (``repo.shared``). Its index is the job's own packs over the shared one;
        ``refresh_index`` refreshes the shared index (coalesced). *pack_keys*, the
        unsealed pack keys by pack id, may be shared by the jobs too.

        Raises:
            IntegrityError: the keys do not authenticate the config.
        """
        damage = config_damage(config, keys.index_key)
        if damage:
            raise IntegrityError(f"{damage} (at {storage.properties.location})")
        repo = cls(storage, config, keys)
        repo.shared = shared
        repo.index = JobIndex(lambda: shared.index)
        if pack_keys is not None:
            repo._pack_keys = pack_keys
        return repo

    # -- lifecycle --------------------------------------------------------------

    @classmethod
    def init(
        cls,
        storage: Storage,
        password: str,
        *,
        pack_size: int = DEFAULT_PACK_SIZE,
        chunker: ChunkerParams | None = None,
        kdf: KdfParams | None = None,
        owns_storage: bool = False,
    ) -> Repository:
        """
        Create a repository in *storage* and return it open.

        With *owns_storage*, closing the repository closes *storage* too.

        Raises:
            RepositoryExists: the storage already holds a repository.
            UsageError: the password is empty or a size is out of range.
        """
        if not password:
            raise UsageError("the password must not be empty")
        if not 64 * 1024 <= pack_size <= 1024 * 1024 * 1024:
            raise UsageError("the pack size must be between 64 KiB and 1 GiB")
        chunker = chunker or ChunkerParams()
        storage.create()
        try:
            storage.stat("config")
        except ObjectNotFound:
            pass
        else:
            raise RepositoryExists(f"a repository already exists at {storage.properties.location}")
        config = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "id": secrets.token_hex(16),
            "created": format_time(datetime.now(UTC)),
            "pack_size": pack_size,
            "chunker": {"min": chunker.min, "avg": chunker.avg, "max": chunker.max},
        }
        keys = KeyStore(storage).create(password, kdf or KdfParams())
        config = sign_config(config, keys.index_key)
        # config last: a repository is there only once its keys are.
        storage.put("config", json.dumps(config, indent=1).encode())
        return cls(storage, config, keys, owns_storage=owns_storage)

    @classmethod
    def read_config(cls, storage: Storage) -> dict[str, Any]:
        """
        Read and check the config, before any password is needed.

        Raises:
            RepositoryNotFound: nothing, or not a safehold repository, is there.
            UnsupportedFormat: the repository's version is newer than this program's.
        """
        where = storage.properties.location
        try:
            raw = storage.get("config")
        except (ObjectNotFound, StorageNotFound) as exc:
            raise RepositoryNotFound(f"there is no repository at {where}") from exc
        try:
            config = json.loads(raw)
            fmt, version = config["format"], int(config["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RepositoryNotFound(
                f"{where} does not hold a safehold repository (bad config)"
            ) from exc
        if fmt != FORMAT_NAME:
            raise RepositoryNotFound(f"{where} does not hold a safehold repository")
        if version > FORMAT_VERSION:
            raise UnsupportedFormat(
                f"the repository at {where} has format version {version}; "
                f"this safehold ({__version__}) reads up to version {FORMAT_VERSION}: "
                "upgrade safehold"
            )
        return dict(config)

    @classmethod
    def open(
        cls,
        storage: Storage,
        password: str,
        *,
        load_index: bool = True,
        owns_storage: bool = False,
        keys: Keyring | None = None,
    ) -> Repository:
        """
        Open the repository in *storage* with *password*, and load its index.

        A storage handed in stays its caller's: closing the repository closes
        it only with *owns_storage*. *keys* (already unlocked with *password*
        for this repository, kept by a long-lived agent) spare the key
        derivation; they are checked against the config like derived ones.

        ``check`` and ``repair`` pass ``load_index=False`` and load it their way,
        so that a damaged index file is reported rather than fatal.

        Raises:
            RepositoryNotFound, UnsupportedFormat, WrongPassword, IntegrityError.
        """
        config = cls.read_config(storage)
        keys = keys or KeyStore(storage).open(password)
        damage = config_damage(config, keys.index_key)
        if damage:
            raise IntegrityError(f"{damage} (at {storage.properties.location})")
        repo = cls(storage, config, keys, owns_storage=owns_storage)
        if load_index:
            repo.reload_index(strict=False)
        return repo

    def index_source(self) -> IndexSource:
        """Where this repository's index is read from and cached."""
        return IndexSource(
            self.storage,
            self.keys.index_key,
            self.config.get("id"),
            self.cache_dir,
            self.storage.properties.connections,
        )

    def refresh_index(self) -> None:
        """
        Bring the index up to date, reading only index files added since it was
        loaded (all of them again if some were removed, as by prune). Cheap when
        nothing changed: one listing of ``index/``. Damaged index files are
        skipped and named in ``index.damaged``.
        """
        if self.shared is not None:
            self.shared.refresh(self.index_source())
            return
        self.index = refresh(self.index_source(), self.index)

    def reload_index(self, *, strict: bool = True) -> None:
        """
        Load the index afresh (from the local cache and the files it lacks).

        Raises:
            IntegrityError: with *strict*, an index file is damaged; the message
                names it. Without, damaged files are skipped and named in
                ``index.damaged``: a blob only they name is then not found.
        """
        if self.shared is not None:
            self.shared.refresh(self.index_source(), full=True, strict=strict)
            return
        self.index = load_index(self.index_source(), strict=strict)

    def close(self) -> None:
        """Release the repository (and its storage, if it owns it)."""
        if self.owns_storage:
            self.storage.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def key_store(self) -> KeyStore:
        """The key files of this repository."""
        return KeyStore(self.storage)

    # -- blobs --------------------------------------------------------------------

    def blob_id(self, data: bytes | memoryview) -> bytes:
        """The keyed BLAKE3 MAC that names a chunk."""
        return blake3.blake3(data, key=self.keys.id_key, max_threads=1).digest()

    def pack_key(self, pack: PackRef) -> bytes:
        """The key that a pack's blobs are encrypted with."""
        key = self._pack_keys.get(pack.id)
        if key is None:
            self.keys.require_read("reading data")
            gen = self.keys.generations.get(pack.gen)
            if gen is None:
                raise IntegrityError(
                    f"pack {pack_name(pack.id)} uses unknown key generation {pack.gen}"
                )
            key = unseal_key(gen, pack.eph)
            with self._lock:
                if len(self._pack_keys) > 65536:
                    self._pack_keys.clear()
                self._pack_keys[pack.id] = key
        return key

    def locate(self, blob_id: bytes) -> BlobLocation:
        """Find a blob; ``IntegrityError`` if no index names it."""
        loc = self.index.lookup(blob_id)
        if loc is None:
            damaged = self.index.damaged
            if damaged:
                raise IntegrityError(
                    f"blob {blob_id.hex()} is not in any readable index; "
                    f"{'; '.join(damaged)}: run `safehold repair index`"
                )
            raise IntegrityError(
                f"blob {blob_id.hex()} is not in any index: the repository is missing data"
            )
        return loc

    def decode_blob(self, loc: BlobLocation, ciphertext: bytes | memoryview) -> bytes:
        """Decrypt, decompress and verify one blob read from its pack."""
        e = loc.entry
        where = pack_name(loc.pack.id)
        try:
            stored = decrypt(self.pack_key(loc.pack), ciphertext, aad=blob_aad(e.type, e.id))
            plain = decompress(stored, e.raw_length) if e.compression == ZSTD else stored
        except (DecryptError, zstandard.ZstdError) as exc:
            raise IntegrityError(
                f"pack {where} is damaged: blob {e.id.hex()[:16]} fails verification"
            ) from exc
        if len(plain) != e.raw_length or self.blob_id(plain) != e.id:
            raise IntegrityError(
                f"pack {where} is damaged: blob {e.id.hex()[:16]} has the wrong content"
            )
        return plain

    def read_blob(self, blob_id: bytes) -> bytes:
        """Read and verify one blob."""
        loc = self.locate(blob_id)
        try:
            ct = self.storage.get(pack_name(loc.pack.id), loc.entry.offset, loc.entry.length)
        except ObjectNotFound as exc:
            raise IntegrityError(f"pack {pack_name(loc.pack.id)} is missing") from exc
        return self.decode_blob(loc, ct)

    # -- snapshots ----------------------------------------------------------------

    def snapshot_names(self) -> list[str]:
        """The ids of every snapshot file (no decryption needed)."""
        return [i.name.removeprefix("snapshots/") for i in self.storage.list("snapshots/")]

    def load_snapshot(self, snapshot_id: str) -> Snapshot:
        """
        Read one snapshot manifest.

        Raises:
            SnapshotNotFound: there is no such snapshot.
            IntegrityError: its file is damaged; the message names it.
        """
        self.keys.require_read("reading snapshots")
        name = f"snapshots/{snapshot_id}"
        try:
            blob = self.storage.get(name)
        except ObjectNotFound as exc:
            raise SnapshotNotFound(f"no snapshot {snapshot_id}") from exc
        if content_hash(blob) != snapshot_id:
            raise IntegrityError(
                f"snapshot file {name} is damaged: its content does not match its name"
            )
        try:
            doc = json.loads(open_envelope(blob, gens=self.keys.generations))
            return Snapshot.from_json(snapshot_id, doc)
        except (DecryptError, ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"snapshot file {name} is damaged: {exc}") from exc

    def snapshots(self) -> list[Snapshot]:
        """
        Every readable snapshot, oldest first.

        Damaged snapshot files are skipped and named in ``damaged_snapshots``.
        """
        names = self.snapshot_names()
        self.damaged_snapshots = []

        def load(n: str) -> Snapshot | None:
            try:
                return self.load_snapshot(n)
            except IntegrityError as exc:
                self.damaged_snapshots.append(str(exc))
            except SnapshotNotFound:
                pass  # forgotten meanwhile
            return None

        with ThreadPoolExecutor(max(1, self.storage.properties.connections)) as pool:
            snaps = [s for s in pool.map(load, names) if s is not None]
        return sorted(snaps, key=lambda s: (s.time, s.id))

    def find_snapshot(
        self,
        ref: str,
        *,
        where: SnapshotFilter | None = None,
        skip_damaged: bool = False,
    ) -> Snapshot:
        """
        Resolve ``latest``, a full id or a unique id prefix.

        ``latest`` is the newest snapshot that *where* selects. A damaged
        snapshot file has no readable time, so it may be the newest one: then
        ``latest`` fails rather than silently pick an older snapshot, unless
        *skip_damaged* is set; the caller then says which snapshot it uses
        (``damaged_snapshots`` names the damaged files).

        Raises:
            SnapshotNotFound: nothing matches, or a prefix is ambiguous.
            IntegrityError: ``latest`` with a damaged snapshot file (named) and
                no *skip_damaged*; or the named snapshot's file is damaged.
        """
        if ref == "latest":
            snaps = self.snapshots()
            if self.damaged_snapshots and not skip_damaged:
                raise IntegrityError(
                    "cannot tell which snapshot is the latest: "
                    + "; ".join(self.damaged_snapshots)
                    + " (run check; or pass --skip-damaged to use the newest readable snapshot)"
                )
            if where is not None:
                snaps = [s for s in snaps if where.matches(s)]
            if not snaps:
                if where is not None and not where.is_empty():
                    raise SnapshotNotFound(f"no snapshot matches {where.describe()}")
                raise SnapshotNotFound("the repository has no snapshots")
            return snaps[-1]
        ref = ref.lower()
        if len(ref) == 64 and all(c in "0123456789abcdef" for c in ref):
            return self.load_snapshot(ref)  # a whole id names its file: no listing
        matches = [n for n in self.snapshot_names() if n.startswith(ref)] if ref else []
        if not matches:
            raise SnapshotNotFound(f"no snapshot matches {ref!r}")
        if len(matches) > 1:
            raise SnapshotNotFound(f"{ref!r} matches {len(matches)} snapshots; give more of the id")
        return self.load_snapshot(matches[0])

    def save_snapshot(self, snapshot: Snapshot) -> Snapshot:
        """Store a manifest, sealed to the newest generation; return it with its id."""
        doc = snapshot.to_json()
        doc["program"] = f"safehold {__version__}"
        blob = seal_envelope(json.dumps(doc).encode(), gen=self.keys.newest)
        snap_id = content_hash(blob)
        self.storage.put(f"snapshots/{snap_id}", blob)
        return Snapshot.from_json(snap_id, doc)
