"""
Scheduled consistency groups through a real controller (SQLite catalog, real
engine, file storage): the schedules over HTTP and the CLI, a bad one refused
with SF's 400, and the leader's tick starting the group backup, which an
in-process agent then runs to a point.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from safehold.bootstrap import Controller, Settings
from safehold.cli.group import group_app
from safehold.core.errors import UsageError
from tests.api.conftest import ADMIN, OPERATOR, auth
from tests.service.helpers import P1, P2, add_partition, policy_doc, run_agent_once


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Schedules not spread: a new schedule is due at once."""
    settings.schedule_spread = 0.0
    return settings


def test_a_scheduled_group_backup_end_to_end(
    controller: Controller, client: httpx.Client, tmp_path: Path
) -> None:
    ctx = controller.ctx
    for pid in (P1, P2):
        add_partition(ctx, pid, tmp_path / pid)
    # No member policy (its own schedule would keep the members busy at the group's
    # slots): a first group backup names its storage, and the scheduled ones use it.
    storage = policy_doc("nightly", tmp_path / "store")["Storage"]
    client.put("/safehold/groups/shop", json={"Members": [P1, P2]}, headers=auth())
    r = client.post("/safehold/groups/shop/backup", json={"BackupStorage": storage}, headers=auth())
    assert r.status_code == 202, r.text
    assert run_agent_once(ctx)

    bad = {"Members": [P1, P2], "BackupSchedule": {"ScheduleKind": "FrequencyBased"}}
    r = client.put("/safehold/groups/shop", json=bad, headers=auth())
    assert r.status_code == 400
    assert r.json()["Error"]["Code"] == "E_INVALIDARG"
    assert "BackupSchedule" in r.json()["Error"]["Message"]
    every = {"ScheduleKind": "FrequencyBased", "Interval": "PT6H"}
    good = {"Members": [P1, P2], "BackupSchedule": every}
    assert client.put("/safehold/groups/shop", json=good, headers=auth(OPERATOR)).status_code == 403

    runner = CliRunner()
    base = ["--url", str(client.base_url), "--token", ADMIN]
    made = runner.invoke(
        group_app,
        ["create", "shop", "-m", P1, "-m", P2, "--backup-schedule", "PT6H", *base],
    )
    assert made.exit_code == 0, made.output
    assert "backups scheduled" in made.output
    doc = client.get("/safehold/groups/shop", headers=auth()).json()
    assert doc["BackupSchedule"] == every
    assert doc["DrillSchedule"] is None
    assert doc["NextBackupUtc"] is not None
    wrong = runner.invoke(group_app, ["create", "x", "-m", P1, "--drill-schedule", "{", *base])
    assert isinstance(wrong.exception, UsageError)  # exit code 2 under the main app
    assert "--drill-schedule: not JSON" in str(wrong.exception)

    assert controller.tick()  # the leader's round: the group's backup is due
    doc = client.get("/safehold/groups/shop", headers=auth()).json()
    assert [(j["Kind"], j["Scheduled"], j["State"]) for j in doc["Jobs"]] == [
        ("group-backup", True, "Accepted")
    ]
    assert run_agent_once(ctx)
    doc = client.get("/safehold/groups/shop", headers=auth()).json()
    assert [j["State"] for j in doc["Jobs"]] == ["Success"], doc["Jobs"]
    points = client.get("/safehold/groups/shop/points", headers=auth()).json()
    assert len(points) == 2
    assert points[-1]["JobId"] == doc["Jobs"][0]["JobId"]
    assert set(points[-1]["Members"]) == {P1, P2}
    assert controller.tick()  # not due again before its next slot
    assert len(client.get("/safehold/groups/shop", headers=auth()).json()["Jobs"]) == 1

    shown = runner.invoke(group_app, ["show", "shop", *base])
    assert shown.exit_code == 0, shown.output
    assert "backup schedule every PT6H, next" in shown.output
    assert "group-backup (scheduled)" in shown.output
