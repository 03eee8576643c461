"""Client and server commands of the backup-restore service (serve, policy, partition, agent)."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the service's commands to *app*."""
    del app
