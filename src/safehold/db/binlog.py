"""
The binary log archive of a MariaDB server: each closed binlog file as one object.

Layout (beside the WAL archive, same envelope)::

    binlog/<stanza>/<binlog file name>.<h>
    binlog/<stanza>/<binlog file name>.partial.<h>   (streamed, the server lost mid-file)

``h`` is the first 32 hex digits of the keyed BLAKE3 id of the file's bytes, so
a second push of the same file is recognised without reading anything, and a
different file under the same name (another server archiving into the stanza,
or a server whose binlogs were reset) is refused. The object is sealed to the
newest key generation: a write-only key can archive, only a full key can read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from safehold.db.errors import DbError, WalConflict, WalMissing
from safehold.db.walstore import check_stanza
from safehold.repo.crypto import DecryptError, open_envelope, seal_envelope
from safehold.repo.repository import Repository
from safehold.storage import ObjectNotFound

__all__ = ["BinlogArchive", "binlog_number"]

_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,200}?\.(\d{6,})(\.partial)?$")
_HASH_LEN = 32


def binlog_number(name: str) -> int:
    """The sequence number of a binlog file name (``mysql-bin.000042[.partial]`` → 42)."""
    m = _NAME_RE.match(name)
    if not m:
        raise DbError(f"{name!r} is not a binary log file name")
    return int(m.group(1))


class BinlogArchive:
    """The archived binary logs of one server (a *stanza*) in a repository."""

    def __init__(self, repo: Repository, stanza: str) -> None:
        self.repo = repo
        self.stanza = check_stanza(stanza)
        self.prefix = f"binlog/{stanza}/"

    def _digest(self, data: bytes) -> str:
        return self.repo.blob_id(data).hex()[:_HASH_LEN]

    def list(self) -> dict[str, str]:
        """Every archived binlog: file name → object name (one listing request)."""
        out: dict[str, str] = {}
        for info in self.repo.storage.list(self.prefix):
            rest = info.name[len(self.prefix) :]
            name = rest.rsplit(".", 1)[0]
            if "/" not in rest and _NAME_RE.match(name):
                out.setdefault(name, info.name)
        return out

    def push(self, name: str, data: bytes) -> bool:
        """
        Archive one closed binlog file; False if the same bytes are there already.

        Raises:
            WalConflict: a different file is archived under that name.
        """
        binlog_number(name)
        digest = self._digest(data)
        key = self.list().get(name)
        if key is not None:
            if key.endswith("." + digest):
                return False
            raise WalConflict(
                f"the archive {self.stanza} already holds a different {name}: "
                "another server may be archiving into this stanza (set its stanza)"
            )
        self.repo.storage.put(
            f"{self.prefix}{name}.{digest}", seal_envelope(data, gen=self.repo.keys.newest)
        )
        return True

    def push_partial(self, name: str, data: bytes) -> None:
        """
        Store the binlog file a stream was writing when it ended as ``<name>.partial``,
        replacing an older copy of it (a partial file only grows).
        """
        partial = f"{name}.partial"
        self.delete([partial])
        self.push(partial, data)

    def get(self, name: str, key: str | None = None) -> bytes:
        """Fetch and verify one binlog file; ``WalMissing`` if it is not archived."""
        self.repo.keys.require_read("reading binary logs")
        key = key or self.list().get(name)
        if key is None:
            raise WalMissing(f"binary log {name} is not in the archive {self.stanza}")
        try:
            data = open_envelope(self.repo.storage.get(key), gens=self.repo.keys.generations)
        except ObjectNotFound as exc:
            raise WalMissing(f"binary log {name} is not in the archive {self.stanza}") from exc
        except DecryptError as exc:
            raise DbError(f"archived binary log {key} is damaged: {exc}") from exc
        if not key.endswith("." + self._digest(data)):
            raise DbError(f"archived binary log {key} is damaged: its content does not match")
        return data

    def delete(self, names: Iterable[str]) -> int:
        """Delete archived binlogs by file name; return how many."""
        listing = self.list()
        n = 0
        for name in names:
            if name in listing:
                self.repo.storage.delete(listing[name])
                n += 1
        return n
