"""
Drills of ``state:`` partitions, run by the store's own agent: a restore drill
into a temporary store checked by the store's consistency check, and a data-loss
drill (StartDataLoss, then the partition's own restore) recorded like any drill.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from safehold.core.policy import EntityRef, PolicyError
from safehold.core.snapshot import format_time
from safehold.core.work import Outcome
from safehold.service import drills, faults, jobs, partitions, policies, protection
from safehold.service.context import ServiceContext
from safehold.service.partitions import PartitionCreate, register_partition
from safehold.state import BackupOption, StateStore
from safehold.state.drill import MARKER, run_store_drill
from safehold.testing import FakeClock
from tests.service.helpers import P1, P2, add_partition, policy_doc
from tests.state.fakes import FakeTarget
from tests.state.test_agent import FakeController, agent


async def _orders(store: StateStore, *keys: str) -> None:
    async with store.transaction() as tx:
        for k in keys:
            await store.dictionary("orders").set(tx, k, {"k": k})


async def _keys(store: StateStore) -> list[str]:
    async with store.transaction() as tx:
        return [k async for k in store.dictionary("orders").keys(tx)]


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


def test_restore_drill_checks_a_temporary_store_and_leaves_the_live_one(tmp_path: Path) -> None:
    sandboxes = tmp_path / "sandboxes"
    leftover = sandboxes / "drill-killed"
    leftover.mkdir(parents=True)
    owner = {"pid": _dead_pid(), "host": socket.gethostname(), "drill": "killed"}
    (leftover / MARKER).write_text(json.dumps(owner))

    async def body() -> tuple[dict[str, Any], list[str], int]:
        live = tmp_path / "live"
        async with StateStore.open(
            live, partition="p1", target=FakeTarget(), durability="normal"
        ) as store:
            await _orders(store, "a", "b")
            info = await store.backup(BackupOption.FULL)
            await _orders(store, "late")
            params = {
                "drill_id": "d1",
                "snapshot_id": info.snapshot.id,
                "backup_time": format_time(info.snapshot.time),
                "sandbox_dir": str(sandboxes),
            }
            out = await run_store_drill(
                store, params, started_at=info.snapshot.time + timedelta(minutes=2)
            )
            return out, await _keys(store), store.epoch.data_loss_number

    out, keys, dl = asyncio.run(body())
    assert out["State"] == "Success", out.get("Error")
    result = out["Result"]
    [check] = result["Validators"]
    assert (check["Kind"], check["Passed"]) == ("StateCheck", True)
    assert "partition p1" in check["Detail"]
    assert "LSN 1" in check["Detail"]  # the backup's state, not the live store's
    assert result["RestoredLsn"] == 1
    assert result["RtoSeconds"] >= result["RestoreSeconds"] >= 0
    assert result["RpoSeconds"] == 120
    assert result["CleanedLeftovers"] == [str(leftover)]
    assert result["SandboxRemoved"] is True
    assert list(sandboxes.iterdir()) == []
    assert keys == ["a", "b", "late"]  # the live store was not touched
    assert dl == 0


def test_restore_drill_of_a_missing_backup_fails_and_cleans_up(tmp_path: Path) -> None:
    async def failing() -> dict[str, Any]:
        async with StateStore.open(
            tmp_path / "live2", partition="p1", target=FakeTarget(), durability="normal"
        ) as store:
            await _orders(store, "a")
            info = await store.backup(BackupOption.FULL)
            params = {
                "drill_id": "d3",
                "snapshot_id": "f" * 64,
                "sandbox_dir": str(tmp_path / "sb"),
            }
            return await run_store_drill(store, params, started_at=info.snapshot.time)

    out = asyncio.run(failing())
    assert out["State"] == "Failure"
    assert out["Error"]["Message"].startswith("the restore failed: ")
    assert "RtoSeconds" not in out["Result"]
    assert list((tmp_path / "sb").iterdir()) == []


def _drill_policy(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "Name": "fire",
        "Kind": "DataLoss",
        "DataLossMode": "FullDataLoss",
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "P7D"},
        "Objectives": {"Rto": "PT10M"},
        "Window": "P8D",
    }
    doc.update(extra)
    return doc


def test_data_loss_drill_is_recorded_like_any_drill(ctx: ServiceContext, tmp_path: Path) -> None:
    register_partition(ctx, PartitionCreate("fabric:/Shop", "fabric:/Shop/Orders", P1, "state:a1"))
    add_partition(ctx, P2, tmp_path / "p2", svc="Stock")
    policies.create_policy(ctx, policy_doc("p", tmp_path / "store"))
    protection.enable_backup(ctx, EntityRef("Application", "fabric:/Shop"), "p")
    drills.create_policy(ctx, _drill_policy())
    drills.attach(ctx, EntityRef("Application", "fabric:/Shop"), "fire")
    with pytest.raises(PolicyError, match="only state: partitions"):
        drills.request_drill(ctx, P2)

    async def body() -> tuple[list[str], str]:
        async with StateStore.open(
            tmp_path / "live", partition=P1, target=FakeTarget(), durability="normal"
        ) as store:
            await _orders(store, "a", "b")
            info = await store.backup(BackupOption.FULL)
            jobs.request_backup(ctx, P1)
            claimed = jobs.claim(ctx, "a1")
            assert claimed is not None
            snap = {"Id": info.snapshot.id, "Time": format_time(info.snapshot.time)}
            done = {"State": "Success", "Epoch": [0, 0], "Lsn": 1, "Snapshot": snap}
            jobs.complete(ctx, "a1", claimed.JobId, Outcome.model_validate(done))
            await _orders(store, "late")
            run = drills.request_drill(ctx, P1)
            item = jobs.claim(ctx, "a1")
            assert item is not None
            assert (item.Kind, item.Params["drill_kind"]) == ("drill", "DataLoss")
            ctl = FakeController(item.model_dump())
            a = agent(store, ctl)
            assert await a.run_once()
            await a.stop()
            jobs.complete(ctx, "a1", item.JobId, Outcome.model_validate(ctl.outcomes[item.JobId]))
            return await _keys(store), run.id

    keys, run_id = asyncio.run(body())
    assert keys == ["a", "b"]  # the loss took "late"; the restore brought the backup back
    run = drills.get_drill(ctx, run_id)
    assert run.state == "Success", run.failure
    assert run.rto_seconds is not None
    assert run.rto_seconds >= 0
    assert run.rpo_seconds is not None
    assert run.objectives_met is True
    doc = run.to_json()
    assert doc["Kind"] == "DataLoss"
    assert doc["Validators"][0]["Kind"] == "StateCheck"
    assert run.result["LostTransactions"] == 1
    assert [r.id for r in drills.history(ctx, P1)] == [run_id]
    p = partitions.find_partition(ctx, P1)
    assert p.epoch.data_loss_number == 1  # the store's new epoch, as it reported


def test_start_data_loss_is_recorded_as_a_drill(
    ctx: ServiceContext, tmp_path: Path, clock: FakeClock
) -> None:
    """SF's StartDataLoss, once done, is a DataLoss drill run (the job lifecycle's hook)."""
    register_partition(ctx, PartitionCreate("fabric:/Shop", "fabric:/Shop/Orders", P1, "state:a1"))
    policies.create_policy(ctx, policy_doc("p", tmp_path / "store", AutoRestoreOnDataLoss=True))
    protection.enable_backup(ctx, EntityRef("Application", "fabric:/Shop"), "p")
    jobs.request_backup(ctx, P1)
    claimed = jobs.claim(ctx, "a1")
    assert claimed is not None
    snap = {"Id": "a" * 64, "Time": format_time(ctx.clock())}
    done = {"State": "Success", "Epoch": [0, 0], "Lsn": 5, "Snapshot": snap}
    jobs.complete(ctx, "a1", claimed.JobId, Outcome.model_validate(done))

    def fire(op: str, result: dict[str, Any]) -> None:
        faults.start_data_loss(ctx, "Shop~Orders", P1, op, "FullDataLoss")
        assert jobs.claim(ctx, "a1") is not None
        outcome = Outcome.model_validate(
            {"State": "Success", "Epoch": [1, 0], "Lsn": 5, "Result": result}
        )
        jobs.complete(ctx, "a1", op, outcome)  # the lifecycle records the drill run
        jobs.complete(ctx, "a1", op, outcome)  # a repeated report records nothing more
        with ctx.uow() as uow:
            job = uow.jobs.get(op)
            assert job is not None
            assert drills.record_data_loss(uow, job, outcome, ctx.clock()) is None  # once

    op = str(uuid.uuid4())
    fire(op, {"RestoredBackupId": "a" * 64, "RestoredLsn": 5, "HookRan": True})
    got = drills.get_drill(ctx, op)
    assert (got.state, got.trigger, got.to_json()["Kind"]) == (
        "Success",
        "StartDataLoss",
        "DataLoss",
    )
    assert got.rto_seconds is not None
    assert got.rpo_seconds is not None
    clock.advance(minutes=1)
    lost = str(uuid.uuid4())
    fire(lost, {"RestoredBackupId": None, "HookRan": False})
    failed = drills.get_drill(ctx, lost)
    assert failed.state == "Failure"
    assert failed.failure is not None
    assert "nothing restored the partition" in failed.failure
    assert [r.id for r in drills.history(ctx, P1)] == [lost, op]
