"""
The service client's output against a live controller with its embedded agent.

Piped output keeps ids whole, ``--json`` everywhere, IEC sizes, readable restore
results, and the restore confirmation on a real terminal (pexpect).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from safehold.bootstrap import Controller
from safehold.cli import main as cli_main
from safehold.cli.service_output import human_size
from safehold.testing import free_port, serve_in_thread
from tests.api.conftest import ADMIN

SAFEHOLD = str(Path(sys.executable).with_name("safehold"))
PID = "0a0a0a0a-1111-4222-8333-444444444444"


@pytest.fixture
def url(controller: Controller) -> Iterator[str]:
    """A live controller whose embedded agent runs jobs."""
    controller.settings.tick_seconds = 0.2
    with serve_in_thread(controller.app, lifespan="on") as u:
        yield u


def env(url: str) -> dict[str, str]:
    return {**os.environ, "SAFEHOLD_URL": url, "SAFEHOLD_TOKEN": ADMIN, "COLUMNS": "40"}


def run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """
    Run ``safehold ARGS`` in this process (its ``main``: same exit codes), output piped.

    In-process because a CLI start costs seconds on a loaded machine; the
    terminal tests below run the real executable under a pseudo-terminal.
    """
    out, err = io.StringIO(), io.StringIO()
    argv = ["safehold", *args]
    saved = {k: os.environ.get(k) for k in ("SAFEHOLD_URL", "SAFEHOLD_TOKEN", "COLUMNS")}
    os.environ.update(SAFEHOLD_URL=url, SAFEHOLD_TOKEN=ADMIN, COLUMNS="40")
    code = 0
    try:
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            mock_argv(argv),
        ):
            try:
                cli_main()
            except SystemExit as exc:
                code = int(exc.code or 0)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def mock_argv(argv: list[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def ok(url: str, *args: str) -> str:
    r = run(url, *args)
    assert r.returncode == 0, f"{args}: {r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture
def partition(url: str, tmp_path: Path) -> Path:
    """A registered dir: partition with a policy (secret in its storage) and one backup."""
    src = tmp_path / "live"
    src.mkdir()
    (src / "f.txt").write_text("backed up")
    ok(
        url,
        "partition",
        "add",
        "--application",
        "fabric:/Out",
        "--service",
        "fabric:/Out/Svc",
        "--partition-id",
        PID,
        "--source",
        f"dir:{src}",
        "--before",
        "true",
        "--hook-timeout",
        "20",
    )
    policy = {
        "Name": "out-policy",
        "AutoRestoreOnDataLoss": False,
        "MaxIncrementalBackups": 3,
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT12H"},
        "Storage": {
            "StorageKind": "FileShare",
            "Path": str(tmp_path / "store"),
            "PrimaryPassword": "out-secret",
        },
    }
    (tmp_path / "p.json").write_text(json.dumps(policy))
    ok(url, "policy", "create", str(tmp_path / "p.json"))
    done = ok(url, "partition", "backup", PID, "--wait", "--storage-path", str(tmp_path / "store"))
    assert "stored at" in done
    return src


def test_lists_keep_full_ids_when_piped_and_have_json(url: str, partition: Path) -> None:
    """Narrow and piped, ids are whole; --json parses; policy list is a table."""
    listed = ok(url, "partition", "list")
    assert "…" not in listed
    header, row = listed.splitlines()
    assert header.split("\t")[0] == "PartitionId"
    assert row.split("\t")[0] == PID
    assert row.split("\t")[3] == "before"
    parts = json.loads(ok(url, "partition", "list", "--json"))
    assert parts[0]["PartitionId"] == PID
    assert parts[0]["Hooks"] == {"Before": "true", "After": None, "TimeoutSeconds": 20.0}
    assert parts[0]["Health"]["HealthState"] in ("Ok", "Warning", "Error")

    backups = json.loads(ok(url, "partition", "backups", PID, "--json"))
    backup_id = backups[0]["BackupId"]
    table = ok(url, "partition", "backups", PID)
    assert "…" not in table
    assert table.splitlines()[1].split("\t")[0] == backup_id

    policies = ok(url, "policy", "list")
    assert policies.splitlines()[0].startswith("Name\tSchedule\tStorage")
    assert "out-policy\tevery PT12H\tFileShare " in policies
    assert "out-secret" not in policies
    shown = json.loads(ok(url, "policy", "show", "out-policy", "--json"))
    assert shown["Storage"]["PrimaryPassword"] == "****"
    assert json.loads(ok(url, "policy", "list", "--json"))[0]["Name"] == "out-policy"
    assert "Schedule: every PT12H" in ok(url, "policy", "show", "out-policy")

    progress = json.loads(ok(url, "partition", "backup-progress", PID, "--json"))
    assert progress["BackupId"] == backup_id
    line = ok(url, "partition", "backup-progress", PID)
    assert f"backup Success; backup {backup_id}" in line
    agents = json.loads(ok(url, "agents", "--json"))
    assert agents[0]["AgentId"].startswith("embedded@")
    assert ok(url, "agents").splitlines()[1].startswith(agents[0]["AgentId"] + "\t")
    assert json.loads(ok(url, "partition", "restore-progress", PID, "--json")) == {}


def test_restore_without_a_terminal_needs_yes(url: str, partition: Path) -> None:
    """No terminal, no --yes: exit 2 and nothing restored; --yes: a readable result."""
    (partition / "f.txt").write_text("changed")
    refused = run(url, "partition", "restore", PID, "--latest", "--wait")
    assert refused.returncode == 2
    message = refused.stderr.replace("\n", "")  # the error line wraps at COLUMNS
    assert "--yes" in message
    assert str(partition) in message
    assert (partition / "f.txt").read_text() == "changed"
    done = ok(url, "partition", "restore", PID, "--latest", "--wait", "--yes")
    assert done.strip() == "restored epoch 0 (data-loss version), LSN 1"
    assert (partition / "f.txt").read_text() == "backed up"
    info = json.loads(ok(url, "partition", "restore-progress", PID, "--json"))
    assert info["RestoreState"] == "Success"


def _spawn(url: str, *args: str) -> Any:
    return pexpect.spawn(
        SAFEHOLD, list(args), env=env(url), encoding="utf-8", timeout=60, dimensions=(24, 40)
    )


def test_restore_asks_on_a_terminal(url: str, partition: Path) -> None:
    """On a terminal the restore asks; 'n' leaves the live data, 'y' replaces it."""
    (partition / "f.txt").write_text("changed")
    child = _spawn(url, "partition", "restore", PID, "--latest", "--wait")
    child.expect(r"Continue\? \[y/N\]")
    child.sendline("n")
    child.expect("restore cancelled")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert (partition / "f.txt").read_text() == "changed"

    child = _spawn(url, "partition", "restore", PID, "--latest", "--wait")
    child.expect("replaces the live data")
    child.sendline("y")
    child.expect(r"restored epoch \d+ \(data-loss version\), LSN 1")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert (partition / "f.txt").read_text() == "backed up"


def test_ids_are_whole_on_a_narrow_terminal(url: str, partition: Path) -> None:
    """A 40-column terminal folds the table's cells instead of cutting ids with '…'."""
    child = _spawn(url, "partition", "list")
    child.expect(pexpect.EOF)
    child.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before)
    assert "…" not in text
    # The id is folded over several lines of the first column: put it back together.
    first_column = [line.split("│")[1].strip() for line in text.splitlines() if "│" in line]
    assert PID in "".join(first_column)


def test_several_urls_and_a_dead_first_one(url: str, partition: Path) -> None:
    """--url lists controllers: an unreachable first one is skipped."""
    dead = f"http://127.0.0.1:{free_port()}"
    r = run(url, "partition", "list", "--url", f"{dead},{url}")
    assert r.returncode == 0, r.stderr
    assert PID in r.stdout
    alone = run(url, "partition", "list", "--url", dead)
    assert alone.returncode == 1
    assert "cannot reach the controller" in alone.stderr


def test_human_sizes_are_iec() -> None:
    """One unit family: B, KiB, MiB, GiB."""
    assert human_size(512) == "512 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(12.3 * 1024**2) == "12.3 MiB"
    assert human_size(5 * 1024**3) == "5.0 GiB"
    assert human_size(None) == "?"


def test_hooks_survive_a_configuration_backup(url: str, partition: Path, tmp_path: Path) -> None:
    """config backup/restore keeps a registration's hooks."""
    ok(url, "config", "backup", "--storage-path", str(tmp_path / "cfg"), "--name", "c1", "--wait")
    ok(
        url, "partition", "add", "--application", "fabric:/Out", "--service", "fabric:/Out/Svc",
        "--partition-id", PID, "--source", f"dir:{partition}",
    )  # fmt: skip
    assert json.loads(ok(url, "partition", "list", "--json"))[0]["Hooks"] is None
    ok(url, "config", "restore", "--storage-path", str(tmp_path / "cfg"), "--name", "c1", "--wait")
    hooks = json.loads(ok(url, "partition", "list", "--json"))[0]["Hooks"]
    assert hooks == {"Before": "true", "After": None, "TimeoutSeconds": 20.0}
