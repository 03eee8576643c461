"""Retention on SF's timer: a suspended partition's old backups still go."""

from __future__ import annotations

from pathlib import Path

from safehold.core.policy import EntityRef
from safehold.service import jobs, policies, protection
from safehold.service.context import ServiceContext
from safehold.service.retention_sweep import RetentionTimes, sweep
from safehold.testing import FakeClock, FakeEngine
from tests.service.helpers import P1, add_partition, policy_doc, run_agent_once

PART = EntityRef("Partition", P1)


def test_a_suspended_partitions_old_backups_go_on_the_timer(
    ctx: ServiceContext, store_dir: Path, tmp_path: Path, clock: FakeClock, engine: FakeEngine
) -> None:
    """SF's RetentionTimer covers suspended partitions, keeps MinimumNumberOfBackups, runs daily."""
    add_partition(ctx, P1, tmp_path / "p1")
    policies.create_policy(ctx, policy_doc("p", store_dir))  # P1D, minimum 2
    protection.enable_backup(ctx, EntityRef("Service", "fabric:/Shop/Orders"), "p")
    for _ in range(5):
        jobs.request_backup(ctx, P1)
        assert run_agent_once(ctx)
        clock.advance(hours=1)
    protection.suspend_backup(ctx, EntityRef("Service", "fabric:/Shop/Orders"))
    before = jobs.list_backups(ctx, PART, start=None, end=None, latest=False)
    assert len(before) == 5  # all within a day: retention after each backup kept them
    times = RetentionTimes()
    clock.advance(days=3)
    assert sweep(ctx, times) == {"p": 3}
    after = jobs.list_backups(ctx, PART, start=None, end=None, latest=False)
    assert len(after) == 2  # MinimumNumberOfBackups
    assert before[-1].backup_id in {b.backup_id for b in after}  # the newest stays
    in_storage = [s for items in engine.repos.values() for s, _ in items]
    assert len(in_storage) == 2  # storage and catalog agree
    assert sweep(ctx, times) == {}  # not due again before a day has passed
    clock.advance(days=1, minutes=1)
    assert sweep(ctx, times) == {"p": 0}  # due again; the minimum stays
