"""
The WAL archive: each archived WAL file as one object of the repository's storage.

Layout (an extension of ``docs/format.md``, described in ``docs/databases.md``)::

    wal/<stanza>/<wal file name, lower case>.<h>

``h`` is the first 32 hex digits of the keyed BLAKE3 id of the file's bytes
(the repository's id key), so a second push of the same file is recognised
without reading anything back, and a different file under the same name is
refused. The object is an envelope (zstd, AES-256-GCM) sealed to the newest key
generation: a write-only key can archive WAL, only a full key can read it back.

One object per WAL file, rather than WAL in packs, because WAL arrives one file
at a time from ``archive_command`` and is fetched one file at a time by
``restore_command``: neither the index nor a lock is involved, so a push or a
fetch costs one or two requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from safehold.db.errors import DbError, WalConflict, WalMissing
from safehold.repo.crypto import DecryptError, open_envelope, seal_envelope
from safehold.repo.repository import Repository
from safehold.storage import ObjectNotFound

__all__ = ["WalArchive", "WalObject", "check_stanza"]

_STANZA_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_HASH_LEN = 32
_SUFFIXES = ("history", "backup", "partial")


def check_stanza(stanza: str) -> str:
    """Return *stanza* if it is a valid archive name (``[a-z0-9_-]``, at most 63), else raise."""
    if not _STANZA_RE.match(stanza):
        raise DbError(f"invalid stanza {stanza!r}: use lower-case letters, digits, '-' and '_'")
    return stanza


def _wal_name(lowered: str) -> str:
    """Undo the lower-casing of a WAL file name: hex parts upper case, suffixes lower."""
    return ".".join(p if p in _SUFFIXES else p.upper() for p in lowered.split("."))


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[0-9A-F]{8,24}(\.[0-9A-F]{8})?(\.(history|backup|partial))?", name):
        raise DbError(f"{name!r} is not a WAL file name")
    return name


@dataclass(frozen=True)
class WalObject:
    """One archived WAL file: its PostgreSQL name, its object name and stored size."""

    name: str
    key: str
    size: int


class WalArchive:
    """The archived WAL of one database cluster (a *stanza*) in a repository."""

    def __init__(self, repo: Repository, stanza: str) -> None:
        self.repo = repo
        self.stanza = check_stanza(stanza)
        self.prefix = f"wal/{stanza}/"

    def _digest(self, data: bytes | memoryview) -> str:
        return self.repo.blob_id(data).hex()[:_HASH_LEN]

    def _find(self, name: str) -> list[WalObject]:
        want = name.lower() + "."
        out = []
        for info in self.repo.storage.list(self.prefix + want):
            rest = info.name[len(self.prefix) :]
            if rest.rsplit(".", 1)[0] == name.lower():
                out.append(WalObject(name, info.name, info.size))
        return out

    def push(self, name: str, data: bytes | memoryview) -> bool:
        """
        Archive one WAL file.

        Returns:
            True if it was stored; False if the same bytes were already there.

        Raises:
            WalConflict: a different file is archived under that name.
        """
        _check_name(name)
        digest = self._digest(data)
        for obj in self._find(name):
            if obj.key.endswith("." + digest):
                return False
            raise WalConflict(
                f"the archive {self.stanza} already holds a different {name}: "
                "another cluster may be archiving into this stanza"
            )
        sealed = seal_envelope(bytes(data), gen=self.repo.keys.newest)
        self.repo.storage.put(f"{self.prefix}{name.lower()}.{digest}", sealed)
        return True

    def read(self, obj: WalObject) -> bytes:
        """Read and verify one archived file found by ``list`` or ``lookup``."""
        self.repo.keys.require_read("reading WAL")
        try:
            sealed = self.repo.storage.get(obj.key)
        except ObjectNotFound as exc:
            raise WalMissing(f"{obj.name} is not in the archive {self.stanza}") from exc
        try:
            data = open_envelope(sealed, gens=self.repo.keys.generations)
        except DecryptError as exc:
            raise DbError(f"archived WAL file {obj.key} is damaged: {exc}") from exc
        if not obj.key.endswith("." + self._digest(data)):
            raise DbError(f"archived WAL file {obj.key} is damaged: its content does not match")
        return data

    def lookup(self, name: str) -> WalObject:
        """Find one archived file by its WAL name; ``WalMissing`` if it is not there."""
        found = self._find(_check_name(name))
        if not found:
            raise WalMissing(f"{name} is not in the archive {self.stanza}")
        return found[0]

    def get(self, name: str) -> bytes:
        """Fetch one WAL file by name; ``WalMissing`` if it is not archived."""
        return self.read(self.lookup(name))

    def list(self) -> dict[str, WalObject]:
        """Every archived file, by WAL name (one listing request)."""
        out: dict[str, WalObject] = {}
        for info in self.repo.storage.list(self.prefix):
            rest = info.name[len(self.prefix) :]
            if "/" in rest or "." not in rest:
                continue
            name = _wal_name(rest.rsplit(".", 1)[0])
            out.setdefault(name, WalObject(name, info.name, info.size))
        return out

    def delete(self, objs: Iterable[WalObject]) -> int:
        """Delete archived files; return how many."""
        n = 0
        for obj in objs:
            self.repo.storage.delete(obj.key)
            n += 1
        return n
