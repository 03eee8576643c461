"""
Drill use cases, drill health and alerts through ``ServiceContext``, on SQLite,
PostgreSQL and the in-memory catalog, with the fake engine and a fake clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from safehold.core.drill import parse_drill_policy
from safehold.core.policy import EntityRef, PolicyError
from safehold.service import (
    alerts,
    drills,
    health,
    jobs,
    notify,
    partitions,
    policies,
    protection,
    retention_sweep,
)
from safehold.service.context import ServiceContext
from safehold.service.errors import BackupInProgress, BackupNotFound
from safehold.service.health import FleetView
from safehold.storage.errors import StorageUnavailable
from safehold.testing import FakeClock, FakeEngine
from tests.drills.conftest import Received
from tests.service.helpers import P1, P2, P3, add_partition, policy_doc, run_agent_once


def drill_doc(name: str, sandbox: Path, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "Name": name,
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT30M"},
        "Sandbox": {"Directory": str(sandbox)},
        "Validators": [{"Kind": "Files", "Exist": ["data.txt"], "MinFiles": 1}],
        "Objectives": {"Rpo": "PT1H", "Rto": "PT10M"},
        "Window": "PT2H",
    }
    doc.update(extra)
    return doc


def protected(ctx: ServiceContext, tmp_path: Path) -> None:
    """P1 and P2 registered, backed up once, drill policy 'd' on the application."""
    add_partition(ctx, P1, tmp_path / "p1")
    add_partition(ctx, P2, tmp_path / "p2", svc="Stock")
    policies.create_policy(ctx, policy_doc("p", tmp_path / "store"))
    protection.enable_backup(ctx, EntityRef("Application", "fabric:/Shop"), "p")
    for pid in (P1, P2):
        jobs.request_backup(ctx, pid)
        assert run_agent_once(ctx)
    drills.create_policy(ctx, drill_doc("d", tmp_path / "sb"))
    drills.attach(ctx, EntityRef("Application", "fabric:/Shop"), "d")


def drill_health(ctx: ServiceContext, pid: str) -> tuple[str | None, str | None]:
    """The drills' own verdict in the partition's health."""
    h = health.health_of(ctx, pid)
    return h.drill_state, h.drill_reason


def test_scheduled_drills_pass_and_repeat(
    ctx: ServiceContext, tmp_path: Path, clock: FakeClock
) -> None:
    protected(ctx, tmp_path)
    with pytest.raises(drills.DrillPolicyExists):
        drills.create_policy(ctx, drill_doc("d", tmp_path))
    started = drills.tick(ctx)
    assert sorted(r.partition_id for r in started) == [P1, P2]
    assert drills.tick(ctx) == []  # no second drill while the first is due later
    while run_agent_once(ctx):
        pass
    runs = drills.history(ctx, P1)
    assert [r.state for r in runs] == ["Success"]
    run = runs[0]
    assert run.trigger == "Schedule"
    assert run.objectives_met is True
    assert run.rto_seconds is not None
    assert run.rto_seconds >= 0
    assert run.rpo_seconds == 0  # the fake clock has not moved since the backup
    assert run.result["Validators"][0]["Passed"] is True
    assert run.agent_id == "embedded"
    assert list((tmp_path / "sb").iterdir()) == []
    assert drill_health(ctx, P1) == ("Ok", "restore drills pass")
    assert health.health_of(ctx, P1).state == "Ok"
    clock.advance(minutes=31)
    assert len(drills.tick(ctx)) == 2
    # A manual drill waits for the partition's running job.
    with pytest.raises(BackupInProgress):
        drills.request_drill(ctx, P1)
    while run_agent_once(ctx):
        pass
    manual = drills.request_drill(ctx, P1)
    assert manual.trigger == "Manual"
    run_agent_once(ctx)
    assert drills.get_drill(ctx, manual.id).state == "Success"
    assert drills.get_drill(ctx, manual.id).rpo_seconds == 31 * 60
    with pytest.raises(drills.DrillPolicyInUse):
        drills.delete_policy(ctx, "d")
    drills.detach(ctx, EntityRef("Application", "fabric:/Shop"))
    drills.delete_policy(ctx, "d")
    assert drills.list_policies(ctx) == []


def test_failed_drill_health_and_alerts(
    ctx: ServiceContext, tmp_path: Path, clock: FakeClock, webhooks: tuple[str, Received]
) -> None:
    url, received = webhooks
    protected(ctx, tmp_path)
    failing = drill_doc(
        "strict", tmp_path / "sb", Validators=[{"Kind": "Command", "Command": "echo nope; exit 3"}]
    )
    drills.create_policy(ctx, failing)
    drills.attach(ctx, EntityRef("Partition", P1), "strict")  # overrides the application's
    drills.tick(ctx)
    while run_agent_once(ctx):
        pass
    run = drills.history(ctx, P1)[0]
    assert run.state == "Failure"
    assert run.failure is not None
    assert "exited with status 3, expected 0" in run.failure
    assert run.result["Validators"][0]["Output"] == "nope\n"
    state, reason = drill_health(ctx, P1)
    assert state == "Error"
    assert reason is not None
    assert "drill failed" in reason
    assert health.health_of(ctx, P1).state == "Error"
    assert drill_health(ctx, P2)[0] == "Ok"

    channels = notify.parse_channels({"Webhooks": [{"Url": f"{url}/h", "Secret": "s"}]})
    received.fail_next = 3  # the first delivery fails its three tries
    assert alerts.tick(ctx, channels) == []
    listed = alerts.list_alerts(ctx)
    assert [(a["Event"], a["Subject"], a["Delivered"]) for a in listed] == [
        ("DrillFailed", P1, False)
    ]
    assert listed[0]["DeliveryAttempts"] == 1
    assert "HTTP 503" in listed[0]["LastDeliveryError"]
    assert alerts.tick(ctx, channels) == []  # backing off: not tried again yet
    clock.advance(seconds=6)
    assert [a.key for a in alerts.tick(ctx, channels)] == [f"DrillFailed:{P1}"]
    assert alerts.tick(ctx, channels) == []  # deduplicated
    bodies = received.bodies("/h")
    assert len(bodies) == 1
    assert bodies[0]["Alerts"][0]["State"] == "firing"

    # Fixed: the validator passes now; the next drill resolves the alert.
    drills.update_policy(ctx, "strict", drill_doc("strict", tmp_path / "sb"))
    drills.request_drill(ctx, P1)
    run_agent_once(ctx)
    sent = alerts.tick(ctx, channels)
    assert [(a.key, a.state) for a in sent] == [(f"DrillFailed:{P1}", "resolved")]
    assert received.bodies("/h")[-1]["Alerts"][0]["State"] == "resolved"
    assert drill_health(ctx, P1)[0] == "Ok"


def _conditions(ctx: ServiceContext) -> list[alerts.Condition]:
    """The alert conditions, computed alone and from a shared fleet view: the same."""
    alone = alerts.conditions(ctx)
    assert alerts.conditions(ctx, FleetView()) == alone
    return alone


def test_overdue_timed_out_and_lost(
    ctx: ServiceContext, tmp_path: Path, clock: FakeClock, engine: FakeEngine
) -> None:
    protected(ctx, tmp_path)
    # A state: partition under the same application is drilled by its store
    # (state.drill), once it has a backup.
    partitions.register_partition(
        ctx, partitions.PartitionCreate("fabric:/Shop", "fabric:/Shop/Cart", P3, "state:cart")
    )
    with pytest.raises(BackupNotFound, match="no backup to drill"):
        drills.request_drill(ctx, P3)
    assert P3 not in {r.partition_id for r in drills.tick(ctx)}
    assert drill_health(ctx, P3) == ("Ok", "restore drills pass")
    while run_agent_once(ctx):
        pass
    clock.advance(hours=2, minutes=1)  # past the 2 h window with no new drill
    assert drill_health(ctx, P1)[0] == "Warning"
    events = {(c.event, c.subject) for c in _conditions(ctx)}
    assert ("DrillOverdue", P1) in events
    assert ("AgentLost", "embedded") in events  # not heard from for 2 hours
    clock.advance(hours=2)
    assert drill_health(ctx, P1)[0] == "Error"
    engine.fail_next = StorageUnavailable("share offline")
    jobs.request_backup(ctx, P2)
    run_agent_once(ctx)
    events = {(c.event, c.subject): c for c in _conditions(ctx)}
    assert "share offline" in events["BackupFailed", P2].message
    assert events["BackupLate", P1].severity == "error"  # four hours, backups every 10 min
    # A drill whose job never reports: it times out, and the drill records why.
    run = drills.request_drill(ctx, P1)
    jobs.claim(ctx, "embedded")
    clock.advance(hours=1)
    jobs.sweep(ctx)
    drills.tick(ctx)
    done = drills.get_drill(ctx, run.id)
    assert done.state == "Timeout"
    assert done.failure is not None
    assert "FABRIC_E_TIMEOUT" in done.failure
    assert drill_health(ctx, P1)[0] == "Error"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"Backup": "Oldest"}, "Backup must be"),
        ({"Validators": [{"Kind": "Smoke"}]}, "Validators[0].Kind"),
        ({"Validators": [{"Kind": "Sql"}]}, "Validators[0].Query"),
        ({"Validators": [{"Kind": "Sql", "Query": "SELECT 1"}]}, "Expect must be one of"),
        (
            {"Validators": [{"Kind": "Sql", "Query": "SELECT 1", "Expect": {"Rows": [1]}}]},
            "Validators[0].Expect.Rows[0]",
        ),
        (
            {"Validators": [{"Kind": "Sql", "Query": "SELECT 1", "Expect": {"Count": 1}}]},
            "Expect.Count is not supported",
        ),
        (
            {"Validators": [{"Kind": "Sql", "Query": "SELECT 1", "Expect": {"RowCount": -1}}]},
            "Expect.RowCount",
        ),
        ({"Kind": "Chaos"}, "Kind must be"),
        ({"Kind": "DataLoss", "DataLossMode": "SomeDataLoss"}, "DataLossMode"),
        ({"Validators": [{"Kind": "Command", "Command": ""}]}, "Validators[0].Command"),
        ({"Validators": [{"Kind": "Files", "Exist": ["../etc/passwd"]}]}, "inside the restored"),
        ({"Validators": [{"Kind": "Files", "Checksums": {"a": "xyz"}}]}, "SHA-256"),
        ({"Validators": [{"Kind": "Files", "MinFiles": 3, "MaxFiles": 1}]}, "MinFiles"),
        ({"Timeout": "P2D"}, "Timeout"),
        ({"Sandbox": {"Directory": "relative"}}, "absolute"),
        ({"Objectives": {"Rto": "soon"}}, "Objectives.Rto"),
    ],
)
def test_drill_policy_validation(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_drill_policy({**drill_doc("x", tmp_path), **change})
    doc = parse_drill_policy(drill_doc("x", tmp_path)).to_json()
    assert parse_drill_policy(doc).to_json() == doc


def test_retention_blocked_alert_fires_and_resolves(
    ctx: ServiceContext,
    tmp_path: Path,
    clock: FakeClock,
    engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Backups retention should have deleted raise an alert until they are gone."""
    add_partition(ctx, P1, tmp_path / "p1")
    policies.create_policy(ctx, policy_doc("p", tmp_path / "store"))  # P1D, at least 2
    protection.enable_backup(ctx, EntityRef("Partition", P1), "p")
    for _ in range(3):
        jobs.request_backup(ctx, P1)
        assert run_agent_once(ctx)
        clock.advance(hours=1)

    def blocked() -> list[tuple[str, str, str]]:
        alerts.tick(ctx, None)
        return [
            (a["Subject"], a["Severity"], a["State"])
            for a in alerts.list_alerts(ctx)
            if a["Event"] == "RetentionBlocked"
        ]

    assert blocked() == []
    clock.advance(days=3)  # the middle backup is due for deletion, and no sweep ran
    assert blocked() == [(P1, "error", "firing")]
    [alert] = [a for a in alerts.list_alerts(ctx) if a["Event"] == "RetentionBlocked"]
    assert "should have deleted 1 backup by" in alert["Message"]
    assert "backup policy 'p'" in alert["Message"]

    def unreachable(storage: object, ids: object) -> None:
        raise StorageUnavailable("the share does not answer")

    times = retention_sweep.RetentionTimes()
    with monkeypatch.context() as m:
        m.setattr(engine, "forget", unreachable)
        assert retention_sweep.sweep(ctx, times) == {}  # the sweep fails: still blocked
    assert blocked() == [(P1, "error", "firing")]
    assert retention_sweep.sweep(ctx, times) == {"p": 1}  # it works again
    # Two old backups are left, held past the window only by the minimum of 2.
    assert blocked() == [(P1, "warning", "firing")]
    [alert] = [a for a in alerts.list_alerts(ctx) if a["Event"] == "RetentionBlocked"]
    assert "only by MinimumNumberOfBackups (2)" in alert["Message"]
    jobs.request_backup(ctx, P1)  # backups resume; the agent's retention removes the oldest
    assert run_agent_once(ctx)
    assert blocked() == [(P1, "warning", "resolved")]
