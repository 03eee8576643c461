"""
Cryptographic building blocks: ids, hashes, AEAD, sealing, passphrase KDF.

Everything here is a thin, typed layer over ``cryptography`` and ``blake3``;
no primitive is implemented by hand. See ``docs/format.md`` § Keys.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from safehold.repo.compress import compress, decompress

__all__ = [
    "NONCE_SIZE",
    "TAG_SIZE",
    "DecryptError",
    "Generation",
    "content_hash",
    "decrypt",
    "derive_key",
    "encrypt",
    "open_envelope",
    "scrypt_key",
    "seal_envelope",
    "seal_key",
    "unseal_key",
]

NONCE_SIZE = 12
TAG_SIZE = 16
ENVELOPE_MAGIC = b"SHEV"
ENVELOPE_VERSION = 1
MODE_SYMMETRIC = 1
MODE_SEALED = 2
_ENV_HEAD = struct.Struct("<4sBBI")


class DecryptError(Exception):
    """Authentication failed: wrong key, or the bytes were changed."""


def content_hash(data: bytes | memoryview) -> str:
    """Return the BLAKE3 hex digest that names a stored file."""
    return blake3.blake3(data, max_threads=1).hexdigest()


def derive_key(secret: bytes, info: str, salt: bytes | None = None) -> bytes:
    """Derive a 32-byte key from *secret* with HKDF-SHA256."""
    return HKDF(hashes.SHA256(), 32, salt, info.encode()).derive(secret)


def encrypt(key: bytes, plaintext: bytes | memoryview, aad: bytes | None = None) -> bytes:
    """Return ``nonce ‖ AES-256-GCM(key, nonce, plaintext, aad)`` with a random nonce."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, data: bytes | memoryview, aad: bytes | None = None) -> bytes:
    """Reverse ``encrypt``; raise ``DecryptError`` if authentication fails."""
    if len(data) < NONCE_SIZE + TAG_SIZE:
        raise DecryptError("ciphertext too short")
    view = memoryview(data)
    try:
        return AESGCM(key).decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], aad)
    except InvalidTag as exc:
        raise DecryptError("authentication failed") from exc


def scrypt_key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    """Stretch a passphrase into a 32-byte key."""
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


@dataclass(frozen=True)
class Generation:
    """One generation of data keys: an X25519 key pair (private is None on write-only hosts)."""

    gen: int
    public: bytes
    private: bytes | None = None

    @classmethod
    def new(cls, gen: int) -> Generation:
        """Make a fresh key pair."""
        priv = X25519PrivateKey.generate()
        pub = priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(gen, pub, priv.private_bytes_raw())


def seal_key(gen: Generation) -> tuple[bytes, bytes]:
    """
    Make a fresh object key sealed to *gen*.

    Returns:
        ``(key, ephemeral_public)``: the key to encrypt with, and what a reader
        holding the generation's private key needs to derive it again.
    """
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    shared = eph.exchange(X25519PublicKey.from_public_bytes(gen.public))
    return derive_key(shared, "safehold seal v1", salt=eph_pub + gen.public), eph_pub


def unseal_key(gen: Generation, eph_pub: bytes) -> bytes:
    """Derive the object key of an object sealed to *gen* with ephemeral key *eph_pub*."""
    if gen.private is None:
        raise DecryptError("this key cannot read data (write-only)")
    priv = X25519PrivateKey.from_private_bytes(gen.private)
    shared = priv.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    return derive_key(shared, "safehold seal v1", salt=eph_pub + gen.public)


def seal_envelope(
    payload: bytes, *, key: bytes | None = None, gen: Generation | None = None
) -> bytes:
    """
    Compress and encrypt *payload* into an envelope (``docs/format.md`` § Envelopes).

    Pass *key* for a symmetric envelope, or *gen* to seal it to a generation.
    """
    if key is not None:
        head = _ENV_HEAD.pack(ENVELOPE_MAGIC, ENVELOPE_VERSION, MODE_SYMMETRIC, 0)
        k = key
    elif gen is not None:
        k, eph = seal_key(gen)
        head = _ENV_HEAD.pack(ENVELOPE_MAGIC, ENVELOPE_VERSION, MODE_SEALED, gen.gen) + eph
    else:
        raise ValueError("seal_envelope needs a key or a generation")
    return head + encrypt(k, compress(payload), aad=head)


def envelope_generation(data: bytes) -> tuple[int, int]:
    """Return ``(mode, gen)`` from an envelope's header; ``DecryptError`` if it is not one."""
    if len(data) < _ENV_HEAD.size:
        raise DecryptError("not an envelope: too short")
    magic, version, mode, gen = _ENV_HEAD.unpack_from(data)
    if magic != ENVELOPE_MAGIC or version != ENVELOPE_VERSION or mode not in (1, 2):
        raise DecryptError("not an envelope: bad header")
    return mode, gen


def open_envelope(
    data: bytes, *, key: bytes | None = None, gens: dict[int, Generation] | None = None
) -> bytes:
    """Decrypt and decompress an envelope; ``DecryptError`` on any failure."""
    mode, gen = envelope_generation(data)
    if mode == MODE_SYMMETRIC:
        if key is None:
            raise DecryptError("symmetric envelope, but no key given")
        head_len = _ENV_HEAD.size
        k = key
    else:
        g = (gens or {}).get(gen)
        if g is None:
            raise DecryptError(f"sealed to unknown key generation {gen}")
        head_len = _ENV_HEAD.size + 32
        k = unseal_key(g, data[_ENV_HEAD.size : head_len])
    plain = decrypt(k, data[head_len:], aad=data[:head_len])
    try:
        return decompress(plain)
    except zstandard.ZstdError as exc:
        raise DecryptError("bad compressed payload") from exc
