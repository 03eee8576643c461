"""
The orders example's fire drill, end to end: a controller, the orders service, the drill.

The first case also drills, on schedule, a ``dir:`` and a ``command:`` partition run by
an agent process of their own beside the ``state:`` partition of the orders service:
one run with real processes for the three kinds of partition (issue 12).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from safehold.testing import free_port
from tests.agent.procs import (
    ADMIN,
    AGENT,
    Proc,
    api,
    env,
    start_agent,
    start_controller,
    wait_backups,
    wait_state,
)

ROOT = Path(__file__).resolve().parents[2]
ORDERS = ROOT / "examples" / "orders"


def start_orders(
    data: Path, controller: str, pid: str, storage: Path, restore: str
) -> tuple[Proc, str]:
    port = free_port()
    log = data.parent / "orders.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            [
                sys.executable,
                str(ORDERS / "service.py"),
                "--data",
                str(data),
                "--port",
                str(port),
                "--controller",
                controller,
                "--partition",
                pid,
                "--backup-path",
                str(storage),
                "--restore",
                restore,
                "--poll",
                "0.2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env(), "SAFEHOLD_TOKEN": AGENT},
            start_new_session=True,
        )
    proc = Proc(popen, log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise AssertionError(f"orders exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.stop()
    raise AssertionError("the orders service did not start")


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()


@pytest.mark.parametrize(
    ("restore", "drill_args"),
    [
        ("hook", ["--mode", "FullDataLoss"]),
        ("none", ["--mode", "PartialDataLoss", "--auto-restore"]),
    ],
    ids=["hook-full", "auto-restore-partial"],
)
def test_the_drill_brings_back_every_order_up_to_the_last_backup(
    tmp_path: Path, procs: list[Proc], restore: str, drill_args: list[str]
) -> None:
    controller, url = start_controller(tmp_path / "controller")
    procs.append(controller)
    pid = str(uuid.uuid4())
    storage = tmp_path / "backups"
    orders, orders_url = start_orders(tmp_path / "orders", url, pid, storage, restore)
    procs.append(orders)
    r = subprocess.run(
        [
            sys.executable,
            str(ORDERS / "drill.py"),
            "--controller",
            url,
            "--orders",
            orders_url,
            "--partition",
            pid,
            "--storage",
            str(storage),
            "--orders-count",
            "120",
            *drill_args,
        ],
        capture_output=True,
        text=True,
        env={**env(), "SAFEHOLD_TOKEN": ADMIN},
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{orders.log.read_text()[-3000:]}"
    assert "OK: every order up to LSN" in r.stdout
    # The catalog holds the store's own chain: a full backup and two incrementals after it.
    backups = api(url, "GET", f"/Partitions/{pid}/$/GetBackups")["Items"]
    assert [b["BackupType"] for b in backups] == ["Full", "Incremental", "Incremental"]
    assert len({b["BackupChainId"] for b in backups}) == 1
    lsns = [int(b["LsnOfLastBackupRecord"]) for b in backups]
    assert lsns == sorted(lsns)
    assert lsns[0] == 120
    # The orders service's state agrees with the last backup, in a new epoch.
    doc = httpx.get(f"{orders_url}/orders", timeout=10).json()
    assert (doc["lsn"], len(doc["orders"])) == (lsns[-1], lsns[-1])
    assert doc["epoch"][0] >= 1
    # An operator's restore through the controller runs in the service too: back to the full.
    full = backups[0]
    api(
        url,
        "POST",
        f"/Partitions/{pid}/$/Restore",
        json={"BackupId": full["BackupId"], "BackupLocation": full["BackupLocation"]},
    )
    info = wait_state(url, pid, "Restore")
    assert info["RestoreState"] == "Success", info
    assert info["RestoredLsn"] == "120"
    after = httpx.get(f"{orders_url}/orders", timeout=10).json()
    assert (after["lsn"], len(after["orders"])) == (120, 120)
    assert after["epoch"][0] > doc["epoch"][0]
    assert all(k.startswith("full-") for k in after["orders"])
    if restore != "hook":
        return
    # SF's fire drill above is in the drill history too, measured like a drill.
    runs = api(url, "GET", f"/safehold/partitions/{pid}/drills")
    fired = [r for r in runs if r["Kind"] == "DataLoss" and r["Trigger"] == "StartDataLoss"]
    assert fired, runs
    assert fired[0]["State"] == "Success", fired[0]
    assert fired[0]["RtoSeconds"] is not None
    # A restore drill of the state: partition, run by the orders service's own agent
    # in a temporary store: it passes, and the live store is left as it was.
    api(
        url,
        "POST",
        "/safehold/drills/policies",
        json={
            "Name": "orders-restore",
            "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "P1D"},
            "Sandbox": {"Directory": str(tmp_path / "sandboxes")},
            "Objectives": {"Rpo": "P1D", "Rto": "PT5M"},
        },
    )
    api(url, "POST", "/safehold/drills/policies/orders-restore/$/Attach", json={"PartitionId": pid})
    # Its first drill is due at once (the partition has backups): the scheduler starts it.
    deadline = time.monotonic() + 120
    while True:
        runs = api(url, "GET", f"/safehold/partitions/{pid}/drills")
        mine = [r for r in runs if r["Policy"] == "orders-restore"]
        done = [r for r in mine if r["State"] in ("Success", "Failure", "Timeout")]
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert done, runs
    run = done[0]
    assert run["Trigger"] == "Schedule", run
    assert run["State"] == "Success", f"{run}\n{orders.log.read_text()[-3000:]}"
    assert run["Kind"] == "Restore"
    assert run["RtoSeconds"] is not None
    live = httpx.get(f"{orders_url}/orders", timeout=10).json()
    assert (live["lsn"], len(live["orders"]), live["epoch"]) == (
        after["lsn"],
        len(after["orders"]),
        after["epoch"],
    )
    assert not any((tmp_path / "sandboxes").iterdir())  # the sandbox is cleaned
    # The same drill policy on a dir: and a command: partition, backed up and drilled
    # by an agent process of their own (pinned to it): their first drills run on
    # schedule and pass, and leave no sandbox.
    procs.append(start_agent([url], "files", tmp_path / "files-agent.log"))
    src = tmp_path / "files-src"
    src.mkdir()
    (src / "a.txt").write_text("kept by the files agent")
    dump = f'command:{sys.executable} -c "print(42)"'
    others = {str(uuid.uuid4()): f"dir:{src}", str(uuid.uuid4()): dump}
    for other, source in others.items():
        body = {
            "ApplicationName": "fabric:/Files",
            "ServiceName": "fabric:/Files/Svc",
            "PartitionId": other,
            "Source": source,
            "Agent": "files",
        }
        api(url, "POST", "/safehold/partitions", json=body)
    policy = {
        "Name": "files",
        "AutoRestoreOnDataLoss": False,
        "MaxIncrementalBackups": 0,
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "P1D"},
        "Storage": {"StorageKind": "FileShare", "Path": str(tmp_path / "files-store")},
    }
    api(url, "POST", "/BackupRestore/BackupPolicies/$/Create", json=policy)
    api(url, "POST", "/Applications/Files/$/EnableBackup", json={"BackupPolicyName": "files"})
    for other in others:
        wait_backups(url, other)
    api(
        url,
        "POST",
        "/safehold/drills/policies/orders-restore/$/Attach",
        json={"ApplicationName": "fabric:/Files"},
    )
    for other in others:
        run = _scheduled_drill(url, other)
        assert (run["State"], run["Trigger"], run["Agent"]) == ("Success", "Schedule", "files")
        assert run["RtoSeconds"] is not None
    assert not any((tmp_path / "sandboxes").iterdir())


def _scheduled_drill(url: str, pid: str) -> dict[str, Any]:
    """The partition's first finished drill (waiting for the scheduler to run it)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = api(url, "GET", f"/safehold/partitions/{pid}/drills")
        done = [r for r in runs if r["State"] in ("Success", "Failure", "Timeout")]
        if done:
            return dict(done[-1])
        time.sleep(0.2)
    raise AssertionError(f"no drill of partition {pid} ended")
