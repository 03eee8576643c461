"""
Open a storage from a repository URL.

Backends are registered explicitly in ``_factories`` (no import side effects:
each factory imports its backend, and so its SDK, only when used); the
composition root is the only caller. A URL is a plain path, ``file://PATH``,
or ``SCHEME://...`` for a backend that registers that scheme:

    azure://CONTAINER[/prefix]            AZURE_STORAGE_CONNECTION_STRING, or
                                          AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY
                                          or AZURE_STORAGE_SAS_TOKEN
    s3://BUCKET[/prefix]                  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
                                          AWS_REGION, AWS_ENDPOINT_URL
    smb://[USER@]HOST[:PORT]/SHARE[/path] SAFEHOLD_SMB_USER, SAFEHOLD_SMB_PASSWORD

Credentials come from the environment only; URLs are shown in messages and
logs through ``redact_url``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from safehold.core.errors import UsageError
from safehold.storage._shared import redact_url
from safehold.storage.base import Storage
from safehold.storage.retry import DEFAULT_BUDGET, RetryingStorage

__all__ = ["open_storage", "redact_url", "schemes"]

Factory = Callable[[str], Storage]


def _file(url: str) -> Storage:
    from safehold.storage.file import FileStorage

    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"file URLs take a local path, not host {parts.netloc!r}")
        path = unquote(parts.path)
    else:
        path = url
    if not path:
        raise UsageError("the repository path is empty")
    return FileStorage(Path(path).expanduser())


def _memory(url: str) -> Storage:
    from safehold.storage.memory import MemoryStorage

    del url
    return MemoryStorage()


def _azure(url: str) -> Storage:
    from safehold.storage.azure import from_url

    return from_url(url, os.environ)


def _s3(url: str) -> Storage:
    from safehold.storage.s3 import from_url

    return from_url(url, os.environ)


def _smb(url: str) -> Storage:
    from safehold.storage.smb import from_url

    return from_url(url, os.environ)


def _factories() -> dict[str, Factory]:
    return {
        "azure": _azure,
        "file": _file,
        "memory": _memory,
        "s3": _s3,
        "smb": _smb,
    }


def schemes() -> list[str]:
    """Return the URL schemes that have a backend."""
    return sorted(_factories())


def _scheme(url: str) -> str:
    if "://" not in url:
        return "file"
    return url.split("://", 1)[0].lower()


def open_storage(url: str, *, retry_budget: float | None = DEFAULT_BUDGET) -> Storage:
    """
    Return the storage that *url* names.

    Args:
        url: a path or a ``SCHEME://`` URL.
        retry_budget: wrap the storage in ``RetryingStorage`` with this budget
            (seconds); ``None`` returns the bare backend.

    Raises:
        UsageError: the URL is empty or malformed, its scheme has no backend,
            or the backend's settings (credentials) are missing.
    """
    if not url:
        raise UsageError("no repository given: pass --repo or set SAFEHOLD_REPO")
    scheme = _scheme(url)
    factory = _factories().get(scheme)
    if factory is None:
        raise UsageError(
            f"unknown storage scheme {scheme!r} in the repository URL; "
            f"known schemes: {', '.join(schemes())}"
        )
    storage = factory(url)
    if retry_budget is None:
        return storage
    return RetryingStorage(storage, budget=retry_budget)
