"""
orders: a small stateful HTTP service whose state lives in a safehold ``StateStore``.

It keeps orders in one transactional dictionary and registers as its partition's
agent (``StoreAgent``), so the controller's backups, restores and data-loss drills
run inside this process, on a consistent state.

Run it (see ``docs/state.md``)::

    SAFEHOLD_TOKEN=<agent token> SAFEHOLD_PASSWORD=<repository password> \\
    python examples/orders/service.py --data /var/lib/orders --port 8080 \\
        --controller http://127.0.0.1:19080 --partition <uuid> --agent orders-1 \\
        --backup-path /backups/orders

The partition is registered with the source ``state:orders-1``, and
``--backup-path`` is the FileShare path of the partition's backup policy: the
store writes its backups there itself. Secrets come from the environment only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from safehold.core.snapshot import PartitionRef, Snapshot, SnapshotMeta
from safehold.repo import Repository
from safehold.state import RepositoryTarget, RestoreContext, RestorePolicy, StateStore
from safehold.state.agent import StoreAgent
from safehold.storage.file import FileStorage

log = logging.getLogger("orders")


class LazyRepositoryTarget:
    """
    A ``BackupTarget`` that opens the repository at its first use.

    The controller creates a storage's repository before the first job that
    writes to it, which may be after this service starts.
    """

    def __init__(self, path: str, password: str) -> None:
        self._path = path
        self._password = password
        self._target: RepositoryTarget | None = None
        self._lock = threading.Lock()  # the store calls targets from worker threads

    def _open(self) -> RepositoryTarget:
        with self._lock:
            if self._target is None:
                repo = Repository.open(FileStorage(self._path), self._password)
                self._target = RepositoryTarget(repo)
            return self._target

    @property
    def location(self) -> str:
        """The storage path."""
        return self._path

    def store(self, stream: BinaryIO, *, name: str, meta: SnapshotMeta) -> Snapshot:
        """Store a backup."""
        return self._open().store(stream, name=name, meta=meta)

    def forget(self, snapshot_id: str) -> None:
        """Forget a vetoed backup."""
        self._open().forget(snapshot_id)

    def snapshots(self) -> list[Snapshot]:
        """List the snapshots; none while the repository does not exist yet."""
        if self._target is None and not os.path.exists(os.path.join(self._path, "config")):
            return []
        return self._open().snapshots()

    def fetch(self, snapshot: Snapshot, out: BinaryIO) -> int:
        """Read a backup back."""
        return self._open().fetch(snapshot, out)


class Order(BaseModel):
    """An order as clients send it."""

    id: str = Field(min_length=1, max_length=100)
    sku: str = Field(min_length=1, max_length=100)
    qty: int = Field(ge=1)


def build_app(args: argparse.Namespace, token: str, password: str) -> FastAPI:
    """The orders app; the store and its agent live as long as the app."""
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        ref = PartitionRef(args.application, args.service, args.partition)
        target = LazyRepositoryTarget(args.backup_path, password)
        store = await StateStore.open(args.data, partition=ref, target=target)
        if args.restore == "hook":

            @store.on_data_loss
            async def restore(ctx: RestoreContext) -> bool:
                # The drill's point: bring back the latest backup when state is lost.
                log.warning("orders: data lost (%s); restoring the latest backup", ctx.reason)
                await ctx.restore_latest(policy=RestorePolicy.SAFE)
                return True

        agent = StoreAgent(
            store,
            args.controller,
            token,
            agent_id=args.agent,
            poll_interval=args.poll,
            heartbeat_interval=2.0,
        )
        agent.start()
        state.update(store=store, agent=agent)
        try:
            yield
        finally:
            await agent.stop()
            await store.close()

    app = FastAPI(title="orders", lifespan=lifespan)

    @app.post("/orders")
    async def put_order(order: Order) -> dict[str, Any]:
        store: StateStore = state["store"]
        orders = store.dictionary("orders")
        async with store.transaction() as tx:
            await orders.set(tx, order.id, {"sku": order.sku, "qty": order.qty})
        return {"id": order.id, "lsn": tx.lsn}

    @app.get("/orders")
    async def list_orders() -> dict[str, Any]:
        store: StateStore = state["store"]
        orders = store.dictionary("orders")
        out: dict[str, Any] = {}
        async with store.transaction() as tx:
            async for key, value in orders.items(tx):
                out[key] = value
        e = store.epoch
        return {
            "orders": out,
            "lsn": store.lsn,
            "epoch": [e.data_loss_number, e.configuration_number],
        }

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str) -> dict[str, Any]:
        store: StateStore = state["store"]
        async with store.transaction() as tx:
            value = await store.dictionary("orders").get(tx, order_id)
        if value is None:
            raise HTTPException(404, f"no order {order_id}")
        return {"id": order_id, **value}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        store: StateStore = state["store"]
        return {"status": "ok", "lsn": store.lsn, "jobs_done": state["agent"].jobs_done}

    return app


def main() -> None:
    """Parse the options and serve until SIGTERM or Ctrl-C."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="the store's directory")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--controller", required=True, help="the safehold controller's URL")
    p.add_argument("--partition", required=True, help="the partition id (a GUID)")
    p.add_argument("--application", default="fabric:/Shop")
    p.add_argument("--service", default="fabric:/Shop/Orders")
    p.add_argument("--agent", default="orders-1", help="the agent id, as in state:AGENT")
    p.add_argument("--backup-path", required=True, help="the policy's FileShare path")
    p.add_argument(
        "--restore",
        choices=("hook", "none"),
        default="hook",
        help="hook: restore the latest backup in on_data_loss; none: leave it to the "
        "policy's AutoRestoreOnDataLoss",
    )
    p.add_argument("--poll", type=float, default=1.0, help="seconds between claims")
    args = p.parse_args()
    token = os.environ.get("SAFEHOLD_TOKEN")
    password = os.environ.get("SAFEHOLD_PASSWORD")
    if not token or not password:
        p.error("set SAFEHOLD_TOKEN (an agent token) and SAFEHOLD_PASSWORD")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = build_app(args, token, password)
    asyncio.run(uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port)).serve())


if __name__ == "__main__":
    main()
