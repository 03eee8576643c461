"""
``safehold group …``: consistency groups, backed up at one point and restored together.

Talks to a controller through ``cli/service_api.py`` (``--url``, ``--token``).
``backup``, ``restore`` and ``drill`` start one job of the group; with ``--wait``
they follow it and exit 1 if it failed. Exit codes: 0 ok; 1 the job failed;
2 bad input (an unknown member, a time before the first point); 11 conflict (a
member of another group, a job running); 16 not found.
"""

from __future__ import annotations

import json
import time
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
from safehold.core.errors import UsageError

__all__ = ["group_app"]

console = Console()

group_app = typer.Typer(
    help=f"Consistency groups: several partitions backed up at one point. {EXIT_CODES}",
    no_args_is_help=True,
)

_FINAL = ("Success", "Failure", "Timeout")
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for the job; exit 1 if it fails.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds --wait waits at most.")]
PointOpt = Annotated[str | None, typer.Option("--point", help="A point id (group points).")]
TimeOpt = Annotated[
    str | None, typer.Option("--time", help="The newest point at or before this ISO 8601 time.")
]


def _say(text: str) -> None:
    console.print(text, markup=False, highlight=False)


ScheduleHelp = (
    "an ISO 8601 interval (PT1H: FrequencyBased) or an SF Schedule as JSON "
    '({"ScheduleKind": "TimeBased", ...})'
)


def _schedule(value: str | None, option: str) -> dict[str, Any] | None:
    """``PT1H`` is a FrequencyBased schedule; a JSON object is any SF schedule."""
    if value is None:
        return None
    text = value.strip()
    if not text.startswith("{"):
        return {"ScheduleKind": "FrequencyBased", "Interval": text}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option}: not JSON ({exc.msg})") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{option}: give an interval or a JSON object")
    return doc


@group_app.command("create")
def create(
    name: str,
    members: Annotated[
        list[str], typer.Option("--member", "-m", help="A member partition id (repeat).")
    ],
    blob_check: Annotated[
        list[str] | None,
        typer.Option(
            "--blob-check",
            help="A validator DB_PARTITION:DIR_PARTITION:SQL: every path the query returns "
            "exists in the restored directory (repeatable).",
        ),
    ] = None,
    backup_schedule: Annotated[
        str | None,
        typer.Option("--backup-schedule", help=f"Back the group up on a schedule: {ScheduleHelp}."),
    ] = None,
    drill_schedule: Annotated[
        str | None,
        typer.Option("--drill-schedule", help=f"Drill the group on a schedule: {ScheduleHelp}."),
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """
    Create (or replace) group NAME with its member partitions, validators and
    schedules (a replaced group keeps only the schedules given again).
    """
    validators = []
    for spec in blob_check or []:
        db, _, rest = spec.partition(":")
        files, _, query = rest.partition(":")
        if not (db and files and query):
            raise UsageError(f"--blob-check {spec!r}: give DB_PARTITION:DIR_PARTITION:SQL")
        validators.append({"Database": db, "Directory": files, "Query": query})
    body: dict[str, Any] = {"Members": members, "Validators": validators}
    for key, value, option in (
        ("BackupSchedule", backup_schedule, "--backup-schedule"),
        ("DrillSchedule", drill_schedule, "--drill-schedule"),
    ):
        sched = _schedule(value, option)
        if sched is not None:
            body[key] = sched
    doc = connect(url, token, token_file, ca_cert).call(
        "PUT", f"/safehold/groups/{name}", sf=False, json=body
    )
    _say(f"group {doc['Name']}: {len(doc['Members'])} member(s), {len(validators)} validator(s)")
    for kind in ("Backup", "Drill"):
        if doc.get(f"{kind}Schedule"):
            _say(f"  {kind.lower()}s scheduled, next at {doc.get(f'Next{kind}Utc')}")


@group_app.command("list")
def list_groups(
    json_output: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """List the groups."""
    items = connect(url, token, token_file, ca_cert).call("GET", "/safehold/groups", sf=False)
    if json_output:
        out.print_json(items)
        return
    rows = [[g["Name"], str(len(g["Members"])), str(len(g["Validators"])), _last(g)] for g in items]
    out.print_table(["NAME", "MEMBERS", "VALIDATORS", "LAST JOB"], rows)


def _last(g: dict[str, Any]) -> str:
    jobs = sorted(g["Jobs"], key=lambda j: j["CreatedUtc"])
    return f"{jobs[-1]['Kind']} {jobs[-1]['State']}" if jobs else "-"


@group_app.command("show")
def show(
    name: str,
    json_output: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Show a group: members, validators, newest jobs."""
    doc = connect(url, token, token_file, ca_cert).call("GET", f"/safehold/groups/{name}", sf=False)
    if json_output:
        out.print_json(doc)
        return
    lines = [f"group {doc['Name']}"]
    lines += [f"  member {pid}" for pid in doc["Members"]]
    lines += [
        f"  validator {v['Kind']}: {v['Database']} -> {v['Directory']}: {v['Query']}"
        for v in doc["Validators"]
    ]
    for kind in ("Backup", "Drill"):
        sched = doc.get(f"{kind}Schedule")
        if sched:
            lines.append(
                f"  {kind.lower()} schedule {_describe(sched)}, next {doc.get(f'Next{kind}Utc')}"
            )
        note = (doc.get("ScheduleNotes") or {}).get(kind)
        if note:
            lines.append(f"  last {kind.lower()} slot passed: {note}")
    for j in doc["Jobs"]:
        failure = f" ({j['Failure']['Message']})" if j["Failure"] else ""
        how = " (scheduled)" if j.get("Scheduled") else ""
        lines.append(f"  {j['Kind']}{how} {j['JobId']} {j['CreatedUtc']}: {j['State']}{failure}")
    _say("\n".join(lines))


def _describe(sched: dict[str, Any]) -> str:
    if sched.get("ScheduleKind") == "FrequencyBased":
        return f"every {sched.get('Interval')}"
    days = ",".join(sched.get("RunDays") or [])
    times = ",".join(str(t).split("T")[-1] for t in sched.get("RunTimes") or [])
    return f"{sched.get('ScheduleFrequencyType')} {days} at {times}".replace("  ", " ")


@group_app.command("delete")
def delete(
    name: str,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Forget a group (its backups and points stay in storage)."""
    connect(url, token, token_file, ca_cert).call("DELETE", f"/safehold/groups/{name}", sf=False)
    _say(f"deleted group {name}")


@group_app.command("points")
def points(
    name: str,
    json_output: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """The group's points, oldest first."""
    path = f"/safehold/groups/{name}/points"
    items = connect(url, token, token_file, ca_cert).call("GET", path, sf=False)
    if json_output:
        out.print_json(items)
        return
    rows = [[p["PointId"], p["TimeUtc"], p["RestorePoint"], str(len(p["Members"]))] for p in items]
    out.print_table(["POINT", "TIME", "RESTORE POINT", "MEMBERS"], rows)


def _run(api: Api, name: str, action: str, body: dict[str, Any], wait: bool, timeout: float) -> Any:
    doc = api.call("POST", f"/safehold/groups/{name}/{action}", sf=False, json=body)
    deadline = time.monotonic() + timeout
    while wait and doc["State"] not in _FINAL:
        if time.monotonic() > deadline:
            raise OperationFailed(f"group {action} {doc['JobId']} did not end in {timeout:g} s")
        doc = api.poll(f"/safehold/groups/{name}/jobs/{doc['JobId']}", sf=False, every=0.5)
    return doc


def _report(doc: dict[str, Any], action: str, wait: bool, json_output: bool) -> None:
    if json_output:
        out.print_json(doc)
    elif not wait:
        _say(f"group {action} {doc['JobId']} accepted")
    else:
        point = doc.get("Point") or {}
        where = f" at point {point['PointId']} ({point['TimeUtc']})" if point else ""
        _say(f"group {action} {doc['JobId']}: {doc['State']}{where}")
    if wait and doc["State"] != "Success":
        failure = doc["Failure"] or {}
        raise OperationFailed(
            f"group {action} {doc['JobId']} ended {doc['State']}: {failure.get('Message', '')}"
        )


@group_app.command("backup")
def backup(
    name: str,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 3600.0,
    json_output: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Back the group up at one point now (one job on one agent)."""
    doc = _run(connect(url, token, token_file, ca_cert), name, "backup", {}, wait, timeout)
    _report(doc, "backup", wait, json_output)


def _target(point: str | None, at: str | None, *, required: bool) -> dict[str, Any]:
    if point and at:
        raise UsageError("give --point or --time, not both")
    if required and not (point or at):
        raise UsageError("give --point ID or --time ISO-TIME")
    return {"Point": point} if point else {"Time": at} if at else {}


@group_app.command("restore")
def restore(
    name: str,
    point: PointOpt = None,
    at: TimeOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 3600.0,
    json_output: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Restore every member to one point (swapped in only if the validators pass)."""
    body = _target(point, at, required=True)
    doc = _run(connect(url, token, token_file, ca_cert), name, "restore", body, wait, timeout)
    _report(doc, "restore", wait, json_output)


@group_app.command("drill")
def drill(
    name: str,
    point: PointOpt = None,
    at: TimeOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 3600.0,
    json_output: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    ca_cert: CaOpt = None,
) -> None:
    """Restore the group into a sandbox and run its validators (default: the newest point)."""
    body = _target(point, at, required=False)
    doc = _run(connect(url, token, token_file, ca_cert), name, "drill", body, wait, timeout)
    _report(doc, "drill", wait, json_output)
