"""
``safehold drill …``: restore drill policies, drills on demand, their results and history.

Talks to a controller through ``cli/service_api.py`` (``--url``, ``--token``).
``drill run --wait`` follows the drill and exits 1 if it failed. Exit codes: 0
ok; 1 the drill failed; 2 bad input; 11 conflict (another job of the partition
runs); 16 not found.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

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
from safehold.client import ControllerClient
from safehold.core.errors import UsageError

__all__ = ["drill_app", "report"]

console = Console()

drill_app = typer.Typer(
    help=f"Restore drills: prove that backups restore, on a schedule. {EXIT_CODES}",
    no_args_is_help=True,
)

AppOpt = Annotated[str | None, typer.Option("--application", help="fabric:/App")]
SvcOpt = Annotated[str | None, typer.Option("--service", help="fabric:/App/Service")]
PidOpt = Annotated[str | None, typer.Option("--partition-id", help="A partition GUID.")]
_FINAL = ("Success", "Failure", "Timeout")


@contextmanager
def _api(
    url: str, token: str | None, token_file: Path | None, ca_cert: Path | None
) -> Iterator[Api]:
    api = connect(url, token, token_file, ca_cert)
    try:
        yield api
    finally:
        api.close()


def _call(
    conn: tuple[str, str | None, Path | None, Path | None], method: str, path: str, **kw: Any
) -> Any:
    """One request to the controller, on a connection closed afterwards."""
    with _api(*conn) as api:
        return api.call(method, path, sf=False, **kw)


def _entity(application: str | None, service: str | None, partition_id: str | None) -> Any:
    given = {
        k: v
        for k, v in (
            ("ApplicationName", application),
            ("ServiceName", service),
            ("PartitionId", partition_id),
        )
        if v
    }
    if len(given) != 1:
        raise UsageError("give exactly one of --application, --service, --partition-id")
    return given


def _seconds(value: object) -> str:
    return f"{value:.2f} s" if isinstance(value, int | float) else "-"


def _print_run(run: dict[str, Any]) -> None:
    goals = run["Objectives"]
    lines = [
        f"{run.get('Kind', 'Restore').lower()} drill {run['DrillId']} "
        f"of partition {run['PartitionId']}: {run['State']}",
        f"  policy {run['Policy']}, {run['Trigger'].lower()}, agent {run['Agent'] or '-'}",
        f"  backup {run['BackupId']} taken {run['BackupTimeUtc']}",
        f"  RTO {_seconds(run['RtoSeconds'])} (objective {_seconds(goals['RtoSeconds'])}), "
        f"RPO {_seconds(run['RpoSeconds'])} (objective {_seconds(goals['RpoSeconds'])})",
    ]
    end = run.get("RecoverableEnd") or {}
    if end:  # a database source: the last instant its archive reaches (or why not known)
        items = sorted(end.items(), key=lambda kv: kv[0] != "Time")  # the time first
        lines.append("  recoverable up to: " + ", ".join(f"{k} {v}" for k, v in items))
    for v in run["Validators"]:
        mark = "skip" if v.get("Skipped") else "pass" if v["Passed"] else "FAIL"
        lines.append(f"  [{mark}] {v['Kind']} {v['Name'][:60]}: {v['Detail']}")
    if run["Failure"]:
        lines.append(f"  failure: {run['Failure']}")
    for path in run["CleanedLeftovers"]:
        lines.append(f"  removed a leftover sandbox: {path}")
    console.print("\n".join(lines), markup=False, highlight=False)


@drill_app.command("create")
def create(
    file: Annotated[Path, typer.Argument(help="A drill policy JSON file (docs/drills.md).")],
    update: Annotated[bool, typer.Option("--update", help="Replace an existing policy.")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Create (or --update) a drill policy."""
    try:
        body = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the drill policy {file}: {exc}") from exc
    with _api(url, token, token_file, ca_cert) as api:
        _create(api, body, update=update)
    console.print(
        f"{'updated' if update else 'created'} drill policy {body.get('Name')}", markup=False
    )


def _create(api: Api, body: Any, *, update: bool) -> None:
    if update:
        name = body.get("Name") if isinstance(body, dict) else None
        api.call("PUT", f"/safehold/drills/policies/{name}", sf=False, json=body)
    else:
        api.call("POST", "/safehold/drills/policies", sf=False, json=body)
    console.print(
        f"{'updated' if update else 'created'} drill policy {body.get('Name')}", markup=False
    )


@drill_app.command("attach")
def attach(
    name: str,
    application: AppOpt = None,
    service: SvcOpt = None,
    partition_id: PidOpt = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Attach drill policy NAME to an application, service or partition (inherited below)."""
    body = _entity(application, service, partition_id)
    _call(
        (url, token, token_file, ca_cert),
        "POST",
        f"/safehold/drills/policies/{name}/$/Attach",
        json=body,
    )
    console.print(f"attached {name} to {next(iter(body.values()))}", markup=False)


@drill_app.command("detach")
def detach(
    application: AppOpt = None,
    service: SvcOpt = None,
    partition_id: PidOpt = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Detach the drill policy attached directly to an entity."""
    body = _entity(application, service, partition_id)
    _call((url, token, token_file, ca_cert), "POST", "/safehold/drills/$/Detach", json=body)
    console.print(f"detached the drill policy of {next(iter(body.values()))}", markup=False)


@drill_app.command("list")
def list_policies(
    json_output: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """List the drill policies."""
    items = _call((url, token, token_file, ca_cert), "GET", "/safehold/drills/policies")
    if json_output:
        out.print_json(items)
        return
    rows = [
        [
            p["Name"],
            p["Schedule"].get("Interval") or p["Schedule"].get("ScheduleFrequencyType", ""),
            p["Backup"],
            str(len(p["Validators"])),
            p["Objectives"]["Rpo"] or "-",
            p["Objectives"]["Rto"] or "-",
            p["Window"],
        ]
        for p in items
    ]
    out.print_table(["NAME", "SCHEDULE", "BACKUP", "VALIDATORS", "RPO", "RTO", "WINDOW"], rows)


@drill_app.command("delete")
def delete(
    name: str,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Delete a drill policy attached nowhere."""
    _call((url, token, token_file, ca_cert), "DELETE", f"/safehold/drills/policies/{name}")
    console.print(f"deleted drill policy {name}", markup=False)


@drill_app.command("run")
def run(
    partition_id: str,
    policy: Annotated[
        str | None, typer.Option("--policy", help="Use this drill policy instead.")
    ] = None,
    backup_id: Annotated[
        str | None, typer.Option("--backup-id", help="Drill this backup (default: policy's).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds --wait waits at most.")
    ] = 3600.0,
    json_output: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Start a drill of PARTITION_ID now (--wait: follow it; exit 1 if it fails)."""
    body = {"Policy": policy, "BackupId": backup_id}
    with _api(url, token, token_file, ca_cert) as api:
        doc = api.call("POST", f"/safehold/partitions/{partition_id}/drills", sf=False, json=body)
        deadline = time.monotonic() + timeout
        while wait and doc["State"] not in _FINAL:
            if time.monotonic() > deadline:
                raise OperationFailed(f"drill {doc['DrillId']} did not finish in {timeout:g} s")
            doc = api.poll(f"/safehold/drills/{doc['DrillId']}", sf=False, every=0.5)
    if json_output:
        out.print_json(doc)
    elif wait:
        _print_run(doc)
    else:
        console.print(f"drill {doc['DrillId']} accepted", markup=False)
    if wait and doc["State"] != "Success":
        raise OperationFailed(f"drill {doc['DrillId']} ended {doc['State']}: {doc['Failure']}")


@drill_app.command("show")
def show(
    drill_id: str,
    json_output: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Show one drill: backup, RTO, RPO, each validator's result."""
    doc = _call((url, token, token_file, ca_cert), "GET", f"/safehold/drills/{drill_id}")
    if json_output:
        out.print_json(doc)
    else:
        _print_run(doc)


@drill_app.command("history")
def history(
    partition_id: Annotated[
        str | None, typer.Argument(help="A partition GUID (default: every partition).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 30,
    json_output: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Past drills, newest first."""
    path = f"/safehold/partitions/{partition_id}/drills" if partition_id else "/safehold/drills"
    items = _call((url, token, token_file, ca_cert), "GET", path, params={"limit": limit})
    if json_output:
        out.print_json(items)
        return
    rows = [
        [
            r["DrillId"][:8],
            r["PartitionId"],
            r["CreatedUtc"][:19],
            r["State"],
            _seconds(r["RtoSeconds"]),
            _seconds(r["RpoSeconds"]),
            (r["Failure"] or "")[:60],
        ]
        for r in items
    ]
    out.print_table(["DRILL", "PARTITION", "STARTED", "STATE", "RTO", "RPO", "FAILURE"], rows)


def report(
    fmt: Annotated[
        str, typer.Option("--format", help="json, markdown or html.", case_sensitive=False)
    ] = "markdown",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """The recoverability report: objectives against measured RPO and RTO, shortfalls first."""
    fmt = fmt.lower()
    if fmt not in ("json", "markdown", "html"):
        raise UsageError("--format is json, markdown or html")
    if token is None and token_file is not None:
        token = token_file.read_text().strip()
    if not token:
        raise UsageError("an API token is needed: --token, SAFEHOLD_TOKEN or --token-file")
    # Markdown and HTML are not JSON: read the answer's text with the one controller client.
    client = ControllerClient(url, token, verify=str(ca_cert) if ca_cert else True, timeout=120)
    try:
        text = client.request("GET", "/safehold/report", params={"format": fmt}).text
    finally:
        client.close()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        console.print(f"wrote {output}", markup=False)
