"""StoreAgent against a fake controller: the jobs it runs on the store and what it reports."""

from __future__ import annotations

import json
from typing import Any

import httpx

from safehold.state import BackupOption, StateStore
from safehold.state.agent import StoreAgent
from tests.state.conftest import OpenStore


class FakeController:
    """Hands out queued work items and records what the agent reports."""

    def __init__(self, *items: dict[str, Any]) -> None:
        self.items = list(items)
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.auth: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.auth.add(request.headers["Authorization"])
        path = request.url.path
        if path == "/safehold/agents/a1/$/Claim":
            return (
                httpx.Response(200, json=self.items.pop(0)) if self.items else httpx.Response(204)
            )
        if path.endswith("/$/Complete"):
            self.outcomes[path.split("/")[5]] = json.loads(request.content)
            return httpx.Response(204)
        if path.endswith("/$/Heartbeat"):
            return httpx.Response(204)
        return httpx.Response(404, json={"Error": {"Code": "X", "Message": "no route"}})


def item(job: str, kind: str, params: dict[str, Any], partition: str = "p1") -> dict[str, Any]:
    """A work item as the controller sends it (core.work.WorkItem's JSON)."""
    return {
        "JobId": job,
        "Kind": kind,
        "Attempt": 1,
        "Deadline": "2100-01-01T00:00:00Z",
        "Partition": {
            "PartitionId": partition,
            "ApplicationName": "fabric:/Shop",
            "ServiceName": "fabric:/Shop/Orders",
            "Source": "state:a1",
        },
        "Params": params,
    }


def agent(store: StateStore, controller: FakeController) -> StoreAgent:
    return StoreAgent(
        store,
        "http://controller",
        "tok",
        agent_id="a1",
        transport=httpx.MockTransport(controller),
    )


async def _orders(store: StateStore, *keys: str) -> None:
    async with store.transaction() as tx:
        for k in keys:
            await store.dictionary("orders").set(tx, k, {"k": k})


async def test_backups_report_the_store_epoch_lsn_and_chain(open_store: OpenStore) -> None:
    """An incremental with no base is taken full; the next one follows it."""
    ctl = FakeController(
        item("j1", "backup", {"backup_type": "Incremental"}),
        item("j2", "backup", {"backup_type": "Incremental"}),
    )
    async with open_store() as store:
        a = agent(store, ctl)
        await _orders(store, "a", "b")
        assert await a.run_once()
        await _orders(store, "c")
        assert await a.run_once()
        assert not await a.run_once()  # nothing left: 204
        await a.stop()
    first, second = ctl.outcomes["j1"], ctl.outcomes["j2"]
    assert (first["State"], first["BackupType"], first["Lsn"], first["Epoch"]) == (
        "Success",
        "Full",
        1,
        [0, 0],
    )
    assert (second["BackupType"], second["Lsn"]) == ("Incremental", 2)
    assert second["ParentSnapshot"] == first["Snapshot"]["Id"]
    assert ctl.auth == {"Bearer tok"}


async def test_data_loss_with_auto_restore_brings_the_last_backup_back(
    open_store: OpenStore,
) -> None:
    """No hook, the policy's AutoRestoreOnDataLoss: the agent restores the latest backup."""
    ctl = FakeController(item("op", "dataloss", {"mode": "FullDataLoss", "auto_restore": True}))
    async with open_store() as store:
        await _orders(store, "a", "b")
        await store.backup(BackupOption.FULL)
        await _orders(store, "late")
        a = agent(store, ctl)
        assert await a.run_once()
        await a.stop()
        async with store.transaction() as tx:
            keys = [k async for k in store.dictionary("orders").keys(tx)]
        assert keys == ["a", "b"]
        epoch = store.epoch
    out = ctl.outcomes["op"]
    assert out["State"] == "Success"
    assert out["Result"]["RestoredLsn"] == 1
    assert out["Epoch"] == [epoch.data_loss_number, epoch.configuration_number]
    assert epoch.data_loss_number == 1  # the loss moved it once; the restore kept it


async def test_data_loss_without_restore_leaves_an_empty_store(open_store: OpenStore) -> None:
    """No hook, no auto-restore: the loss is real and the store goes on empty, in a new epoch."""
    ctl = FakeController(item("op", "dataloss", {"mode": "PartialDataLoss", "auto_restore": False}))
    async with open_store() as store:
        await _orders(store, "a")
        a = agent(store, ctl)
        assert await a.run_once()
        await a.stop()
        await _orders(store, "b")  # accepts the loss
        async with store.transaction() as tx:
            keys = [k async for k in store.dictionary("orders").keys(tx)]
        assert keys == ["b"]
    out = ctl.outcomes["op"]
    assert out["State"] == "Success"
    assert out["Result"]["StateChanged"] is False
    assert out["Epoch"][0] == 1


async def test_foreign_partitions_and_unknown_kinds_fail(open_store: OpenStore) -> None:
    ctl = FakeController(
        item("j1", "backup", {"backup_type": "Full"}, partition="other"),
        item("j2", "clean", {}),
        item("j3", "dataloss", {"mode": "SomeDataLoss"}),
    )
    async with open_store() as store:
        a = agent(store, ctl)
        for _ in range(3):
            assert await a.run_once()
        await a.stop()
        assert store.lsn == 0
    assert [ctl.outcomes[j]["State"] for j in ("j1", "j2", "j3")] == ["Failure"] * 3
    assert "serves partition p1" in ctl.outcomes["j1"]["Error"]["Message"]


async def test_restore_to_a_point_in_time_reaches_that_exact_state(open_store: OpenStore) -> None:
    """A restore work item with restore_time restores every commit up to it, and no later."""
    async with open_store() as store:
        await _orders(store, "a")
        await store.backup(BackupOption.FULL)
        await _orders(store, "b")
        when = store.meta.tail_time  # the commit time of "b"
        await _orders(store, "c")
        await store.backup(BackupOption.INCREMENTAL)
        ctl = FakeController(item("r", "restore", {"snapshot_id": "ignored", "restore_time": when}))
        a = agent(store, ctl)
        assert await a.run_once()
        await a.stop()
        async with store.snapshot() as snap:
            keys = [k async for k in store.dictionary("orders").keys(snap)]
    assert keys == ["a", "b"]
    out = ctl.outcomes["r"]
    assert (out["State"], out["RestoredLsn"], out["Lsn"]) == ("Success", 2, 2)
