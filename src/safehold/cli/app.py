"""The Typer application that every command module registers on."""

from __future__ import annotations

from typing import Annotated

import typer

from safehold import __version__
from safehold.cli.common import set_limits

__all__ = ["app"]

app = typer.Typer(
    name="safehold",
    help="Backup and restore for stateful applications.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # --install-completion / --show-completion for bash, zsh, fish and PowerShell.
    add_completion=True,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"safehold {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[  # noqa: ARG001 - handled by its eager callback
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
    limit_upload: Annotated[
        str | None,
        typer.Option(
            "--limit-upload",
            envvar="SAFEHOLD_LIMIT_UPLOAD",
            help="Limit uploads to the repository: KiB/s, or e.g. 500K, 2M (per second).",
        ),
    ] = None,
    limit_download: Annotated[
        str | None,
        typer.Option(
            "--limit-download",
            envvar="SAFEHOLD_LIMIT_DOWNLOAD",
            help="Limit downloads from the repository: KiB/s, or e.g. 500K, 2M (per second).",
        ),
    ] = None,
) -> None:
    """Backup and restore for stateful applications."""
    set_limits(limit_upload, limit_download)
