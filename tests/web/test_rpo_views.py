"""
The console's recovery points (``service.rpo_views``) on SQLite, PostgreSQL and the fake catalog.

The SQL catalogs compute the effective policy, the age and the order in the
database; the fake one in Python: both must give the same answer.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from safehold.bootstrap import open_policy_storage
from safehold.core.policy import EntityRef
from safehold.service import partitions, policies, protection, views
from safehold.service.catalog import open_catalog
from safehold.service.context import ServiceContext
from safehold.service.drill_records import DrillState
from safehold.service.secrets import SecretBox
from safehold.service.uow import SqlUnitOfWork
from safehold.testing import FakeCatalog, FakeClock, FakeEngine, FakeUnitOfWork
from tests.service.catalogs import pg_database, reset_pg

__all__ = ["pg_database"]  # the session fixture, found by name


@pytest.fixture(params=["sqlite", "postgresql", "fake"])
def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServiceContext]:
    """A service context over a fresh catalog, with a clock that moves only when told."""
    common = {
        "secrets": SecretBox(base64.urlsafe_b64encode(b"k" * 32)),
        "open_storage": open_policy_storage,
        "engine": FakeEngine(),
        "clock": FakeClock(),
    }
    if request.param == "fake":
        catalog = FakeCatalog()
        yield ServiceContext(uow=lambda: FakeUnitOfWork(catalog), **common)  # type: ignore[arg-type]
        return
    if request.param == "sqlite":
        url = str(tmp_path / "catalog.sqlite")
    else:
        url = request.getfixturevalue("pg_database")
        reset_pg(url)
    db = open_catalog(url)
    yield ServiceContext(uow=lambda: SqlUnitOfWork(db), **common)  # type: ignore[arg-type]
    db.dispose()


def pid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def _policy(name: str, interval: str, store: Path) -> dict[str, object]:
    return {
        "Name": name,
        "AutoRestoreOnDataLoss": False,
        "MaxIncrementalBackups": 0,
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": interval},
        "Storage": {"StorageKind": "FileShare", "Path": str(store)},
    }


def test_late_first_by_how_late_with_inheritance_and_drills(
    ctx: ServiceContext, tmp_path: Path
) -> None:
    for n, (app, svc) in enumerate(
        [("A", "A/S1"), ("A", "A/S1"), ("A", "A/S2"), ("A", "A/S2"), ("B", "B/S1"), ("B", "B/S1")]
    ):
        partitions.register_partition(
            ctx,
            partitions.PartitionCreate(f"fabric:/{app}", f"fabric:/{svc}", pid(n), "dir:/srv"),
        )
    policies.create_policy(ctx, _policy("hourly", "PT1H", tmp_path / "s"))
    policies.create_policy(ctx, _policy("daily", "P1D", tmp_path / "s"))
    protection.enable_backup(ctx, EntityRef("Application", "fabric:/A"), "hourly")
    protection.enable_backup(ctx, EntityRef("Partition", pid(1)), "daily")  # its own wins
    protection.suspend_backup(ctx, EntityRef("Service", "fabric:/A/S2"))
    now = ctx.clock()
    ages = {0: timedelta(hours=3), 1: timedelta(hours=3), 2: timedelta(minutes=30)}
    ages[3] = timedelta(hours=2)
    with ctx.uow() as uow:
        for n, age in ages.items():
            uow.partitions.record_backup_outcome(
                pid(n), state="Success", failure=None, good_at=now - age
            )
        uow.drills.save_state(DrillState(pid(2), last_state="Success", rto_seconds=12.5))
        uow.commit()

    points, total, late = views.recovery_points(ctx, limit=10)
    assert total == 6
    assert late == 2
    # Late first, the latest first (3 h against 1 h, then 2 h against 1 h); then the
    # others by how much of their interval has passed; unprotected (fabric:/B) last.
    assert [p.partition_id for p in points] == [pid(0), pid(3), pid(2), pid(1), pid(4), pid(5)]
    first = points[0]
    assert first.late
    assert first.policy == "hourly"
    assert first.objective == timedelta(hours=1)
    assert first.age is not None
    assert abs(first.age - timedelta(hours=3)) < timedelta(seconds=2)
    assert points[1].suspended  # inherited from its service
    assert points[2].drill_rto == 12.5
    assert points[2].drill_state == "Success"
    assert points[3].policy == "daily"
    assert not points[3].late
    assert points[4].policy is None
    assert points[4].age is None

    late_page, late_total, _ = views.recovery_points(ctx, offset=1, limit=5, late_only=True)
    assert late_total == 2
    assert [p.partition_id for p in late_page] == [pid(3)]
    # Time passes: the partition never backed up counts from when backup was enabled.
    ctx.clock.advance(hours=30)  # type: ignore[attr-defined]
    _, _, late = views.recovery_points(ctx, limit=1)
    assert late == 4  # all of fabric:/A: the daily one too, now 33 h old
