"""
Encryption at rest for the secrets inside policies (passwords, keys, connection strings).

A ``SecretBox`` seals individual JSON string values with Fernet (AES-128-CBC +
HMAC-SHA256 from ``cryptography``) under the server's key. Sealed values carry a
prefix so that a catalog row shows at a glance which fields are protected.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from safehold.core.errors import SafeholdError, UsageError

__all__ = ["SECRET_KEYS", "SecretBox", "load_or_create_key"]

SECRET_KEYS = frozenset(
    {"PrimaryPassword", "SecondaryPassword", "ConnectionString", "SecretAccessKey"}
)
_PREFIX = "sealed:v1:"


class SecretBox:
    """Seals and opens secret values with one server key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise UsageError("the secret key must be 32 url-safe base64-encoded bytes") from exc

    def seal(self, value: str) -> str:
        """Return *value* encrypted, as a string."""
        return _PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, value: str) -> str:
        """Return the plaintext of a sealed value (plain values pass through)."""
        if not value.startswith(_PREFIX):
            return value
        try:
            return self._fernet.decrypt(value[len(_PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise SafeholdError(
                "a secret in the catalog cannot be decrypted: the server's secret key changed"
            ) from exc

    def seal_storage(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Return a storage JSON object with its secret fields sealed."""
        return {
            k: self.seal(v) if k in SECRET_KEYS and isinstance(v, str) else v
            for k, v in doc.items()
        }

    def open_storage(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Return a storage JSON object with its secret fields opened."""
        return {
            k: self.open(v) if k in SECRET_KEYS and isinstance(v, str) else v
            for k, v in doc.items()
        }


def load_or_create_key(path: Path | None) -> bytes:
    """
    Return the server key: ``SAFEHOLD_SECRET_KEY`` if set, else the key file at *path*.

    A missing key file is created (mode 0600) with a fresh key.
    """
    env = os.environ.get("SAFEHOLD_SECRET_KEY")
    if env:
        return env.encode()
    if path is None:
        raise UsageError("no secret key: set SAFEHOLD_SECRET_KEY or give a key file")
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = base64.urlsafe_b64encode(os.urandom(32))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key
