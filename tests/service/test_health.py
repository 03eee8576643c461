"""Per-partition backup health: Ok, Warning, Error, with the reason."""

from __future__ import annotations

from pathlib import Path

from safehold.core.policy import EntityRef
from safehold.service import health, jobs, policies, protection
from safehold.service.context import ServiceContext
from safehold.storage.errors import StorageUnavailable
from safehold.testing import FakeClock, FakeEngine
from tests.service.helpers import P1, P2, add_partition, policy_doc, run_agent_once


def states(ctx: ServiceContext) -> dict[str, tuple[str, str]]:
    return {h.partition_id: (h.state, h.reason) for h in health.partition_health(ctx)}


def test_health_follows_the_schedule(
    ctx: ServiceContext, store_dir: Path, tmp_path: Path, clock: FakeClock, engine: FakeEngine
) -> None:
    """Ok after a backup, Warning when late or failed, Error when two periods late."""
    add_partition(ctx, P1, tmp_path / "p1")
    add_partition(ctx, P2, tmp_path / "p2")
    assert states(ctx)[P1] == ("Ok", "periodic backup is not enabled")
    policies.create_policy(ctx, policy_doc("p", store_dir))  # every 10 minutes
    protection.enable_backup(ctx, EntityRef("Partition", P1), "p")
    assert states(ctx)[P1][0] == "Ok"
    jobs.request_backup(ctx, P1)
    run_agent_once(ctx)
    state, reason = states(ctx)[P1]
    assert state == "Ok"
    assert "successfully backed up" in reason
    clock.advance(minutes=16)  # due at +10, more than half a period late
    assert states(ctx)[P1][0] == "Warning"
    clock.advance(minutes=10)  # more than a whole period late
    assert states(ctx)[P1][0] == "Error"
    engine.fail_next = StorageUnavailable("share offline")
    clock.advance(seconds=1)
    jobs.request_backup(ctx, P1)
    run_agent_once(ctx)
    state, reason = states(ctx)[P1]
    assert state == "Error"
    assert "share offline" in reason
    clock.advance(seconds=1)
    jobs.request_backup(ctx, P1)
    run_agent_once(ctx)
    assert states(ctx)[P1][0] == "Ok"
    protection.suspend_backup(ctx, EntityRef("Partition", P1))
    state, reason = states(ctx)[P1]
    assert state == "Warning"
    assert "suspended" in reason
    assert health.health_of(ctx, P2).state == "Ok"


def test_a_fleet_view_ranks_error_then_warning_then_ok_once_for_every_reader() -> None:
    """What GET /safehold/health and /health/summary return, from one ranking a view."""
    from datetime import UTC, datetime

    states = ["Ok", "Error", "Warning", "Ok", "Error", "Ok"]
    view = health.FleetHealth(
        datetime(2026, 12, 2, tzinfo=UTC),
        [health.PartitionHealth(f"p{i}", s, "why", None) for i, s in enumerate(states)],
        {},
        0,
    )
    assert [h.partition_id for h in view.ranked()] == ["p1", "p4", "p2", "p0", "p3", "p5"]
    assert [h.partition_id for h in view.ranked("Error")] == ["p1", "p4"]
    assert view.ranked("Bogus") == []
    assert view.counts() == {"Ok": 3, "Warning": 1, "Error": 2}
    assert view.ranked() is view.ranked()  # ranked once, shared
