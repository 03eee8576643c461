"""
Key files, the keyring and key generations (``docs/format.md`` § Keys).

A passphrase opens a key file; a full key file yields the master key, which
opens the keyring; a write-only key file yields only what a writer needs.

Key files of version 2 carry a BLAKE3 checksum of their other fields, so that
damage to one is told apart from a wrong password, and found by ``check``
without its passphrase. Version 1 key files (no checksum) still open.
"""

from __future__ import annotations

import base64
import getpass
import hmac
import json
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import blake3

from safehold.core.errors import UsageError
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
from safehold.repo.errors import (
    IntegrityError,
    KeyNotAllowed,
    KeyNotFound,
    RepoError,
    WrongPassword,
)
from safehold.storage import ObjectNotFound, Storage

__all__ = [
    "KdfParams",
    "KeyInfo",
    "KeyStore",
    "Keyring",
    "canonical_json",
    "config_damage",
    "sign_config",
]

KeyKind = Literal["full", "write-only"]
_KEY_AAD = b"safehold key v1"
KEY_FILE_VERSION = 2


def canonical_json(doc: dict[str, Any]) -> bytes:
    """The one byte form of *doc* that checksums and MACs are computed over."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _key_checksum(doc: dict[str, Any]) -> str:
    return content_hash(canonical_json({k: v for k, v in doc.items() if k != "checksum"}))


def _key_file_damage(doc: Any) -> str:
    """Why a parsed key file is damaged, or ``""`` if it looks sound."""
    if not isinstance(doc, dict):
        return "it is not a JSON object"
    version = doc.get("version")
    checked = "checksum" in doc or not isinstance(version, int) or version >= KEY_FILE_VERSION
    if checked and doc.get("checksum") != _key_checksum(doc):
        return "its checksum does not match its content"
    if version not in (1, KEY_FILE_VERSION):
        return f"unknown key file version {version!r}"
    try:
        kdf = doc["kdf"]
        _unb64(kdf["salt"])
        _unb64(doc["data"])
        if not all(isinstance(kdf[k], int) and kdf[k] > 0 for k in ("n", "r", "p")):
            return "its kdf parameters are invalid"
    except (KeyError, TypeError, ValueError) as exc:
        return f"a field is missing or invalid ({type(exc).__name__}: {exc})"
    return ""


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
        doc: dict[str, Any] = {
            "version": KEY_FILE_VERSION,
            "kind": kind,
            "created": format_time(datetime.now(UTC)),
            "host": socket.gethostname(),
            "user": getpass.getuser(),
            "kdf": {"name": "scrypt", "n": kdf.n, "r": kdf.r, "p": kdf.p, "salt": _b64(salt)},
            "data": _b64(encrypt(key, payload, aad=_KEY_AAD)),
        }
        doc["checksum"] = _key_checksum(doc)
        key_id = secrets.token_hex(16)
        self._storage.put(f"keys/{key_id}", json.dumps(doc, indent=1).encode())
        return key_id

    # -- opening ----------------------------------------------------------------

    def _all_key_files(self) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
        """Yield ``(id, document or None, why it is damaged or "")`` for every key file."""
        for info in self._storage.list("keys/"):
            key_id = info.name.removeprefix("keys/")
            try:
                doc = json.loads(self._storage.get(info.name))
            except ObjectNotFound:
                continue  # removed meanwhile
            except ValueError as exc:
                yield key_id, None, f"it is not valid JSON ({exc})"
                continue
            why = _key_file_damage(doc)
            yield key_id, (None if why else doc), why

    def _key_files(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """The sound key files (damaged ones are skipped: others may open)."""
        for key_id, doc, _ in self._all_key_files():
            if doc is not None:
                yield key_id, doc

    def damaged_key_files(self) -> list[str]:
        """One message for each damaged key file, naming it."""
        return [
            f"key file keys/{key_id} is damaged: {why}"
            for key_id, _, why in self._all_key_files()
            if why
        ]

    def open(self, passphrase: str) -> Keyring:
        """
        Open the repository's keys with *passphrase*.

        Raises:
            WrongPassword: no key file opens with it, and none is damaged.
            IntegrityError: no key file opens with it and some key file is
                damaged (it is named: it may be the one the password was for),
                or the keyring files are damaged.
        """
        damaged: list[str] = []
        for key_id, doc, why in self._all_key_files():
            if doc is None:
                damaged.append(f"keys/{key_id} ({why})")
                continue
            payload = self._try_key_file(doc, passphrase)
            if payload is None:
                continue
            if doc.get("kind") == "write-only":
                return self._open_write_only(key_id, payload)
            return self._open_full(key_id, payload)
        if damaged:
            raise IntegrityError(
                f"no key file opens with this password, and {len(damaged)} key file"
                f"{'s are' if len(damaged) > 1 else ' is'} damaged: {'; '.join(damaged)}. "
                "If the password is right, its key file is the damaged one: open the "
                "repository with another key"
            )
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

    def verify_rings(self, ring: Keyring) -> list[str]:
        """
        Read every keyring and public keyring file; one message per damaged file.

        The public keyring is what write-only hosts seal new data to, so each
        of its public keys must also match the keyring's (a full key checks that).
        """
        errors = []
        files = [(i.name, ring.index_key) for i in self._storage.list("pubring/")]
        if ring.master is not None:
            ring_key = self._ring_key(ring.master)
            files += [(i.name, ring_key) for i in self._storage.list("keyring/")]
        for name, key in files:
            try:
                doc = json.loads(self._read_envelope(name, key=key))
                for g in doc["generations"]:
                    known = ring.generations.get(g["gen"])
                    if known is not None and _unb64(g["public"]) != known.public:
                        raise IntegrityError(
                            f"{name} is damaged: generation {g['gen']} has another public key"
                        )
            except IntegrityError as exc:
                errors.append(str(exc))
            except ObjectNotFound:
                continue
            except (ValueError, KeyError, TypeError) as exc:
                errors.append(f"{name} is damaged: {type(exc).__name__}: {exc}")
        return errors

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
        """
        Remove a key file; never the one in use, never the last full key.

        A damaged key file can be removed too (it opens nothing).
        """
        infos = {k.id: k for k in self.list(ring.key_id)}
        damaged = [k for k, doc, _ in self._all_key_files() if doc is None]
        key_id = key_id.lower()
        matches = [k for k in [*infos, *damaged] if k.startswith(key_id)] if key_id else []
        if not matches:
            raise KeyNotFound(f"no key file matches {key_id!r}")
        if len(matches) > 1:
            raise UsageError(f"{key_id!r} matches {len(matches)} key files; give more of the id")
        target = matches[0]
        if target == ring.key_id:
            raise RepoError("refusing to remove the key in use; open with another key first")
        full = sum(k.kind == "full" for k in infos.values())
        if target in infos and infos[target].kind == "full" and full == 1:
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


# -- config authentication (docs/format.md § Config) ----------------------------

CONFIG_MAC_VERSION = 2
"""The repository format version from which ``config`` carries a MAC."""


def _config_mac(config: dict[str, Any], index_key: bytes) -> str:
    key = derive_key(index_key, "safehold config v2")
    body = canonical_json({k: v for k, v in config.items() if k != "mac"})
    return blake3.blake3(body, key=key).hexdigest()


def sign_config(config: dict[str, Any], index_key: bytes) -> dict[str, Any]:
    """Return *config* with its ``mac``: keyed by the index key, so writers can check it."""
    return {**config, "mac": _config_mac(config, index_key)}


def config_damage(config: dict[str, Any], index_key: bytes) -> str:
    """
    Why *config* fails authentication, or ``""`` if it passes.

    A config of version 2 or later must carry a MAC; one that carries a MAC is
    checked whatever its version says (a damaged version digit is still caught).
    Version 1 configs have none and pass: they are authenticated by nothing.
    """
    version = config.get("version")
    needs = "mac" in config or not isinstance(version, int) or version >= CONFIG_MAC_VERSION
    if needs and not hmac.compare_digest(str(config.get("mac")), _config_mac(config, index_key)):
        return "config is damaged or was altered: its MAC does not match its content"
    return ""
