"""
Client commands about the service itself: `safehold config backup|restore`, `safehold agents`.

Same connection options, exit codes and output rules as ``cli/service_client.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from safehold.cli import service_output as out
from safehold.cli.service_api import (
    DEFAULT_URL,
    EXIT_CODES,
    Api,
    CaOpt,
    JsonOpt,
    OperationFailed,
    TokenFileOpt,
    TokenOpt,
    UrlOpt,
    connect,
)

__all__ = ["agents", "config_app"]


config_app = typer.Typer(
    help=f"Back up and restore the service's own configuration. {EXIT_CODES}",
    no_args_is_help=True,
)


def _config_operation(action: str, storage_path: Path, name: str, wait: bool, api: Api) -> None:
    body = {
        "Storage": {"StorageKind": "FileShare", "Path": str(storage_path.absolute())},
        "BackupName": name,
    }
    accepted = api.call("POST", f"/safehold/config/$/{action}", sf=False, json=body)
    location = f"/safehold/config/operations/{accepted['Id']}"
    if not wait:
        out.say(f"{action.lower()} accepted: follow {location}")
        return
    status: dict[str, Any] = api.poll(location, sf=False, every=0)
    while status["Status"] == "InProgress":
        status = api.poll(location, sf=False, every=0.3)
    if status["Status"] != "Succeeded":
        raise OperationFailed(
            f"{action.lower()} failed: {status.get('Error', {}).get('Message', '')}"
        )
    out.say(f"configuration {action.lower()} {name}: done")


@config_app.command("backup")
def config_backup(
    storage_path: Annotated[Path, typer.Option("--storage-path", help="A FileShare directory.")],
    name: Annotated[str, typer.Option("--name", help="The backup's name.")],
    wait: Annotated[bool, typer.Option("--wait")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Save policies, registrations, mappings and suspensions as a named backup."""
    _config_operation("Backup", storage_path, name, wait, connect(url, token, token_file, ca_cert))


@config_app.command("restore")
def config_restore(
    storage_path: Annotated[Path, typer.Option("--storage-path", help="A FileShare directory.")],
    name: Annotated[str, typer.Option("--name", help="The backup's name.")],
    wait: Annotated[bool, typer.Option("--wait")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Replace the configuration with the newest backup of that name."""
    _config_operation("Restore", storage_path, name, wait, connect(url, token, token_file, ca_cert))


def agents(
    json_output: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """List the agents the controller has heard from, whether alive, and their running jobs."""
    items = connect(url, token, token_file, ca_cert).call("GET", "/safehold/agents", sf=False)
    if json_output:
        out.print_json(items)
    else:
        out.print_table(out.AGENT_COLUMNS, out.agent_rows(items))
