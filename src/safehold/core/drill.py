"""
Restore drills, the pure part: drill policies, validators, objectives, verdicts.

A *drill policy* says how often a partition's backups are proven restorable,
which backup a drill restores (the latest, or a random one), what validators
check the restored data, how long a drill may take, and the objectives it is
held to (RPO: how old the restored backup may be; RTO: how long restore plus
validation may take). Policies attach to applications, services and partitions
with the same inheritance as backup policies (``core.policy.effective_config``).

The JSON shape (names as the rest of safehold's API)::

    {"Name": "nightly",
     "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "P1D"},
     "Backup": "Latest" | "Random",
     "Sandbox": {"Directory": "/var/tmp/safehold-drills"},      # optional
     "Validators": [
        {"Kind": "Command", "Command": "test -s \\"$SAFEHOLD_RESTORED\\"",
         "ExpectedExitCode": 0, "TimeoutSeconds": 300},
        {"Kind": "Files", "Exist": ["etc/app.conf"], "MinFiles": 1, "MaxFiles": null,
         "MinBytes": 1, "Sizes": {"a.bin": 1024}, "Checksums": {"a.bin": "<sha256>"},
         "ChecksumManifest": "SHA256SUMS"},
        {"Kind": "Sql", "Query": "SELECT count(*) FROM orders", "Database": "shop",
         "Expect": {"Scalar": 42} | {"Rows": [[1, "a"]]} | {"RowCount": 3},
         "TimeoutSeconds": 60}],                                   # postgres: sources
     "Kind": "Restore" | "DataLoss",                               # DataLoss: state: only
     "DataLossMode": "PartialDataLoss" | "FullDataLoss",
     "Timeout": "PT30M",
     "Objectives": {"Rpo": "P1D", "Rto": "PT1H"},
     "Window": "P1D"}

A ``Restore`` drill restores into a sandbox and never touches the live data: a
scratch directory, a scratch PostgreSQL instance for ``postgres:`` sources (SQL
validators run against it), or a temporary store for ``state:`` partitions (the
store's own consistency check always runs). A ``DataLoss`` drill is SF's
StartDataLoss on a ``state:`` partition's live store followed by its own
``on_data_loss`` restore, measured and recorded like any drill.

Nothing here reads a clock, a file or the catalog.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from safehold.core.policy import (
    PolicyError,
    Schedule,
    check_policy_name,
    format_duration,
    parse_duration,
    parse_schedule,
)

__all__ = [
    "DEFAULT_WINDOW",
    "MAX_OUTPUT",
    "CommandValidator",
    "DrillPolicy",
    "DrillVerdict",
    "FilesValidator",
    "SqlValidator",
    "Validator",
    "judge_drills",
    "parse_drill_policy",
    "parse_validators",
]

#: With no ``Window``, a partition must have a successful drill within a day.
DEFAULT_WINDOW = timedelta(days=1)
DEFAULT_TIMEOUT = timedelta(minutes=30)
MAX_TIMEOUT = timedelta(days=1)
#: A validator's output is kept up to this many bytes (its tail).
MAX_OUTPUT = 4096
MAX_VALIDATORS = 32
#: An SQL validator's expected rows, and the rows shown of a result, at most.
MAX_ROWS = 1000
MAX_SHOWN_ROWS = 20
DATA_LOSS_MODES = ("PartialDataLoss", "FullDataLoss")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CommandValidator:
    """Run *command* with the shell in the sandbox; pass when it exits with *expected_exit*."""

    command: str
    expected_exit: int = 0
    timeout_seconds: float = 300.0
    kind: Literal["Command"] = "Command"

    def to_json(self) -> dict[str, Any]:
        """Return the API shape."""
        return {
            "Kind": "Command",
            "Command": self.command,
            "ExpectedExitCode": self.expected_exit,
            "TimeoutSeconds": self.timeout_seconds,
        }


@dataclass(frozen=True)
class FilesValidator:
    """
    Checks on the restored files: paths are relative to the restored data.

    ``checksum_manifest`` names a file in the restored data in ``sha256sum``
    format (``<hex>  <path>`` lines); every file it lists must match.
    """

    exist: tuple[str, ...] = ()
    min_files: int | None = None
    max_files: int | None = None
    min_bytes: int | None = None
    sizes: tuple[tuple[str, int], ...] = ()
    checksums: tuple[tuple[str, str], ...] = ()
    checksum_manifest: str | None = None
    kind: Literal["Files"] = "Files"

    def to_json(self) -> dict[str, Any]:
        """Return the API shape."""
        return {
            "Kind": "Files",
            "Exist": list(self.exist),
            "MinFiles": self.min_files,
            "MaxFiles": self.max_files,
            "MinBytes": self.min_bytes,
            "Sizes": dict(self.sizes),
            "Checksums": dict(self.checksums),
            "ChecksumManifest": self.checksum_manifest,
        }


@dataclass(frozen=True)
class SqlValidator:
    """
    Run *query* on the scratch database; pass when its result is what *expect* says.

    *expect* is one of ``("Rows", [[...], ...])`` (every row, in order, values as
    JSON), ``("Scalar", value)`` (one row of one column) or ``("RowCount", n)``.
    Values compare as JSON would show them: numbers by value, everything else by
    its text (a date compares with ``"2024-01-31"``).
    """

    query: str
    expect: tuple[Literal["Rows", "Scalar", "RowCount"], Any]
    database: str = "postgres"
    user: str | None = None
    timeout_seconds: float = 60.0
    kind: Literal["Sql"] = "Sql"

    def to_json(self) -> dict[str, Any]:
        """Return the API shape."""
        return {
            "Kind": "Sql",
            "Query": self.query,
            "Database": self.database,
            "User": self.user,
            "Expect": {self.expect[0]: self.expect[1]},
            "TimeoutSeconds": self.timeout_seconds,
        }


Validator = CommandValidator | FilesValidator | SqlValidator


def _rel_path(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(f"{what} must be a non-empty relative path")
    parts = value.replace("\\", "/").split("/")
    if value.startswith("/") or ".." in parts:
        raise PolicyError(f"{what} {value!r} must stay inside the restored data")
    return value


def _count(doc: Mapping[str, Any], key: str, where: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PolicyError(f"{where}.{key} must be a whole number >= 0")
    return value


def _parse_command(doc: Mapping[str, Any], where: str) -> CommandValidator:
    cmd = doc.get("Command")
    if not isinstance(cmd, str) or not cmd.strip():
        raise PolicyError(f"{where}.Command must be a non-empty shell command")
    expected = doc.get("ExpectedExitCode", 0)
    if not isinstance(expected, int) or isinstance(expected, bool) or not 0 <= expected <= 255:
        raise PolicyError(f"{where}.ExpectedExitCode must be 0 to 255")
    timeout = doc.get("TimeoutSeconds", 300)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
        raise PolicyError(f"{where}.TimeoutSeconds must be a positive number")
    return CommandValidator(cmd, expected, float(timeout))


def _parse_files(doc: Mapping[str, Any], where: str) -> FilesValidator:
    exist = doc.get("Exist") or []
    if not isinstance(exist, list):
        raise PolicyError(f"{where}.Exist must be a list of relative paths")
    sizes = doc.get("Sizes") or {}
    checksums = doc.get("Checksums") or {}
    if not isinstance(sizes, dict) or not isinstance(checksums, dict):
        raise PolicyError(f"{where}.Sizes and {where}.Checksums must be objects path -> value")
    for path, size in sizes.items():
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise PolicyError(f"{where}.Sizes[{path!r}] must be a whole number of bytes")
    for path, digest in checksums.items():
        if not isinstance(digest, str) or not _SHA256.match(digest.lower()):
            raise PolicyError(f"{where}.Checksums[{path!r}] must be a SHA-256 in hex")
    manifest = doc.get("ChecksumManifest")
    v = FilesValidator(
        exist=tuple(_rel_path(p, f"{where}.Exist entry") for p in exist),
        min_files=_count(doc, "MinFiles", where),
        max_files=_count(doc, "MaxFiles", where),
        min_bytes=_count(doc, "MinBytes", where),
        sizes=tuple((_rel_path(p, f"{where}.Sizes key"), s) for p, s in sorted(sizes.items())),
        checksums=tuple(
            (_rel_path(p, f"{where}.Checksums key"), d.lower())
            for p, d in sorted(checksums.items())
        ),
        checksum_manifest=None
        if manifest is None
        else _rel_path(manifest, f"{where}.ChecksumManifest"),
    )
    if v.min_files is not None and v.max_files is not None and v.min_files > v.max_files:
        raise PolicyError(f"{where}.MinFiles is more than MaxFiles")
    return v


def _scalar_ok(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _parse_expect(expect: object, where: str) -> tuple[Any, Any]:
    if not isinstance(expect, Mapping) or len(expect) != 1:
        raise PolicyError(f"{where}.Expect must be one of {{Rows}}, {{Scalar}} or {{RowCount}}")
    key, value = next(iter(expect.items()))
    if key == "Rows":
        if not isinstance(value, list) or len(value) > MAX_ROWS:
            raise PolicyError(f"{where}.Expect.Rows must be a list of at most {MAX_ROWS} rows")
        for i, row in enumerate(value):
            if not isinstance(row, list) or not all(_scalar_ok(v) for v in row):
                raise PolicyError(f"{where}.Expect.Rows[{i}] must be a list of JSON scalars")
        value = [list(r) for r in value]
    elif key == "Scalar":
        if not _scalar_ok(value):
            raise PolicyError(f"{where}.Expect.Scalar must be a JSON scalar")
    elif key == "RowCount":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PolicyError(f"{where}.Expect.RowCount must be a whole number >= 0")
    else:
        raise PolicyError(f"{where}.Expect.{key} is not supported: use Rows, Scalar or RowCount")
    return key, value


def _parse_sql(doc: Mapping[str, Any], where: str) -> SqlValidator:
    query = doc.get("Query")
    if not isinstance(query, str) or not query.strip():
        raise PolicyError(f"{where}.Query must be a non-empty SQL query")
    database = doc.get("Database", "postgres")
    if not isinstance(database, str) or not database.strip():
        raise PolicyError(f"{where}.Database must be a database name")
    user = doc.get("User")
    if user is not None and (not isinstance(user, str) or not user.strip()):
        raise PolicyError(f"{where}.User must be a role name")
    timeout = doc.get("TimeoutSeconds", 60)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
        raise PolicyError(f"{where}.TimeoutSeconds must be a positive number")
    key, value = _parse_expect(doc.get("Expect"), where)
    return SqlValidator(query, (key, value), database, user, float(timeout))


def parse_validators(doc: object) -> tuple[Validator, ...]:
    """
    Parse a ``Validators`` list.

    Raises:
        PolicyError: it is not a list of known validators with valid fields.
    """
    if doc is None:
        return ()
    if not isinstance(doc, list):
        raise PolicyError("Validators must be a list")
    if len(doc) > MAX_VALIDATORS:
        raise PolicyError(f"at most {MAX_VALIDATORS} validators per drill policy")
    out: list[Validator] = []
    for i, v in enumerate(doc):
        where = f"Validators[{i}]"
        if not isinstance(v, Mapping):
            raise PolicyError(f"{where} must be an object with a Kind")
        kind = v.get("Kind")
        if kind == "Command":
            out.append(_parse_command(v, where))
        elif kind == "Files":
            out.append(_parse_files(v, where))
        elif kind == "Sql":
            out.append(_parse_sql(v, where))
        else:
            raise PolicyError(
                f"{where}.Kind {kind!r} is not supported: use 'Command', 'Files' or 'Sql'"
            )
    return tuple(out)


@dataclass(frozen=True)
class DrillPolicy:
    """A named drill policy (see the module's docstring for its JSON)."""

    name: str
    schedule: Schedule
    backup: Literal["Latest", "Random"] = "Latest"
    sandbox_dir: str | None = None
    validators: tuple[Validator, ...] = ()
    timeout: timedelta = DEFAULT_TIMEOUT
    rpo: timedelta | None = None
    rto: timedelta | None = None
    window: timedelta = DEFAULT_WINDOW
    kind: Literal["Restore", "DataLoss"] = "Restore"
    data_loss_mode: Literal["PartialDataLoss", "FullDataLoss"] = "PartialDataLoss"

    def to_json(self) -> dict[str, Any]:
        """Return the API shape."""
        return {
            "Name": self.name,
            "Kind": self.kind,
            "DataLossMode": self.data_loss_mode,
            "Schedule": self.schedule.to_json(),
            "Backup": self.backup,
            "Sandbox": {"Directory": self.sandbox_dir},
            "Validators": [v.to_json() for v in self.validators],
            "Timeout": format_duration(self.timeout),
            "Objectives": {
                "Rpo": format_duration(self.rpo) if self.rpo else None,
                "Rto": format_duration(self.rto) if self.rto else None,
            },
            "Window": format_duration(self.window),
        }


def parse_drill_policy(doc: object) -> DrillPolicy:
    """
    Parse and validate a drill policy document.

    Raises:
        PolicyError: a field is missing or invalid; the message names it.
    """
    if not isinstance(doc, Mapping):
        raise PolicyError("a drill policy must be a JSON object")
    name = check_policy_name(doc.get("Name"))
    schedule = parse_schedule(doc.get("Schedule"))
    backup = doc.get("Backup", "Latest")
    if backup not in ("Latest", "Random"):
        raise PolicyError("Backup must be 'Latest' or 'Random'")
    sandbox = doc.get("Sandbox") or {}
    if not isinstance(sandbox, Mapping):
        raise PolicyError("Sandbox must be an object")
    directory = sandbox.get("Directory")
    if directory is not None and (not isinstance(directory, str) or not directory.startswith("/")):
        raise PolicyError("Sandbox.Directory must be an absolute path on the agents")
    timeout = parse_duration(doc["Timeout"], "Timeout") if "Timeout" in doc else DEFAULT_TIMEOUT
    if not timedelta(seconds=1) <= timeout <= MAX_TIMEOUT:
        raise PolicyError("Timeout must be between 1 second and 1 day")
    objectives = doc.get("Objectives") or {}
    if not isinstance(objectives, Mapping):
        raise PolicyError("Objectives must be an object with Rpo and Rto durations")
    rpo = objectives.get("Rpo")
    rto = objectives.get("Rto")
    window = parse_duration(doc["Window"], "Window") if doc.get("Window") else DEFAULT_WINDOW
    if window <= timedelta(0):
        raise PolicyError("Window must be longer than zero")
    kind = doc.get("Kind", "Restore")
    if kind not in ("Restore", "DataLoss"):
        raise PolicyError("Kind must be 'Restore' or 'DataLoss'")
    mode = doc.get("DataLossMode", "PartialDataLoss")
    if mode not in DATA_LOSS_MODES:
        raise PolicyError("DataLossMode must be 'PartialDataLoss' or 'FullDataLoss'")
    return DrillPolicy(
        kind=kind,
        data_loss_mode=mode,
        name=name,
        schedule=schedule,
        backup=backup,
        sandbox_dir=directory,
        validators=parse_validators(doc.get("Validators")),
        timeout=timeout,
        rpo=None if rpo is None else parse_duration(rpo, "Objectives.Rpo"),
        rto=None if rto is None else parse_duration(rto, "Objectives.Rto"),
        window=window,
    )


@dataclass(frozen=True)
class DrillVerdict:
    """What a partition's drills say about its health: Ok, Warning or Error, and why."""

    state: Literal["Ok", "Warning", "Error"]
    reason: str
    cause: Literal["ok", "failed", "overdue", "objectives", "unreadable"] = "ok"


def judge_drills(
    *,
    now: datetime,
    window: timedelta,
    since: datetime,
    last_state: str | None,
    last_failure: str | None,
    last_success_at: datetime | None,
    objectives_met: bool | None,
) -> DrillVerdict:
    """
    Judge a partition's drills.

    The last drill failed → Error. No successful drill within *window* (counted
    from *since*, when the drill policy applied, if there never was one) →
    Warning, Error past twice the window. The last drill passed but missed an
    objective → Warning.
    """
    if last_state in ("Failure", "Timeout"):
        return DrillVerdict(
            "Error", f"the last restore drill failed: {last_failure or last_state}", "failed"
        )
    ref = last_success_at or since
    age = now - ref
    if age > window:
        what = (
            f"no successful restore drill since {ref.isoformat(timespec='seconds')}"
            if last_success_at
            else f"no successful restore drill yet (drills apply since {ref:%Y-%m-%d %H:%M} UTC)"
        )
        state: Literal["Warning", "Error"] = "Error" if age > 2 * window else "Warning"
        return DrillVerdict(state, f"{what}: the window is {format_duration(window)}", "overdue")
    if objectives_met is False:
        return DrillVerdict(
            "Warning", "the last restore drill missed its RPO or RTO objective", "objectives"
        )
    return DrillVerdict("Ok", "restore drills pass")
