"""Paging with ContinuationToken and MaxResults, as SF lists do."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from safehold.core.policy import PolicyError

__all__ = ["bounds", "page", "page_read"]

T = TypeVar("T")


def bounds(token: str | None, max_results: int | None) -> tuple[int, int | None]:
    """
    The page asked for: the offset of its first item and its size (None: all).

    The token is the offset of the next item (opaque to clients); MaxResults 0
    or absent means all.

    Raises:
        PolicyError: a token this server did not issue, or a negative MaxResults.
    """
    start = 0
    if token:
        if not token.isdigit():
            raise PolicyError(f"ContinuationToken {token!r} is not one this server issued")
        start = int(token)
    if max_results is not None and max_results < 0:
        raise PolicyError("MaxResults must be 0 or more")
    return start, max_results or None


def page(items: Sequence[Any], token: str | None, max_results: int | None) -> dict[str, Any]:
    """Return ``{"ContinuationToken", "Items"}`` for one page of *items* (see ``bounds``)."""
    start, size = bounds(token, max_results)
    end = len(items) if size is None else min(len(items), start + size)
    return {
        "ContinuationToken": str(end) if end < len(items) else "",
        "Items": list(items[start:end]),
    }


def page_read(
    read: Callable[[int, int | None], Sequence[T]],
    token: str | None,
    max_results: int | None,
    render: Callable[[T], Any],
) -> dict[str, Any]:
    """
    As ``page``, reading only the page: ``read(offset, limit)`` returns up to
    *limit* items from *offset* (one more than the page, to know whether another
    follows), and only the page's items are rendered.
    """
    start, size = bounds(token, max_results)
    rows = read(start, None if size is None else size + 1)
    more = size is not None and len(rows) > size
    rows = rows[:size] if size is not None else rows
    return {
        "ContinuationToken": str(start + len(rows)) if more else "",
        "Items": [render(r) for r in rows],
    }
