"""
Key files, the keyring and key generations (``docs/format.md`` § Keys).

A passphrase opens a key file; a full key file yields the master key, which
opens the keyring; a write-only key file yields only what a writer needs.
"""

from __future__ import annotations

import base64
import getpass
import json
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from safehold.core.snapshot import format_time
from safehold.repo.crypto import (
    DecryptError,
    Generation,
    content_hash,
    decrypt,
    derive_key,
    encrypt,
    open_envelope,
    scrypt_key,
    seal_envelope,
)
from safehold.repo.errors import IntegrityError, KeyNotAllowed, RepoError, WrongPassword
from safehold.storage import ObjectNotFound, Storage

__all__ = ["KdfParams", "KeyInfo", "KeyStore", "Keyring"]

KeyKind = Literal["full", "write-only"]
_KEY_AAD = b"safehold key v1"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s)


@dataclass(frozen=True)
class KdfParams:
    """scrypt cost parameters; the defaults take about 0.1 s and 32 MiB."""

    n: int = 2**15
    r: int = 8
    p: int = 1


@dataclass(frozen=True)
class KeyInfo:
    """What ``key list`` shows of a key file."""

    id: str
    kind: KeyKind
    created: str
    host: str
    user: str
    current: bool


@dataclass
class Keyring:
    """The secrets an open repository works with."""

    id_key: bytes
    index_key: bytes
    chunker_seed: int
    generations: dict[int, Generation]
    kind: KeyKind
    key_id: str
    master: bytes | None = None
    keyring_files: list[str] = field(default_factory=list)

    @property
    def newest(self) -> Generation:
        """The generation new data is written under."""
        return self.generations[max(self.generations)]

    @property
    def can_read(self) -> bool:
        """Whether this key can decrypt data and snapshots."""
        return self.kind == "full"

    def require_read(self, what: str) -> None:
        """Raise ``KeyNotAllowed`` unless this key can read."""
        if not self.can_read:
            raise KeyNotAllowed(f"{what} needs a full key; this is a write-only key")


class KeyStore:
    """Reads and writes the key files, keyring and public keyring of one repository."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    # -- creation ---------------------------------------------------------------

    def create(self, passphrase: str, kdf: KdfParams) -> Keyring:
        """Create the keyring, public keyring and a first full key file."""
        master = secrets.token_bytes(32)
        ring = Keyring(
            id_key=secrets.token_bytes(32),
            index_key=secrets.token_bytes(32),
            chunker_seed=secrets.randbits(63),
            generations={1: Generation.new(1)},
            kind="full",
            key_id="",
            master=master,
        )
        self._write_rings(ring)
        ring.key_id = self._write_key_file("full", passphrase, master, kdf)
        return ring

    def _write_rings(self, ring: Keyring) -> None:
        assert ring.master is not None
        doc = {
            "id_key": _b64(ring.id_key),
            "index_key": _b64(ring.index_key),
            "chunker_seed": ring.chunker_seed,
            "generations": [
                {"gen": g.gen, "public": _b64(g.public), "private": _b64(g.private or b"")}
                for g in ring.generations.values()
            ],
        }
        blob = seal_envelope(json.dumps(doc).encode(), key=self._ring_key(ring.master))
        name = f"keyring/{content_hash(blob)}"
        self._storage.put(name, blob)
        pub = {
            "generations": [
                {"gen": g.gen, "public": _b64(g.public)} for g in ring.generations.values()
            ]
        }
        pblob = seal_envelope(json.dumps(pub).encode(), key=ring.index_key)
        self._storage.put(f"pubring/{content_hash(pblob)}", pblob)
        ring.keyring_files = [name]

    @staticmethod
    def _ring_key(master: bytes) -> bytes:
        return derive_key(master, "safehold keyring v1")

    def _write_key_file(
        self, kind: KeyKind, passphrase: str, payload: bytes, kdf: KdfParams
    ) -> str:
        salt = secrets.token_bytes(16)
        key = scrypt_key(passphrase, salt, kdf.n, kdf.r, kdf.p)
        doc = {
            "version": 1,
            "kind": kind,
            "created": format_time(datetime.now(UTC)),
            "host": socket.gethostname(),
            "user": getpass.getuser(),
            "kdf": {"name": "scrypt", "n": kdf.n, "r": kdf.r, "p": kdf.p, "salt": _b64(salt)},
            "data": _b64(encrypt(key, payload, aad=_KEY_AAD)),
        }
        key_id = secrets.token_hex(16)
        self._storage.put(f"keys/{key_id}", json.dumps(doc, indent=1).encode())
        return key_id

    # -- opening ----------------------------------------------------------------

    def _key_files(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for info in self._storage.list("keys/"):
            key_id = info.name.removeprefix("keys/")
            try:
                doc = json.loads(self._storage.get(info.name))
            except (ObjectNotFound, ValueError):
                continue  # removed meanwhile, or not a key file: other key files may open
            yield key_id, doc

    def open(self, passphrase: str) -> Keyring:
        """
        Open the repository's keys with *passphrase*.

        Raises:
            WrongPassword: no key file opens with it.
            IntegrityError: the keyring files are damaged.
        """
        for key_id, doc in self._key_files():
            payload = self._try_key_file(doc, passphrase)
            if payload is None:
                continue
            if doc.get("kind") == "write-only":
                return self._open_write_only(key_id, payload)
            return self._open_full(key_id, payload)
        raise WrongPassword("wrong password, or no key file of this repository opens with it")

    @staticmethod
    def _try_key_file(doc: dict[str, Any], passphrase: str) -> bytes | None:
        try:
            kdf = doc["kdf"]
            key = scrypt_key(passphrase, _unb64(kdf["salt"]), kdf["n"], kdf["r"], kdf["p"])
            return decrypt(key, _unb64(doc["data"]), aad=_KEY_AAD)
        except (DecryptError, KeyError, TypeError, ValueError):
            return None

    def _open_full(self, key_id: str, master: bytes) -> Keyring:
        ring_key = self._ring_key(master)
        docs: list[dict[str, Any]] = []
        names: list[str] = []
        for info in self._storage.list("keyring/"):
            docs.append(json.loads(self._read_envelope(info.name, key=ring_key)))
            names.append(info.name)
        if not docs:
            raise IntegrityError("the repository has no keyring file (keyring/ is empty)")
        gens: dict[int, Generation] = {}
        for d in docs:
            for g in d["generations"]:
                gens[g["gen"]] = Generation(g["gen"], _unb64(g["public"]), _unb64(g["private"]))
        first = docs[0]
        return Keyring(
            id_key=_unb64(first["id_key"]),
            index_key=_unb64(first["index_key"]),
            chunker_seed=int(first["chunker_seed"]),
            generations=gens,
            kind="full",
            key_id=key_id,
            master=master,
            keyring_files=names,
        )

    def _open_write_only(self, key_id: str, payload: bytes) -> Keyring:
        doc = json.loads(payload)
        index_key = _unb64(doc["index_key"])
        gens: dict[int, Generation] = {}
        for info in self._storage.list("pubring/"):
            pub = json.loads(self._read_envelope(info.name, key=index_key))
            for g in pub["generations"]:
                gens[g["gen"]] = Generation(g["gen"], _unb64(g["public"]))
        if not gens:
            raise IntegrityError("the repository has no public keyring file (pubring/ is empty)")
        return Keyring(
            id_key=_unb64(doc["id_key"]),
            index_key=index_key,
            chunker_seed=int(doc["chunker_seed"]),
            generations=gens,
            kind="write-only",
            key_id=key_id,
        )

    def _read_envelope(self, name: str, *, key: bytes) -> bytes:
        blob = self._storage.get(name)
        if content_hash(blob) != name.rsplit("/", 1)[1]:
            raise IntegrityError(f"{name} is damaged: its content does not match its name")
        try:
            return open_envelope(blob, key=key)
        except DecryptError as exc:
            raise IntegrityError(f"{name} is damaged: {exc}") from exc

    # -- management -------------------------------------------------------------

    def list(self, current: str) -> list[KeyInfo]:
        """Describe every key file."""
        return [
            KeyInfo(
                key_id,
                doc.get("kind", "full"),
                doc.get("created", ""),
                doc.get("host", ""),
                doc.get("user", ""),
                key_id == current,
            )
            for key_id, doc in self._key_files()
        ]

    def add(self, ring: Keyring, passphrase: str, kind: KeyKind, kdf: KdfParams) -> str:
        """Add a key file that opens with *passphrase*; return its id."""
        ring.require_read("adding a key")
        assert ring.master is not None
        if kind == "full":
            payload = ring.master
        else:
            payload = json.dumps(
                {
                    "id_key": _b64(ring.id_key),
                    "index_key": _b64(ring.index_key),
                    "chunker_seed": ring.chunker_seed,
                }
            ).encode()
        return self._write_key_file(kind, passphrase, payload, kdf)

    def remove(self, ring: Keyring, key_id: str) -> None:
        """Remove a key file; never the one in use, never the last full key."""
        infos = {k.id: k for k in self.list(ring.key_id)}
        matches = [k for k in infos if k.startswith(key_id)] if key_id else []
        if len(matches) != 1:
            raise RepoError(f"no single key file matches {key_id!r}")
        target = matches[0]
        if target == ring.key_id:
            raise RepoError("refusing to remove the key in use; open with another key first")
        if infos[target].kind == "full" and sum(k.kind == "full" for k in infos.values()) == 1:
            raise RepoError("refusing to remove the last full key: the data would be lost")
        self._storage.delete(f"keys/{target}")

    def passwd(self, ring: Keyring, passphrase: str, kdf: KdfParams) -> str:
        """Replace the current key file with one for *passphrase*; return the new id."""
        ring.require_read("changing the passphrase")
        assert ring.master is not None
        new_id = self._write_key_file("full", passphrase, ring.master, kdf)
        self._storage.delete(f"keys/{ring.key_id}")
        ring.key_id = new_id
        return new_id

    def rotate(self, ring: Keyring) -> int:
        """Add a new generation that new data is written under; return its number."""
        ring.require_read("key rotation")
        old_rings = list(ring.keyring_files)
        old_pubs = [i.name for i in self._storage.list("pubring/")]
        gen = max(ring.generations) + 1
        ring.generations[gen] = Generation.new(gen)
        self._write_rings(ring)
        # Delete the old files only once the new ones are stored, so a crash
        # in between leaves two rings whose union is complete.
        for name in old_rings + old_pubs:
            if name not in ring.keyring_files:
                self._storage.delete(name)
        return gen
