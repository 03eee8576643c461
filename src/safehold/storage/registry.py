"""
Open a storage from a repository URL.

Backends are registered explicitly in ``_factories`` (no import side effects);
the composition root is the only caller. A URL is a plain path, ``file://PATH``,
or ``SCHEME://...`` for a backend that registers that scheme.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from safehold.core.errors import UsageError
from safehold.storage.base import Storage

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


def _factories() -> dict[str, Factory]:
    return {"file": _file, "memory": _memory}


def schemes() -> list[str]:
    """Return the URL schemes that have a backend."""
    return sorted(_factories())


def _scheme(url: str) -> str:
    if "://" not in url:
        return "file"
    return url.split("://", 1)[0].lower()


def open_storage(url: str) -> Storage:
    """
    Return the storage that *url* names.

    Raises:
        UsageError: the URL is empty or its scheme has no backend.
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
    return factory(url)


def redact_url(url: str) -> str:
    """Return *url* with any user info and query string removed, for messages."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"
