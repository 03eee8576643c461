"""The Typer application that every command module registers on."""

from __future__ import annotations

import typer

__all__ = ["app"]

app = typer.Typer(
    name="safehold",
    help="Backup and restore for stateful applications.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
