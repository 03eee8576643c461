"""The CLI client commands against a live controller: output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.bootstrap import Controller
from safehold.testing import serve_in_thread
from tests.api.conftest import ADMIN, READER

SAFEHOLD = str(Path(sys.executable).with_name("safehold"))
PID = "c1c1c1c1-0000-4000-8000-000000000001"


@pytest.fixture
def url(controller: Controller) -> Iterator[str]:
    with serve_in_thread(controller.app, lifespan="off") as u:
        yield u


def run(url: str, *args: str, token: str = ADMIN) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAFEHOLD_URL": url, "SAFEHOLD_TOKEN": token, "COLUMNS": "200"}
    return subprocess.run(
        [SAFEHOLD, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_client_commands_and_exit_codes(url: str, tmp_path: Path) -> None:
    """Registration, policies and errors map to the documented exit codes."""
    src = tmp_path / "src"
    src.mkdir()
    r = run(
        url,
        "partition",
        "add",
        "--application",
        "fabric:/Cli",
        "--service",
        "fabric:/Cli/Svc",
        "--partition-id",
        PID,
        "--source",
        f"dir:{src}",
    )
    assert r.returncode == 0, r.stderr
    policy = {
        "Name": "cli",
        "AutoRestoreOnDataLoss": False,
        "MaxIncrementalBackups": 1,
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT1H"},
        "Storage": {
            "StorageKind": "FileShare",
            "Path": str(tmp_path / "s"),
            "PrimaryPassword": "cli-secret",
        },
    }
    (tmp_path / "p.json").write_text(json.dumps(policy))
    assert run(url, "policy", "create", str(tmp_path / "p.json")).returncode == 0
    again = run(url, "policy", "create", str(tmp_path / "p.json"))
    assert again.returncode == 11
    assert "FABRIC_E_BACKUP_POLICY_ALREADY_EXISTING" in again.stderr
    shown = run(url, "policy", "show", "cli")
    assert "****" in shown.stdout
    assert "cli-secret" not in shown.stdout
    (tmp_path / "bad.json").write_text(
        json.dumps({**policy, "Name": "bad", "MaxIncrementalBackups": 999})
    )
    bad = run(url, "policy", "create", str(tmp_path / "bad.json"))
    assert bad.returncode == 2
    assert "between 0 and 255" in bad.stderr
    assert run(url, "policy", "enable", "cli", "--service", "fabric:/Cli/Svc").returncode == 0
    missing = run(url, "partition", "backup", "c1c1c1c1-0000-4000-8000-00000000ffff")
    assert missing.returncode == 16
    assert run(url, "partition", "backup", PID).returncode == 0
    busy = run(url, "partition", "backup", PID)
    assert busy.returncode == 11
    assert "FABRIC_E_BACKUP_IN_PROGRESS" in busy.stderr
    listed = run(url, "partition", "list", token=READER)
    assert PID in listed.stdout
    denied = run(url, "partition", "backup", PID, token=READER)
    assert denied.returncode == 1
    assert "operator" in denied.stderr
    both = run(
        url, "policy", "suspend", "--service", "fabric:/Cli/Svc", "--application", "fabric:/Cli"
    )
    assert both.returncode == 2


def test_config_backup_and_restore_commands(url: str, tmp_path: Path) -> None:
    """safehold config backup/restore --wait round-trip through the API."""
    src = tmp_path / "src"
    src.mkdir()
    assert (
        run(
            url,
            "partition",
            "add",
            "--application",
            "fabric:/Cfg",
            "--service",
            "fabric:/Cfg/S",
            "--partition-id",
            PID,
            "--source",
            f"dir:{src}",
        ).returncode
        == 0
    )
    r = run(
        url, "config", "backup", "--storage-path", str(tmp_path / "cfg"), "--name", "n1", "--wait"
    )
    assert r.returncode == 0, r.stderr
    r = run(
        url, "config", "restore", "--storage-path", str(tmp_path / "cfg"), "--name", "n1", "--wait"
    )
    assert r.returncode == 0, r.stderr
    missing = run(
        url,
        "config",
        "restore",
        "--storage-path",
        str(tmp_path / "cfg"),
        "--name",
        "nope",
        "--wait",
    )
    assert missing.returncode == 1
    assert "nope" in missing.stderr
