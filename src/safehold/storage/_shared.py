"""
Helpers shared by the network backends (Azure, S3, SMB): timeouts, URL parsing,
key prefixes and the range check. Private to ``safehold.storage``.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from safehold.core.errors import UsageError
from safehold.storage.errors import ReadRangeError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "check_offsets",
    "check_range",
    "env_value",
    "join_prefix",
    "parse_bucket_url",
    "redact_url",
]

# Every request has a deadline, so a dead or stalled server is reported as
# StorageUnavailable instead of hanging a backup; the retry wrapper decides
# whether to try again. Connecting is quick or never; reads of a 16 MiB pack
# over a slow link need longer, and this is the idle time, not the total.
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_TIMEOUT = 60.0


def redact_url(url: str) -> str:
    """
    Return *url* without user info, query string or fragment, for messages.

    Whatever the URL holds (a password in ``user:pass@``, a SAS token in the
    query), only scheme, host, port and path survive.
    """
    if "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: leave it out
        port = None
    if port:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}{parts.path}"


def env_value(env: Mapping[str, str], key: str) -> str | None:
    """Return ``env[key]``, treating an empty value as unset."""
    value = env.get(key, "")
    return value or None


def parse_bucket_url(url: str, scheme: str, what: str) -> tuple[str, str]:
    """
    Split ``SCHEME://BUCKET[/prefix]`` into the bucket and the prefix.

    Args:
        url: the repository URL.
        scheme: the expected scheme, lower case.
        what: what the first component is called in messages ("container", "bucket").

    Returns:
        The bucket (container) name and the prefix without slashes at either end.

    Raises:
        UsageError: the URL has another scheme, user info, a query, or no bucket.
    """
    parts = urlsplit(url)
    shown = redact_url(url)
    if parts.scheme.lower() != scheme:
        raise UsageError(f"not a {scheme}:// URL: {shown}")
    if "@" in parts.netloc or parts.query:
        # Credentials come from the environment, never from the URL: URLs end
        # up in logs, shell history and job records.
        raise UsageError(f"{shown}: put credentials in environment variables, not in the URL")
    bucket = unquote(parts.netloc)
    if not bucket:
        raise UsageError(
            f"{shown}: the {what} name is missing ({scheme}://{what.upper()}[/prefix])"
        )
    return bucket, unquote(parts.path).strip("/")


def join_prefix(prefix: str, name: str) -> str:
    """Return the key for *name* under *prefix* (``prefix/name``, or *name* alone)."""
    return f"{prefix}/{name}" if prefix else name


def check_range(name: str, offset: int, length: int | None, data: bytes, location: str) -> bytes:
    """
    Return *data* if it is as long as asked for.

    Raises:
        ReadRangeError: *length* was given and *data* is shorter.
    """
    if length is not None and len(data) != length:
        raise ReadRangeError(
            f"{name}: asked for {length} bytes at {offset}, got {len(data)} in {location}"
        )
    return data


def check_offsets(offset: int, length: int | None) -> None:
    """
    Refuse negative offsets and lengths before they reach a server.

    Raises:
        UsageError: *offset* or *length* is negative.
    """
    if offset < 0 or (length is not None and length < 0):
        raise UsageError(f"invalid range: offset {offset}, length {length}")
