"""
Progress reporting, injected into the engine.

The engine never prints. It reports through a ``ProgressSink``; the CLI renders
one as a progress bar or JSON lines, and the service stores the counters for the
API and the web page.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["CountingProgress", "NullProgress", "ProgressCounters", "ProgressSink"]


class ProgressSink(Protocol):
    """
    **Protocol**: receives progress from long-running engine work.

    Implementations must be thread-safe: the engine calls them from worker threads.
    They must be cheap and must not raise; the engine does not catch their errors.
    """

    def begin(self, phase: str, *, total_bytes: int | None, total_items: int | None) -> None:
        """A phase (``scan``, ``backup``, ``restore``, ``check``, ``prune``) starts."""

    def totals(self, *, total_bytes: int | None, total_items: int | None) -> None:
        """The size of the current phase became known (a scan runs beside the work)."""

    def advance(self, *, done_bytes: int = 0, items: int = 0, new_bytes: int = 0) -> None:
        """Work was done: bytes read or written, items finished, bytes newly stored."""

    def warn(self, message: str) -> None:
        """Something the user should know about, which did not stop the work."""

    def end(self) -> None:
        """The current phase is over."""


class NullProgress:
    """A sink that ignores everything."""

    def begin(self, phase: str, *, total_bytes: int | None, total_items: int | None) -> None:
        """Ignore."""

    def totals(self, *, total_bytes: int | None, total_items: int | None) -> None:
        """Ignore."""

    def advance(self, *, done_bytes: int = 0, items: int = 0, new_bytes: int = 0) -> None:
        """Ignore."""

    def warn(self, message: str) -> None:
        """Ignore."""

    def end(self) -> None:
        """Ignore."""


@dataclass
class ProgressCounters:
    """A point-in-time copy of what a ``CountingProgress`` has seen."""

    phase: str = ""
    total_bytes: int | None = None
    total_items: int | None = None
    done_bytes: int = 0
    items: int = 0
    new_bytes: int = 0
    warnings: list[str] = field(default_factory=list)


class CountingProgress:
    """A sink that keeps counters, for the service, tests and renderers to poll."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c = ProgressCounters()

    def begin(self, phase: str, *, total_bytes: int | None, total_items: int | None) -> None:
        """Start a phase and reset the per-phase counters."""
        with self._lock:
            self._c = ProgressCounters(
                phase=phase,
                total_bytes=total_bytes,
                total_items=total_items,
                warnings=self._c.warnings,
            )

    def totals(self, *, total_bytes: int | None, total_items: int | None) -> None:
        """Record the phase's size."""
        with self._lock:
            self._c.total_bytes = total_bytes
            self._c.total_items = total_items

    def advance(self, *, done_bytes: int = 0, items: int = 0, new_bytes: int = 0) -> None:
        """Add to the counters."""
        with self._lock:
            self._c.done_bytes += done_bytes
            self._c.items += items
            self._c.new_bytes += new_bytes

    def warn(self, message: str) -> None:
        """Remember a warning."""
        with self._lock:
            self._c.warnings.append(message)

    def end(self) -> None:
        """Nothing to do: the counters stay readable."""

    def snapshot(self) -> ProgressCounters:
        """Return a copy of the counters."""
        with self._lock:
            c = self._c
            return ProgressCounters(
                c.phase,
                c.total_bytes,
                c.total_items,
                c.done_bytes,
                c.items,
                c.new_bytes,
                list(c.warnings),
            )
