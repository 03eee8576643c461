"""A Rich progress bar that implements the engine's ``ProgressSink``."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

__all__ = ["RichProgress"]


class RichProgress:
    """Renders read/written bytes, new bytes, items and an ETA on stderr."""

    def __init__(self, console: Console) -> None:
        self._p = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[items]} items, {task.fields[new]} new"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None
        self._lock = threading.Lock()
        self._items = 0
        self._new = 0

    def begin(self, phase: str, *, total_bytes: int | None, total_items: int | None) -> None:
        """Start a bar for the phase."""
        with self._lock:
            if self._task is None:
                self._p.start()
            else:
                self._p.remove_task(self._task)
            self._items = self._new = 0
            self._task = self._p.add_task(phase, total=total_bytes, items=0, new="0 B")

    def totals(self, *, total_bytes: int | None, total_items: int | None) -> None:
        """Set the bar's length once the scan knows it."""
        if self._task is not None:
            self._p.update(self._task, total=total_bytes)

    def advance(self, *, done_bytes: int = 0, items: int = 0, new_bytes: int = 0) -> None:
        """Move the bar."""
        if self._task is None:
            return
        with self._lock:
            self._items += items
            self._new += new_bytes
            n, new = self._items, self._new
        self._p.update(self._task, advance=done_bytes, items=n, new=_human(new))

    def warn(self, message: str) -> None:
        """Print a warning above the bar."""
        self._p.console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)

    def end(self) -> None:
        """Remove the bar."""
        with self._lock:
            if self._task is not None:
                self._p.stop()
                self._task = None


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
