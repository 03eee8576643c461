"""Paging with ContinuationToken and MaxResults, as SF lists do."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safehold.core.policy import PolicyError

__all__ = ["page"]


def page(items: Sequence[Any], token: str | None, max_results: int | None) -> dict[str, Any]:
    """
    Return ``{"ContinuationToken", "Items"}`` for one page of *items*.

    The token is the offset of the next item (opaque to clients); an empty token
    means the list is complete. MaxResults 0 or absent means all.
    """
    start = 0
    if token:
        if not token.isdigit():
            raise PolicyError(f"ContinuationToken {token!r} is not one this server issued")
        start = int(token)
    if max_results is not None and max_results < 0:
        raise PolicyError("MaxResults must be 0 or more")
    end = len(items) if not max_results else min(len(items), start + max_results)
    return {
        "ContinuationToken": str(end) if end < len(items) else "",
        "Items": list(items[start:end]),
    }
