"""
orders: a small stateful HTTP service whose state lives in a safehold ``StateStore``.

It keeps orders in one typed transactional dictionary and, through
``safehold.state.agent.attach`` (one call), registers as its partition's agent, so
the controller's backups, restores and data-loss drills run inside this process,
on a consistent state. Reads come from snapshots, which block no writer.

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
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from safehold.core.snapshot import PartitionRef
from safehold.state import Dictionary, RestoreContext, RestorePolicy, StateStore
from safehold.state.agent import attach

log = logging.getLogger("orders")


@dataclass
class Line:
    """An order as the store keeps it (a typed value: a dataclass)."""

    sku: str
    qty: int


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
        async with attach(
            args.data,
            partition=PartitionRef(args.application, args.service, args.partition),
            controller=args.controller,
            token=token,
            agent_id=args.agent,
            backup_path=args.backup_path,
            password=password,
            poll_interval=args.poll,
            heartbeat_interval=2.0,
        ) as agent:
            store = agent.store
            if args.restore == "hook":

                @store.on_data_loss
                async def restore(ctx: RestoreContext) -> bool:
                    # The drill's point: bring back the latest backup when state is lost.
                    log.warning("orders: data lost (%s); restoring the latest backup", ctx.reason)
                    await ctx.restore_latest(policy=RestorePolicy.SAFE)
                    return True

            state.update(store=store, agent=agent, orders=store.dictionary("orders", value=Line))
            yield

    app = FastAPI(title="orders", lifespan=lifespan)

    @app.post("/orders")
    async def put_order(order: Order) -> dict[str, Any]:
        store: StateStore = state["store"]
        orders: Dictionary[str, Line] = state["orders"]
        async with store.transaction() as tx:
            await orders.set(tx, order.id, Line(order.sku, order.qty))
        return {"id": order.id, "lsn": tx.lsn}

    @app.get("/orders")
    async def list_orders() -> dict[str, Any]:
        store: StateStore = state["store"]
        orders: Dictionary[str, Line] = state["orders"]
        async with store.snapshot() as snap:  # reads a fixed state; blocks no writer
            out = {key: asdict(line) async for key, line in orders.items(snap)}
        e = snap.epoch
        return {
            "orders": out,
            "lsn": snap.lsn,
            "epoch": [e.data_loss_number, e.configuration_number],
        }

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str) -> dict[str, Any]:
        store: StateStore = state["store"]
        orders: Dictionary[str, Line] = state["orders"]
        async with store.snapshot() as snap:
            got = await orders.try_get(snap, order_id)
        if not got or got.value is None:
            raise HTTPException(404, f"no order {order_id}")
        return {"id": order_id, **asdict(got.value)}

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
