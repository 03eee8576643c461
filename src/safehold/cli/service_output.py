"""
How the service client commands print: tables, JSON, sizes and results.

Contracts:

- ``--json`` prints the controller's documents unchanged (secrets stay ``****``).
- Ids are never shortened. On a terminal, tables fold long cells onto more lines
  instead of cutting them with "…"; when stdout is not a terminal, tables are
  printed as plain tab-separated lines (a header, then one row per line), so a
  BackupId can be copied or cut out of a pipe whole.
- Sizes are in one unit family, IEC (``12.3 MiB``), everywhere.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "agent_rows",
    "backup_rows",
    "human_size",
    "is_terminal",
    "partition_rows",
    "policy_rows",
    "print_json",
    "print_table",
    "progress_line",
    "restore_result",
    "say",
]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def is_terminal() -> bool:
    """Whether stdout is a terminal (tables with Rich) or a pipe or file (plain lines)."""
    return sys.stdout.isatty()


def human_size(n: int | float | None) -> str:
    """``1536`` → ``1.5 KiB``; bytes below 1 KiB as ``512 B``; ``None`` → ``?``."""
    if n is None:
        return "?"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def say(text: str) -> None:
    """Print one result line on stdout as is: no markup, never wrapped (ids stay whole)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def print_json(value: Any) -> None:
    """Print *value* as indented JSON on stdout (no colour, no wrapping)."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A Rich table on a terminal (cells fold, never truncated); tab-separated lines otherwise."""
    if not is_terminal():
        clean = [[_plain(c) for c in row] for row in rows]
        sys.stdout.write("\t".join(columns) + "\n")
        sys.stdout.writelines("\t".join(row) + "\n" for row in clean)
        sys.stdout.flush()
        return
    table = Table()
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _plain(cell: str) -> str:
    # One row per line, whatever a source command or a reason contains.
    return cell.replace("\t", " ").replace("\n", " ")


def partition_rows(
    parts: list[dict[str, Any]], health: dict[str, dict[str, Any]]
) -> list[list[str]]:
    """Rows of ``partition list``: id, service, source, hooks, health and its reason."""
    rows = []
    for p in parts:
        h = health.get(p["PartitionId"], {})
        hooks = p.get("Hooks") or {}
        hook_text = ", ".join(k.lower() for k in ("Before", "After") if hooks.get(k))
        rows.append(
            [
                p["PartitionId"],
                p["ServiceName"],
                p["Source"],
                hook_text,
                h.get("HealthState", ""),
                h.get("Description", ""),
            ]
        )
    return rows


PARTITION_COLUMNS = ("PartitionId", "Service", "Source", "Hooks", "Health", "Reason")
BACKUP_COLUMNS = ("BackupId", "Type", "Created (UTC)", "Epoch", "LSN", "Location")
POLICY_COLUMNS = ("Name", "Schedule", "Storage", "Incrementals", "Retention", "AutoRestore")
AGENT_COLUMNS = ("AgentId", "Alive", "Last seen (UTC)", "Running jobs")


def backup_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of ``partition backups``."""
    return [
        [
            b["BackupId"],
            b["BackupType"],
            b["CreationTimeUtc"],
            str((b.get("EpochOfLastBackupRecord") or {}).get("DataLossVersion", "")),
            str(b.get("LsnOfLastBackupRecord", "")),
            b["BackupLocation"],
        ]
        for b in items
    ]


def _schedule(s: dict[str, Any]) -> str:
    if s.get("ScheduleKind") == "FrequencyBased":
        return f"every {s.get('Interval', '?')}"
    times = ", ".join(str(t).split("T")[-1].rstrip("Z") for t in s.get("RunTimes", []))
    days = ", ".join(s.get("RunDays", []))
    return f"{s.get('ScheduleFrequencyType', '')} {days} at {times}".replace("  ", " ")


def _storage(s: dict[str, Any]) -> str:
    kind = s.get("StorageKind", "?")
    where = s.get("Path") or s.get("ContainerName") or s.get("BucketName") or ""
    return f"{kind} {where}".strip()


def policy_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of ``policy list`` (secrets are not among the columns)."""
    rows = []
    for p in items:
        ret = p.get("RetentionPolicy") or {}
        retention = (
            f"{ret.get('RetentionDuration')}, keep ≥ {ret.get('MinimumNumberOfBackups', 0)}"
            if ret
            else "keep all"
        )
        rows.append(
            [
                p["Name"],
                _schedule(p.get("Schedule") or {}),
                _storage(p.get("Storage") or {}),
                str(p.get("MaxIncrementalBackups", "")),
                retention,
                "yes" if p.get("AutoRestoreOnDataLoss") else "no",
            ]
        )
    return rows


def agent_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of ``agents``: each running job as ``kind JOBID (partition PID)``."""
    return [
        [
            a["AgentId"],
            "yes" if a.get("Alive") else "no",
            a.get("LastSeenUtc", ""),
            "; ".join(
                f"{j['Kind']} {j['JobId']} (partition {j['PartitionId']})"
                for j in a.get("RunningJobs", [])
            ),
        ]
        for a in items
    ]


def progress_line(info: dict[str, Any], kind: str) -> str:
    """One line about a backup's or restore's latest job: state, agent, bytes, error."""
    if not info:
        return f"no {kind.lower()} yet"
    parts = [f"{kind.lower()} {info.get(f'{kind}State', '?')}"]
    if kind == "Backup" and info.get("BackupId") and info.get("BackupState") == "Success":
        parts.append(f"backup {info['BackupId']} at {info.get('BackupLocation', '')}")
    if kind == "Restore" and info.get("RestoreState") == "Success":
        parts.append(restore_result(info))
    counters = info.get("Progress") or {}
    if counters.get("done_bytes") is not None:
        total = counters.get("total_bytes")
        of = f" of {human_size(total)}" if total else ""
        parts.append(f"{human_size(counters['done_bytes'])}{of} read")
    if counters.get("new_bytes"):
        parts.append(f"{human_size(counters['new_bytes'])} new")
    if info.get("AgentId"):
        parts.append(f"agent {info['AgentId']}")
    err = info.get("FailureError")
    if err:
        parts.append(f"{err.get('Code', '')}: {err.get('Message', '')}")
    parts.append(f"at {info.get('TimeStampUtc', '')}")
    return "; ".join(parts)


def restore_result(info: dict[str, Any]) -> str:
    """``restored epoch 3 (data-loss version), LSN 42`` from a RestoreProgressInfo."""
    epoch = info.get("RestoredEpoch") or {}
    version = epoch.get("DataLossVersion", "?") if isinstance(epoch, dict) else epoch
    return f"restored epoch {version} (data-loss version), LSN {info.get('RestoredLsn', '?')}"
