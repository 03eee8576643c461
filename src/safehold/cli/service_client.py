"""
Client commands of the backup-restore service, over HTTP(S) with httpx.

``safehold policy …`` and ``safehold partition …`` talk to a controller given
by ``--url`` (``SAFEHOLD_URL``, default ``http://127.0.0.1:19080``) with an API
token from ``--token``/``SAFEHOLD_TOKEN`` or ``--token-file``.

Exit codes: 0 ok; 1 failure (or the job failed); 2 bad input (HTTP 400);
11 conflict (HTTP 409, a job is already running); 16 not found (HTTP 404).
"""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from safehold.core.errors import ExitCode, SafeholdError, UsageError
from safehold.core.policy import id_from_name

__all__ = ["ApiClient", "config_app", "partition_app", "policy_app"]

console = Console()
V = {"api-version": "6.4"}

EXIT_CODES = (
    "Exit codes: 0 ok; 1 failure (the job failed); 2 bad input (HTTP 400); "
    "11 conflict (HTTP 409); 16 not found (HTTP 404)."
)
policy_app = typer.Typer(
    help=f"Backup policies and where they are enabled. {EXIT_CODES}", no_args_is_help=True
)
partition_app = typer.Typer(
    help=f"Partitions: register, back up, restore, list. {EXIT_CODES}", no_args_is_help=True
)

UrlOpt = Annotated[str, typer.Option("--url", envvar="SAFEHOLD_URL", help="The controller's URL.")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="SAFEHOLD_TOKEN", help="API token.", show_default=False),
]
TokenFileOpt = Annotated[
    Path | None, typer.Option("--token-file", help="Read the API token from a file.")
]
CaOpt = Annotated[
    Path | None, typer.Option("--ca-cert", help="CA bundle to verify the controller's TLS.")
]
DEFAULT_URL = "http://127.0.0.1:19080"


class ApiError(SafeholdError):
    """The controller refused a request."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.code = code
        self.http_status = status
        self.exit_code = {
            400: ExitCode.USAGE,
            404: ExitCode.NOT_FOUND,
            409: ExitCode.LOCKED,
        }.get(status, ExitCode.FAILURE)


class OperationFailed(SafeholdError):
    """A backup, restore or configuration operation ended without success (exit 1)."""

    exit_code = ExitCode.FAILURE


class ApiClient:
    """A thin client of the controller's REST API."""

    def __init__(self, url: str, token: str, *, verify: bool | str = True) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            verify=ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify,
            timeout=60,
        )

    def request(self, method: str, path: str, *, sf: bool = True, **kwargs: Any) -> Any:
        """Send a request; raise ``ApiError`` for an error answer; return the JSON or None."""
        if sf:
            kwargs["params"] = {**V, **kwargs.get("params", {})}
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise SafeholdError(f"cannot reach the controller: {exc}") from exc
        if resp.status_code >= 400:
            try:
                err = resp.json()["Error"]
                raise ApiError(resp.status_code, err["Code"], err["Message"])
            except (ValueError, KeyError, TypeError):
                raise ApiError(resp.status_code, "E_FAIL", resp.text[:200]) from None
        if not resp.content:
            return None
        return resp.json()


def client(
    url: str, token: str | None, token_file: Path | None, ca_cert: Path | None = None
) -> ApiClient:
    """Build a client from the common options."""
    if token is None and token_file is not None:
        token = token_file.read_text().strip()
    if not token:
        raise UsageError("an API token is needed: --token, SAFEHOLD_TOKEN or --token-file")
    return ApiClient(url, token, verify=str(ca_cert) if ca_cert else True)


def entity_path(application: str | None, service: str | None, partition_id: str | None) -> str:
    """Return ``/Applications/X``, ``/Services/X~Y`` or ``/Partitions/P`` for exactly one given."""
    given = [x for x in (application, service, partition_id) if x]
    if len(given) != 1:
        raise UsageError("give exactly one of --application, --service, --partition-id")
    if application:
        return f"/Applications/{id_from_name(application)}"
    if service:
        return f"/Services/{id_from_name(service)}"
    return f"/Partitions/{partition_id}"


def _print(value: Any) -> None:
    console.print_json(json.dumps(value))


AppOpt = Annotated[str | None, typer.Option("--application", help="fabric:/App")]
SvcOpt = Annotated[str | None, typer.Option("--service", help="fabric:/App/Service")]
PidOpt = Annotated[str | None, typer.Option("--partition-id", help="A partition GUID.")]


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
    text = typer.get_text_stream("stdin").read() if str(file) == "-" else file.read_text()
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{file} is not JSON: {exc}") from exc
    client(url, token, token_file, ca_cert).request(
        "POST", "/BackupRestore/BackupPolicies/$/Create", json=body
    )
    console.print(f"created policy {body.get('Name')}")


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
    try:
        body = json.loads(file.read_text())
    except ValueError as exc:
        raise UsageError(f"{file} is not JSON: {exc}") from exc
    client(url, token, token_file, ca_cert).request(
        "POST", f"/BackupRestore/BackupPolicies/{name}/$/Update", json=body
    )
    console.print(f"updated policy {name}")


@policy_app.command("list")
def policy_list(
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """List the backup policies (secrets redacted)."""
    _print(
        client(url, token, token_file, ca_cert).request("GET", "/BackupRestore/BackupPolicies")[
            "Items"
        ]
    )


@policy_app.command("show")
def policy_show(
    name: str,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Show one backup policy (secrets redacted)."""
    _print(
        client(url, token, token_file, ca_cert).request(
            "GET", f"/BackupRestore/BackupPolicies/{name}"
        )
    )


@policy_app.command("delete")
def policy_delete(
    name: str,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Delete a backup policy that nothing uses."""
    client(url, token, token_file, ca_cert).request(
        "POST", f"/BackupRestore/BackupPolicies/{name}/$/Delete"
    )
    console.print(f"deleted policy {name}")


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
    client(url, token, token_file, ca_cert).request(
        "POST", f"{path}/$/EnableBackup", json={"BackupPolicyName": name}
    )
    console.print(f"enabled {name} on {path}")


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
    client(url, token, token_file, ca_cert).request(
        "POST", f"{path}/$/DisableBackup", json={"CleanBackup": clean}
    )
    console.print(f"disabled backup on {path}")


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
        client(url, token, token_file, ca_cert).request("POST", f"{path}/$/{action}Backup")
        done = {"Suspend": "suspended", "Resume": "resumed"}[action]
        console.print(f"{done} backup on {path}")

    command.__doc__ = f"{action} periodic backup of an application, service or partition."
    return command


policy_app.command("suspend")(_simple("Suspend"))
policy_app.command("resume")(_simple("Resume"))


@partition_app.command("add")
def partition_add(
    application: Annotated[str, typer.Option("--application", help="fabric:/App")],
    service: Annotated[str, typer.Option("--service", help="fabric:/App/Service")],
    partition_id: Annotated[str, typer.Option("--partition-id", help="The partition's GUID.")],
    source: Annotated[str, typer.Option("--source", help="dir:PATH, command:CMD or state:AGENT")],
    restore_to: Annotated[
        str | None,
        typer.Option("--restore-to", help="command:CMD or file:PATH (for command sources)"),
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="Only this agent backs it up.")
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Register a partition whose data comes from SOURCE."""
    body = {
        "ApplicationName": application,
        "ServiceName": service,
        "PartitionId": partition_id,
        "Source": source,
        "RestoreTo": restore_to,
        "Agent": agent,
    }
    out = client(url, token, token_file, ca_cert).request(
        "POST", "/safehold/partitions", sf=False, json=body
    )
    console.print(f"registered partition {out['PartitionId']} of {out['ServiceName']}")


@partition_app.command("remove")
def partition_remove(
    partition_id: str,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Forget a partition's registration (its backups stay)."""
    client(url, token, token_file, ca_cert).request(
        "DELETE", f"/safehold/partitions/{partition_id}", sf=False
    )
    console.print(f"removed partition {partition_id}")


@partition_app.command("list")
def partition_list(
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """List the registered partitions with their backup health."""
    api = client(url, token, token_file, ca_cert)
    parts = api.request("GET", "/safehold/partitions", sf=False)["Items"]
    health = {h["PartitionId"]: h for h in api.request("GET", "/safehold/health", sf=False)}
    table = Table("PartitionId", "Service", "Source", "Health", "Reason")
    for p in parts:
        h = health.get(p["PartitionId"], {})
        table.add_row(
            p["PartitionId"],
            p["ServiceName"],
            p["Source"],
            h.get("HealthState", ""),
            h.get("Description", ""),
        )
    console.print(table)


@partition_app.command("backups")
def partition_backups(
    partition_id: str,
    latest: Annotated[bool, typer.Option("--latest")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """List a partition's backups."""
    out = client(url, token, token_file, ca_cert).request(
        "GET", f"/Partitions/{partition_id}/$/GetBackups", params={"Latest": str(latest).lower()}
    )
    table = Table("BackupId", "Type", "Created (UTC)", "Location")
    for b in out["Items"]:
        table.add_row(b["BackupId"], b["BackupType"], b["CreationTimeUtc"], b["BackupLocation"])
    console.print(table)


def _wait(api: ApiClient, partition_id: str, kind: str, poll: float = 0.5) -> dict[str, Any]:
    path = f"/Partitions/{partition_id}/$/Get{kind}Progress"
    key = f"{kind}State"
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(f"{kind.lower()} accepted", total=None)
        while True:
            info: dict[str, Any] = api.request("GET", path)
            state = info[key]
            counters = info.get("Progress") or {}
            bar.update(
                task,
                description=f"{kind.lower()}: {state}",
                completed=counters.get("done_bytes", 0),
                total=counters.get("total_bytes"),
            )
            if state in ("Success", "Failure", "Timeout"):
                return info
            time.sleep(poll)


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
    api = client(url, token, token_file, ca_cert)
    body = None
    if storage_path is not None:
        body = {"BackupStorage": {"StorageKind": "FileShare", "Path": str(storage_path.absolute())}}
    api.request(
        "POST", f"/Partitions/{partition_id}/$/Backup", params={"BackupTimeout": timeout}, json=body
    )
    if not wait:
        console.print(
            "backup accepted; follow it with: safehold partition backup-progress " + partition_id
        )
        return
    info = _wait(api, partition_id, "Backup")
    _finish(info, "Backup")
    console.print(f"backup {info['BackupId']} stored at {info['BackupLocation']}")


@partition_app.command("backup-progress")
def partition_backup_progress(
    partition_id: str,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Show the latest backup's progress."""
    _print(
        client(url, token, token_file, ca_cert).request(
            "GET", f"/Partitions/{partition_id}/$/GetBackupProgress"
        )
    )


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
    wait: Annotated[bool, typer.Option("--wait")] = False,
    timeout: Annotated[int, typer.Option("--timeout", help="RestoreTimeout in minutes.")] = 10,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Restore a partition from a backup (by id, the latest, or at a point in time)."""
    api = client(url, token, token_file, ca_cert)
    body: dict[str, Any] = {}
    if backup_id:
        if backup_location is None:
            found = api.request(
                "GET", f"/Partitions/{from_partition or partition_id}/$/GetBackups"
            )["Items"]
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
    api.request("POST", f"/Partitions/{partition_id}/$/Restore", params=params, json=body)
    if not wait:
        console.print("restore accepted")
        return
    info = _wait(api, partition_id, "Restore")
    _finish(info, "Restore")
    console.print(f"restored epoch {info['RestoredEpoch']} LSN {info['RestoredLsn']}")


config_app = typer.Typer(
    help=f"Back up and restore the service's own configuration. {EXIT_CODES}",
    no_args_is_help=True,
)


def _config_operation(
    action: str, storage_path: Path, name: str, wait: bool, api: ApiClient
) -> None:
    body = {
        "Storage": {"StorageKind": "FileShare", "Path": str(storage_path.absolute())},
        "BackupName": name,
    }
    accepted = api.request("POST", f"/safehold/config/$/{action}", sf=False, json=body)
    location = f"/safehold/config/operations/{accepted['Id']}"
    if not wait:
        console.print(f"{action.lower()} accepted: follow {location}")
        return
    while True:
        status = api.request("GET", location, sf=False)
        if status["Status"] != "InProgress":
            break
        time.sleep(0.3)
    if status["Status"] != "Succeeded":
        raise OperationFailed(
            f"{action.lower()} failed: {status.get('Error', {}).get('Message', '')}"
        )
    console.print(f"configuration {action.lower()} {name}: done")


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
    _config_operation("Backup", storage_path, name, wait, client(url, token, token_file, ca_cert))


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
    _config_operation("Restore", storage_path, name, wait, client(url, token, token_file, ca_cert))
