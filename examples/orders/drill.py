"""
A fire drill for the orders service, against a running ``safehold serve``.

It does the whole cycle through the controller's API, as an operator would:

1. set up: a backup policy (FileShare at ``--storage``), the partition registered
   with the source ``state:AGENT`` and backup enabled on it;
2. load orders through the orders service, noting each one's LSN;
3. take a full backup, then incrementals (``POST /Partitions/{id}/$/Backup``,
   ``BackupType=Incremental``), loading more orders in between;
4. load a few orders after the last backup (they are meant to be lost);
5. induce a data loss (``StartDataLoss``) and follow ``GetDataLossProgress``;
6. check that every order committed up to the last backup's LSN is back, exactly,
   that the later ones are gone, and that the epoch moved.

It exits 0 when all holds, 1 when the drill fails. The admin token comes from
``SAFEHOLD_TOKEN``::

    SAFEHOLD_TOKEN=<admin token> python examples/orders/drill.py \\
        --controller http://127.0.0.1:19080 --orders http://127.0.0.1:8080 \\
        --partition <uuid> --agent orders-1 --storage /backups/orders
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

V = {"api-version": "6.4"}


class DrillFailed(Exception):
    """The drill found something wrong."""


class Drill:
    """The drill's steps, over two HTTP clients."""

    def __init__(self, args: argparse.Namespace, token: str) -> None:
        self.args = args
        self.api = httpx.Client(
            base_url=args.controller, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.orders = httpx.Client(base_url=args.orders, timeout=30)
        self.committed: dict[str, tuple[int, dict[str, Any]]] = {}  # id -> (lsn, value)

    def call(self, method: str, path: str, *, ok: tuple[int, ...] = (), **kw: Any) -> Any:
        r = self.api.request(method, path, params={**V, **kw.pop("params", {})}, **kw)
        if r.status_code >= 400 and r.status_code not in ok:
            raise DrillFailed(f"{method} {path} answered {r.status_code}: {r.text[:300]}")
        return r.json() if r.content else None

    def setup(self) -> None:
        a = self.args
        policy = {
            "Name": a.policy,
            "AutoRestoreOnDataLoss": a.auto_restore,
            "MaxIncrementalBackups": 5,
            # Once a day, 12 hours from now: the drill's backups are the only ones it sees.
            "Schedule": {
                "ScheduleKind": "TimeBased",
                "ScheduleFrequencyType": "Daily",
                "RunTimes": [(datetime.now(UTC) + timedelta(hours=12)).strftime("%H:%M:00Z")],
            },
            "Storage": {"StorageKind": "FileShare", "Path": a.storage},
        }
        self.call("POST", "/BackupRestore/BackupPolicies/$/Create", json=policy, ok=(409,))
        self.call(
            "POST",
            "/safehold/partitions",
            json={
                "ApplicationName": a.application,
                "ServiceName": a.service,
                "PartitionId": a.partition,
                "Source": f"state:{a.agent}",
            },
        )
        self.call(
            "POST",
            f"/Partitions/{a.partition}/$/EnableBackup",
            json={"BackupPolicyName": a.policy},
        )
        print(f"set up: policy {a.policy}, partition {a.partition} served by {a.agent}")

    def load(self, n: int, tag: str) -> None:
        for i in range(n):
            oid = f"{tag}-{i:04d}"
            value = {"sku": f"SKU-{i % 17}", "qty": 1 + i % 5}
            r = self.orders.post("/orders", json={"id": oid, **value})
            r.raise_for_status()
            self.committed[oid] = (int(r.json()["lsn"]), value)
        print(f"loaded {n} orders ({tag}); store LSN {max(v[0] for v in self.committed.values())}")

    def wait(self, what: str, path: str, key: str, done: tuple[str, ...]) -> dict[str, Any]:
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            info: dict[str, Any] = self.call("GET", path)
            if info[key] in done:
                return info
            time.sleep(0.2)
        raise DrillFailed(f"the {what} did not end within {self.args.timeout} s")

    def backup(self, kind: str) -> dict[str, Any]:
        pid = self.args.partition
        deadline = time.monotonic() + self.args.timeout
        while (
            self.call("POST", f"/Partitions/{pid}/$/Backup", params={"BackupType": kind}, ok=(409,))
            is not None
        ):  # 409: another backup of the partition runs; ours follows it
            if time.monotonic() > deadline:
                raise DrillFailed("the partition stayed busy with another job")
            time.sleep(0.3)
        info = self.wait(
            "backup",
            f"/Partitions/{pid}/$/GetBackupProgress",
            "BackupState",
            ("Success", "Failure", "Timeout"),
        )
        if info["BackupState"] != "Success":
            raise DrillFailed(f"the {kind} backup ended {info['BackupState']}: {info}")
        print(
            f"{kind} backup {info['BackupId']}: LSN {info['LsnOfLastBackupRecord']}, "
            f"epoch {info['EpochOfLastBackupRecord']['DataLossVersion']}"
        )
        return info

    def data_loss(self) -> dict[str, Any]:
        a = self.args
        op = str(uuid.uuid4())
        base = f"/Faults/Services/{a.service.removeprefix('fabric:/').replace('/', '~')}"
        base += f"/$/GetPartitions/{a.partition}/$"
        self.call(
            "POST", f"{base}/StartDataLoss", params={"OperationId": op, "DataLossMode": a.mode}
        )
        print(f"StartDataLoss {a.mode}, operation {op}")
        info: dict[str, Any] = self.call(
            "GET", f"{base}/GetDataLossProgress", params={"OperationId": op}
        )
        deadline = time.monotonic() + a.timeout
        while info["State"] not in ("Completed", "Faulted", "Cancelled"):
            if time.monotonic() > deadline:
                raise DrillFailed("the data loss did not end in time")
            time.sleep(0.2)
            info = self.call("GET", f"{base}/GetDataLossProgress", params={"OperationId": op})
        if info["State"] != "Completed":
            raise DrillFailed(f"the data loss ended {info['State']}: {info}")
        print(f"data loss completed: {info.get('Result')}")
        return info

    def check(self, last_lsn: int, epoch_before: int) -> None:
        r = self.orders.get("/orders")
        r.raise_for_status()
        doc = r.json()
        have: dict[str, Any] = doc["orders"]
        kept = {k: v for k, (lsn, v) in self.committed.items() if lsn <= last_lsn}
        lost = {k for k, (lsn, _) in self.committed.items() if lsn > last_lsn}
        missing = [k for k, v in kept.items() if have.get(k) != v]
        unexpected = sorted(set(have) - set(kept))
        print(
            f"after the drill: {len(have)} orders at LSN {doc['lsn']}, epoch {doc['epoch']}; "
            f"{len(kept)} committed up to LSN {last_lsn}, {len(lost)} after it"
        )
        if missing:
            raise DrillFailed(f"{len(missing)} orders up to LSN {last_lsn} are not back: {missing}")
        if unexpected:
            raise DrillFailed(f"orders that no backup held came back: {unexpected[:10]}")
        if doc["lsn"] != last_lsn:
            raise DrillFailed(f"the store is at LSN {doc['lsn']}, not {last_lsn}")
        if doc["epoch"][0] <= epoch_before:
            raise DrillFailed(f"the epoch did not move: {doc['epoch']}")
        print(f"OK: every order up to LSN {last_lsn} is back; the {len(lost)} later ones are gone")

    def run(self) -> None:
        self.setup()
        self.load(self.args.orders_count, "full")
        self.backup("Full")
        for n in range(self.args.incrementals):
            self.load(max(1, self.args.orders_count // 10), f"inc{n}")
            last = self.backup("Incremental")
        if self.args.incrementals == 0:
            last = self.backup("Full")
        self.load(5, "late")
        epoch_before = int(self.orders.get("/orders").json()["epoch"][0])
        self.data_loss()
        self.check(int(last["LsnOfLastBackupRecord"]), epoch_before)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--controller", required=True)
    p.add_argument("--orders", required=True, help="the orders service's URL")
    p.add_argument("--partition", required=True)
    p.add_argument("--application", default="fabric:/Shop")
    p.add_argument("--service", default="fabric:/Shop/Orders")
    p.add_argument("--agent", default="orders-1")
    p.add_argument("--storage", required=True, help="the FileShare path for the policy")
    p.add_argument("--policy", default="orders-drill")
    p.add_argument("--auto-restore", action="store_true", help="AutoRestoreOnDataLoss on")
    p.add_argument("--mode", choices=("FullDataLoss", "PartialDataLoss"), default="FullDataLoss")
    p.add_argument("--orders-count", type=int, default=200)
    p.add_argument("--incrementals", type=int, default=2)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per step")
    args = p.parse_args()
    token = os.environ.get("SAFEHOLD_TOKEN")
    if not token:
        p.error("set SAFEHOLD_TOKEN to an admin token")
    try:
        Drill(args, token).run()
    except (DrillFailed, httpx.HTTPError) as exc:
        print(f"DRILL FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
