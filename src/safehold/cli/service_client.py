"""
Client commands of the backup-restore service: ``safehold policy …`` and ``safehold partition …``.

They talk to the controller(s) given by ``--url`` (``SAFEHOLD_URL``, default
``http://127.0.0.1:19080``; several comma-separated) with an API token from
``--token``/``SAFEHOLD_TOKEN`` or ``--token-file``, through
``safehold.client.ControllerClient`` (``cli/service_api.py``). Lists and shows
print tables or lines, or the controller's JSON with ``--json``
(``cli/service_output.py``). A restore overwrites a partition's live data, so it
asks first on a terminal; without one it needs ``--yes``.

Exit codes: 0 ok; 1 failure (or the job failed, or a restore was not confirmed);
2 bad input (HTTP 400, or a restore without ``--yes`` and without a terminal);
11 conflict (HTTP 409, a job is already running); 16 not found (HTTP 404).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

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
    entity_path,
)
from safehold.core.errors import UsageError

__all__ = ["partition_app", "policy_app"]

err_console = Console(stderr=True)

policy_app = typer.Typer(
    help=f"Backup policies and where they are enabled. {EXIT_CODES}", no_args_is_help=True
)
partition_app = typer.Typer(
    help=f"Partitions: register, back up, restore, list. {EXIT_CODES}", no_args_is_help=True
)

AppOpt = Annotated[str | None, typer.Option("--application", help="fabric:/App")]
SvcOpt = Annotated[str | None, typer.Option("--service", help="fabric:/App/Service")]
PidOpt = Annotated[str | None, typer.Option("--partition-id", help="A partition GUID.")]


def _read_json(file: Path) -> Any:
    text = typer.get_text_stream("stdin").read() if str(file) == "-" else file.read_text()
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{file} is not JSON: {exc}") from exc


@policy_app.command("create")
def policy_create(
    file: Annotated[
        Path, typer.Argument(help="A BackupPolicyDescription JSON file ('-' for stdin).")
    ],
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Create a backup policy from a JSON file."""
    body = _read_json(file)
    connect(url, token, token_file, ca_cert).call(
        "POST", "/BackupRestore/BackupPolicies/$/Create", json=body
    )
    out.say(f"created policy {body.get('Name')}")


@policy_app.command("update")
def policy_update(
    name: str,
    file: Annotated[Path, typer.Argument(help="The new BackupPolicyDescription JSON file.")],
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Replace policy NAME; secrets given as **** keep their stored values."""
    body = _read_json(file)
    connect(url, token, token_file, ca_cert).call(
        "POST", f"/BackupRestore/BackupPolicies/{name}/$/Update", json=body
    )
    out.say(f"updated policy {name}")


@policy_app.command("list")
def policy_list(
    json_output: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """List the backup policies (secrets redacted)."""
    items = connect(url, token, token_file, ca_cert).all_pages("/BackupRestore/BackupPolicies")
    if json_output:
        out.print_json(items)
    else:
        out.print_table(out.POLICY_COLUMNS, out.policy_rows(items))


@policy_app.command("show")
def policy_show(
    name: str,
    json_output: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Show one backup policy (secrets redacted)."""
    doc = connect(url, token, token_file, ca_cert).call(
        "GET", f"/BackupRestore/BackupPolicies/{name}"
    )
    if json_output:
        out.print_json(doc)
        return
    for column, value in zip(out.POLICY_COLUMNS, out.policy_rows([doc])[0], strict=True):
        out.say(f"{column}: {value}")
    for key, value in (doc.get("Storage") or {}).items():  # secrets come back as ****
        out.say(f"Storage.{key}: {value}")


@policy_app.command("delete")
def policy_delete(
    name: str,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Delete a backup policy that nothing uses."""
    connect(url, token, token_file, ca_cert).call(
        "POST", f"/BackupRestore/BackupPolicies/{name}/$/Delete"
    )
    out.say(f"deleted policy {name}")


@policy_app.command("enable")
def policy_enable(
    name: str,
    application: AppOpt = None,
    service: SvcOpt = None,
    partition_id: PidOpt = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Enable periodic backup with policy NAME on an application, service or partition."""
    path = entity_path(application, service, partition_id)
    connect(url, token, token_file, ca_cert).call(
        "POST", f"{path}/$/EnableBackup", json={"BackupPolicyName": name}
    )
    out.say(f"enabled {name} on {path}")


@policy_app.command("disable")
def policy_disable(
    application: AppOpt = None,
    service: SvcOpt = None,
    partition_id: PidOpt = None,
    clean: Annotated[bool, typer.Option("--clean", help="Also delete the backups.")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Disable backup where it was enabled (--clean deletes the backups too)."""
    path = entity_path(application, service, partition_id)
    connect(url, token, token_file, ca_cert).call(
        "POST", f"{path}/$/DisableBackup", json={"CleanBackup": clean}
    )
    out.say(f"disabled backup on {path}")


def _simple(action: str) -> Any:
    def command(
        application: AppOpt = None,
        service: SvcOpt = None,
        partition_id: PidOpt = None,
        url: UrlOpt = DEFAULT_URL,
        token: TokenOpt = None,
        token_file: TokenFileOpt = None,
        ca_cert: CaOpt = None,
    ) -> None:
        path = entity_path(application, service, partition_id)
        connect(url, token, token_file, ca_cert).call("POST", f"{path}/$/{action}Backup")
        done = {"Suspend": "suspended", "Resume": "resumed"}[action]
        out.say(f"{done} backup on {path}")

    command.__doc__ = f"{action} periodic backup of an application, service or partition."
    return command


policy_app.command("suspend")(_simple("Suspend"))
policy_app.command("resume")(_simple("Resume"))


@partition_app.command("add")
def partition_add(
    application: Annotated[str, typer.Option("--application", help="fabric:/App")],
    service: Annotated[str, typer.Option("--service", help="fabric:/App/Service")],
    partition_id: Annotated[str, typer.Option("--partition-id", help="The partition's GUID.")],
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="dir:PATH, command:CMD, state:AGENT, postgres:URL, mariadb:URL or redis:URL "
            "(docs/databases.md)",
        ),
    ],
    restore_to: Annotated[
        str | None,
        typer.Option(
            "--restore-to",
            help="command:CMD or file:PATH (command sources); pgdata:PATH, mysqldata:PATH "
            "or dir:PATH (database sources)",
        ),
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="Only this agent backs it up.")
    ] = None,
    before: Annotated[
        str | None,
        typer.Option("--before", help="Shell command run before each backup; failing fails it."),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option("--after", help="Shell command run after each backup, even a failed one."),
    ] = None,
    hook_timeout: Annotated[
        float | None,
        typer.Option("--hook-timeout", min=0.1, help="Seconds each hook may run (default 300)."),
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Register a partition whose data comes from SOURCE, with optional hooks around backups."""
    body: dict[str, Any] = {
        "ApplicationName": application,
        "ServiceName": service,
        "PartitionId": partition_id,
        "Source": source,
        "RestoreTo": restore_to,
        "Agent": agent,
    }
    if before or after:
        hooks: dict[str, Any] = {"Before": before, "After": after}
        if hook_timeout is not None:
            hooks["TimeoutSeconds"] = hook_timeout
        body["Hooks"] = hooks
    elif hook_timeout is not None:
        raise UsageError("--hook-timeout needs --before or --after")
    done = connect(url, token, token_file, ca_cert).call(
        "POST", "/safehold/partitions", sf=False, json=body
    )
    out.say(f"registered partition {done['PartitionId']} of {done['ServiceName']}")


@partition_app.command("remove")
def partition_remove(
    partition_id: str,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Forget a partition's registration (its backups stay)."""
    connect(url, token, token_file, ca_cert).call(
        "DELETE", f"/safehold/partitions/{partition_id}", sf=False
    )
    out.say(f"removed partition {partition_id}")


@partition_app.command("list")
def partition_list(
    json_output: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """List the registered partitions with their backup health."""
    api = connect(url, token, token_file, ca_cert)
    parts: list[dict[str, Any]] = api.all_pages("/safehold/partitions", sf=False)
    health = {h["PartitionId"]: h for h in api.call("GET", "/safehold/health", sf=False)}
    if json_output:
        out.print_json(
            [{**p, "Health": health.get(p["PartitionId"])} for p in parts],
        )
        return
    out.print_table(out.PARTITION_COLUMNS, out.partition_rows(parts, health))


@partition_app.command("backups")
def partition_backups(
    partition_id: str,
    latest: Annotated[bool, typer.Option("--latest", help="Only the newest backup.")] = False,
    json_output: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """List a partition's backups (full BackupIds, for ``restore --backup-id``)."""
    api = connect(url, token, token_file, ca_cert)
    items = api.all_pages(
        f"/Partitions/{partition_id}/$/GetBackups", params={"Latest": str(latest).lower()}
    )
    if json_output:
        out.print_json(items)
    else:
        out.print_table(out.BACKUP_COLUMNS, out.backup_rows(items))


def _wait(api: Api, partition_id: str, kind: str) -> dict[str, Any]:
    """Poll a job's progress until it ends: a bar on a terminal's stderr, silence otherwise."""
    path = f"/Partitions/{partition_id}/$/Get{kind}Progress"
    key = f"{kind}State"
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    ) as bar:
        task = bar.add_task(f"{kind.lower()} accepted", total=None)
        info: dict[str, Any] = api.poll(path, every=0)
        while True:
            state = info.get(key)
            counters = info.get("Progress") or {}
            bar.update(
                task,
                description=f"{kind.lower()}: {state}",
                completed=counters.get("done_bytes") or 0,
                total=counters.get("total_bytes"),
            )
            if state in ("Success", "Failure", "Timeout"):
                return info
            info = api.poll(path)


def _finish(info: dict[str, Any], kind: str) -> None:
    state = info[f"{kind}State"]
    if state != "Success":
        err = info.get("FailureError") or {}
        raise OperationFailed(
            f"{kind.lower()} {state}: {err.get('Code', '')} {err.get('Message', '')}"
        )


@partition_app.command("backup")
def partition_backup(
    partition_id: str,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the end, with a progress bar.")
    ] = False,
    timeout: Annotated[int, typer.Option("--timeout", help="BackupTimeout in minutes.")] = 10,
    storage_path: Annotated[
        Path | None, typer.Option("--storage-path", help="Back up to this FileShare path instead.")
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Take a full backup of a partition now."""
    api = connect(url, token, token_file, ca_cert)
    body = None
    if storage_path is not None:
        body = {"BackupStorage": {"StorageKind": "FileShare", "Path": str(storage_path.absolute())}}
    api.call(
        "POST", f"/Partitions/{partition_id}/$/Backup", params={"BackupTimeout": timeout}, json=body
    )
    if not wait:
        out.say(
            "backup accepted; follow it with: safehold partition backup-progress " + partition_id
        )
        return
    info = _wait(api, partition_id, "Backup")
    _finish(info, "Backup")
    size = (info.get("Progress") or {}).get("done_bytes")
    read = f" ({out.human_size(size)} read)" if size is not None else ""
    out.say(f"backup {info['BackupId']} stored at {info['BackupLocation']}{read}")


def _progress_command(kind: str) -> Any:
    def command(
        partition_id: str,
        json_output: JsonOpt = False,
        url: UrlOpt = DEFAULT_URL,
        token: TokenOpt = None,
        token_file: TokenFileOpt = None,
        ca_cert: CaOpt = None,
    ) -> None:
        info = connect(url, token, token_file, ca_cert).call(
            "GET", f"/Partitions/{partition_id}/$/Get{kind}Progress"
        )
        if json_output:
            out.print_json(info)
        else:
            print(out.progress_line(info, kind))

    command.__doc__ = f"Show the latest {kind.lower()}'s state and progress."
    return command


partition_app.command("backup-progress")(_progress_command("Backup"))
partition_app.command("restore-progress")(_progress_command("Restore"))


def _confirm_restore(api: Api, partition_id: str, what: str, yes: bool) -> None:
    """Ask before a restore replaces live data; refuse without a terminal unless --yes."""
    if yes:
        return
    reg = api.call("GET", f"/safehold/partitions/{partition_id}", sf=False)
    target = reg.get("RestoreTo") or reg["Source"]
    question = (
        f"Restoring {what} replaces the live data of partition {partition_id} ({target}). Continue?"
    )
    if not sys.stdin.isatty():
        raise UsageError(
            f"restoring {what} would replace the live data of partition {partition_id} "
            f"({target}); confirm on a terminal, or pass --yes"
        )
    if not typer.confirm(question, default=False, err=True):
        raise OperationFailed("restore cancelled; nothing was changed")


@partition_app.command("restore")
def partition_restore(
    partition_id: str,
    backup_id: Annotated[str | None, typer.Option("--backup-id")] = None,
    backup_location: Annotated[str | None, typer.Option("--backup-location")] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Restore the newest backup.")] = False,
    at: Annotated[
        str | None, typer.Option("--at", help="The newest backup at or before this time.")
    ] = None,
    from_partition: Annotated[
        str | None, typer.Option("--from-partition", help="With --latest/--at: whose backups.")
    ] = None,
    allow_other_partition: Annotated[
        bool,
        typer.Option(
            "--allow-other-partition", help="Consent to restore another partition's backup."
        ),
    ] = False,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", help="Replace the live data without asking (needed in scripts)."
        ),
    ] = False,
    wait: Annotated[bool, typer.Option("--wait")] = False,
    timeout: Annotated[int, typer.Option("--timeout", help="RestoreTimeout in minutes.")] = 10,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """
    Restore a partition from a backup (by id, the latest, or at a point in time).

    The partition's live data is replaced: on a terminal you are asked first;
    without a terminal, --yes is required.
    """
    api = connect(url, token, token_file, ca_cert)
    body: dict[str, Any] = {}
    if backup_id:
        if backup_location is None:
            found = api.call("GET", f"/Partitions/{from_partition or partition_id}/$/GetBackups")[
                "Items"
            ]
            match = [b for b in found if b["BackupId"] == backup_id]
            if not match:
                raise UsageError(f"backup {backup_id} not found; give --backup-location")
            backup_location = match[0]["BackupLocation"]
        body = {"BackupId": backup_id, "BackupLocation": backup_location}
    if from_partition:
        body["SourcePartitionId"] = from_partition
    params: dict[str, Any] = {"RestoreTimeout": timeout}
    if latest:
        params["Latest"] = "true"
    if at:
        params["RestorePointTime"] = at
    if allow_other_partition:
        params["AllowRestoreToOtherPartition"] = "true"
    what = (
        f"backup {backup_id}"
        if backup_id
        else ("the backup at " + at if at else "the latest backup")
    )
    _confirm_restore(api, partition_id, what, yes)
    api.call("POST", f"/Partitions/{partition_id}/$/Restore", params=params, json=body)
    if not wait:
        out.say(
            "restore accepted; follow it with: safehold partition restore-progress " + partition_id
        )
        return
    info = _wait(api, partition_id, "Restore")
    _finish(info, "Restore")
    out.say(out.restore_result(info))
