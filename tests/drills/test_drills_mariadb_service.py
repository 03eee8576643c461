"""
A drill of a ``mariadb:`` partition through the controller, with real processes.

A throw-away MariaDB server (binary log on, its own port; never the machine's
server at 3306) is registered as a ``mariadb:`` partition on a served controller
with its embedded agent. Its backup policy takes a backup through the service;
a row written afterwards is in the live server only. A drill policy with SQL
validators attached to the partition makes the controller schedule a drill: the
agent restores the backup into a scratch ``mariadbd`` in the sandbox, the
validators see the backed-up rows, and the run reads back as an operator reads
it (history, ``drill show``, Prometheus). A second policy that expects the wrong
rows, run with ``safehold drill run --wait``, fails naming the difference, and
health and metrics follow. Each drill leaves no scratch instance and no sandbox
behind, and the live server keeps its data and was never restarted.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from safehold.agent.drill import clean_leftovers
from safehold.bootstrap import Controller, Settings, build_controller
from safehold.db import free_port
from safehold.db.mysqld import MariaDbServer
from safehold.service import drills
from safehold.testing import serve_in_thread
from tests.drills.test_drills_mariadb import port_open, processes_in

pytestmark = [
    pytest.mark.skipif(
        not all(shutil.which(p) for p in ("mariadbd", "mariadb-backup", "mbstream", "mariadb")),
        reason="MariaDB's server and mariadb-backup are not installed",
    ),
    pytest.mark.timeout(180),  # a safety net: the test takes well under a minute
]

ADMIN = "mariadb-drill-admin-token"
PASSWORD = "mariadb drill test repository password"
APP = "fabric:/Shop"
PID = str(uuid.UUID(int=0x3306))
SQL_ROWS = "SELECT id, item FROM orders ORDER BY id"
BACKED_UP = [[1, "apple"], [2, "pear"], [3, "plum"]]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0) -> Any:
    """Poll *check* until it returns something truthy; fail naming *what*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def ok(resp: httpx.Response) -> Any:
    assert resp.status_code < 300, resp.text
    return resp.json() if resp.content else None


@dataclass
class World:
    http: httpx.Client
    controller: Controller
    live: MariaDbServer
    root: Path

    @property
    def sandboxes(self) -> Path:
        # Short: the scratch server's socket path must fit in 107 bytes.
        return self.root / "sb"

    def live_ids(self) -> list[str]:
        return [r[0] for r in self.live.client().query("SELECT id FROM shop.orders ORDER BY id")]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    """A served controller (embedded agent, scheduler running) and a throw-away MariaDB."""
    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    monkeypatch.setenv("SAFEHOLD_SECRET_KEY", base64.urlsafe_b64encode(b"m" * 32).decode())
    monkeypatch.delenv("SAFEHOLD_TOKENS", raising=False)
    monkeypatch.delenv("SAFEHOLD_DRILL_SANDBOX", raising=False)
    # Under /tmp, open to the mysql OS user the servers run as (pytest's tmp_path is not).
    root = Path(tempfile.mkdtemp(prefix="safehold-mdrill-", dir="/tmp"))
    root.chmod(0o755)
    live = MariaDbServer(root / "live", free_port())
    settings = Settings(
        data_dir=tmp_path / "ctl",
        tokens={ADMIN: "admin"},
        tick_seconds=0.2,
        schedule_spread=0,
        fast_kdf=True,
    )
    controller = build_controller(settings)
    try:
        live.install()
        live.start("--log-bin=binlog", "--server-id=1")
        live.client().query(
            "CREATE DATABASE shop;"
            "CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(40)) ENGINE=InnoDB;"
            "INSERT INTO shop.orders VALUES (1, 'apple'), (2, 'pear'), (3, 'plum')"
        )
        with (
            serve_in_thread(controller.app) as base,
            httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
            ) as http,
        ):
            yield World(http, controller, live, root)
    finally:
        controller.close()
        clean_leftovers(root / "sb")  # a failed test's scratch instance, if any
        live.stop()
        shutil.rmtree(root, ignore_errors=True)


def cli(url: str) -> Callable[..., tuple[int, str]]:
    """The ``safehold`` service CLI in this process (a subprocess costs seconds): (exit, output)."""
    import typer
    from typer.testing import CliRunner

    from safehold.cli import service_cli

    app = typer.Typer()
    service_cli.register(app)
    runner = CliRunner()
    env = {"SAFEHOLD_URL": url, "SAFEHOLD_TOKEN": ADMIN, "COLUMNS": "250"}

    def run(*args: str) -> tuple[int, str]:
        r = runner.invoke(app, list(args), env=env)
        return r.exit_code, r.output

    return run


def history(http: httpx.Client) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = ok(http.get(f"/safehold/partitions/{PID}/drills"))
    return runs


def metric(http: httpx.Client, name: str) -> str | None:
    """The value of *name* for the partition in /metrics (served from a background view)."""
    prefix = f'{name}{{partition_id="{PID}"}} '
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :]
    return None


def back_up(w: World) -> dict[str, Any]:
    """Register the server as a partition, enable a backup policy; return its first backup."""
    http = w.http
    ok(
        http.post(
            "/BackupRestore/BackupPolicies/$/Create",
            params={"api-version": "6.4"},
            json={
                "Name": "shop-hourly",
                "AutoRestoreOnDataLoss": False,
                "MaxIncrementalBackups": 0,
                "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT1H"},
                "Storage": {"StorageKind": "FileShare", "Path": str(w.root / "storage")},
            },
        )
    )
    ok(
        http.post(
            "/safehold/partitions",
            json={
                "ApplicationName": APP,
                "ServiceName": f"{APP}/Db",
                "PartitionId": PID,
                "Source": f"mariadb:mysql://root@127.0.0.1:{w.live.port}",
            },
        )
    )
    ok(
        http.post(
            f"/Partitions/{PID}/$/EnableBackup",
            params={"api-version": "6.4"},
            json={"BackupPolicyName": "shop-hourly"},
        )
    )
    items = wait_for(
        "the first backup of the mariadb: partition",
        lambda: ok(http.get(f"/Partitions/{PID}/$/GetBackups", params={"api-version": "6.4"}))[
            "Items"
        ],
    )
    assert len(items) == 1
    backup: dict[str, Any] = items[0]
    return backup


def drill_policies(w: World) -> None:
    """One policy whose SQL validators expect the backed-up rows, one that expects others."""
    common = {
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT1H"},
        "Sandbox": {"Directory": str(w.sandboxes)},
        "Timeout": "PT5M",
        "Objectives": {"Rpo": "PT1H", "Rto": "PT10M"},
    }
    passing = [
        {"Kind": "Sql", "Database": "shop", "Query": "SELECT count(*) FROM orders",
         "Expect": {"Scalar": 3}},
        {"Kind": "Sql", "Database": "shop", "Query": SQL_ROWS, "Expect": {"Rows": BACKED_UP}},
    ]  # fmt: skip
    failing = [
        {"Kind": "Sql", "Database": "shop", "Query": SQL_ROWS,
         "Expect": {"Rows": [[1, "apple"], [2, "peach"], [3, "plum"]]}},
        {"Kind": "Sql", "Query": "SELECT count(*) FROM shop.orders", "Expect": {"Scalar": 4}},
    ]  # fmt: skip
    for name, validators in (("shop-drill", passing), ("shop-wrong", failing)):
        body = {"Name": name, **common, "Validators": validators}
        ok(w.http.post("/safehold/drills/policies", json=body))


def assert_cleaned(w: World, run: dict[str, Any]) -> None:
    """No scratch instance and no sandbox left by *run*."""
    sandbox = Path(run["Sandbox"])
    assert sandbox.parent == w.sandboxes
    assert not sandbox.exists()
    assert processes_in(sandbox) == []
    stored = drills.get_drill(w.controller.ctx, run["DrillId"]).result
    assert stored["SandboxRemoved"] is True
    assert stored["Port"] != w.live.port  # its own instance, not the live server
    assert not port_open(stored["Port"])


def test_a_mariadb_partition_is_drilled_through_the_controller(world: World) -> None:
    w, http = world, world.http
    backup = back_up(w)
    live_pid = w.live.pid()
    w.live.client().query("INSERT INTO shop.orders VALUES (4, 'after the backup')")
    drill_policies(w)

    # Attached to the partition: the controller schedules a drill at once; it passes
    # on the backed-up rows (the live server's 4th row is not in the backup).
    ok(http.post("/safehold/drills/policies/shop-drill/$/Attach", json={"PartitionId": PID}))
    done = wait_for(
        "the scheduled drill",
        lambda: [r for r in history(http) if r["State"] in ("Success", "Failure", "Timeout")],
    )
    run = done[0]
    assert run["State"] == "Success", run
    assert run["Trigger"] == "Schedule"
    assert run["Policy"] == "shop-drill"
    assert run["BackupId"] == backup["BackupId"]
    assert run["RtoSeconds"] > 0
    assert run["RpoSeconds"] is not None
    assert run["RpoSeconds"] >= 0
    assert run["ObjectivesMet"] is True
    assert run["Agent"]
    assert run["Failure"] is None
    assert [(v["Kind"], v["Passed"], v["Detail"]) for v in run["Validators"]] == [
        ("Sql", True, "1 rows as expected"),
        ("Sql", True, "3 rows as expected"),
    ]
    assert '[2, "pear"]' in run["Validators"][1]["Output"]
    stored = drills.get_drill(w.controller.ctx, run["DrillId"]).result
    # The last recoverable instant, for a database: in the API's record as in the catalog.
    assert run["RecoverableEnd"]["Time"] == stored["RecoverableEndTime"]
    assert_cleaned(w, run)

    # What an operator reads: ``drill show`` and Prometheus.
    run_cli = cli(str(http.base_url))
    code, out = run_cli("drill", "show", run["DrillId"])
    shown = " ".join(out.split())  # however it wraps
    assert code == 0, out
    assert ": Success" in shown
    assert f"backup {backup['BackupId']}" in shown
    assert "[pass] Sql SELECT count(*) FROM orders: 1 rows as expected" in shown
    assert f"recoverable up to: Time {stored['RecoverableEndTime']}" in shown
    wait_for("the drill metrics", lambda: metric(http, "safehold_drill_last_success") == "1.0")
    rto = metric(http, "safehold_drill_rto_seconds")
    assert rto is not None
    assert float(rto) == pytest.approx(run["RtoSeconds"])
    assert metric(http, "safehold_drill_rpo_seconds") is not None
    assert ok(http.get(f"/safehold/partitions/{PID}/health"))["Drill"]["HealthState"] == "Ok"

    # The wrong expectation, with ``safehold drill run --wait``: a Failure naming the
    # difference, each validator's result kept; health and metrics follow.
    code, out = run_cli("drill", "run", PID, "--policy", "shop-wrong", "--wait")
    shown = " ".join(out.split())
    assert code == 1, out
    assert ": Failure" in shown
    assert f'[FAIL] Sql {SQL_ROWS}: row 2: expected [2, "peach"], got [2, "pear"]' in shown
    assert "[FAIL] Sql SELECT count(*) FROM shop.orders: expected 4, got 3" in shown
    failed = history(http)[0]
    assert failed["State"] == "Failure", failed
    assert failed["Trigger"] == "Manual"
    assert failed["Policy"] == "shop-wrong"
    assert failed["BackupId"] == backup["BackupId"]
    assert failed["Failure"].startswith("SAFEHOLD_E_DRILL_VALIDATION: ")
    assert 'row 2: expected [2, "peach"], got [2, "pear"]' in failed["Failure"]
    assert failed["RtoSeconds"] is None  # nothing was proven restorable
    assert failed["RpoSeconds"] is not None
    assert [v["Passed"] for v in failed["Validators"]] == [False, False]
    assert failed["Validators"][1]["Detail"] == "expected 4, got 3"
    assert_cleaned(w, failed)
    wait_for(
        "the failed drill's metric", lambda: metric(http, "safehold_drill_last_success") == "0.0"
    )
    assert metric(http, "safehold_drill_rto_seconds") == rto  # the last measured RTO stands
    health = wait_for(
        "the partition's health to report the failed drill",
        lambda: (
            (d := ok(http.get(f"/safehold/partitions/{PID}/health")))["Drill"]["HealthState"]
            == "Error"
            and d
        ),
    )
    assert health["Drill"]["Description"].startswith("the last restore drill failed: ")
    assert 'expected [2, "peach"], got [2, "pear"]' in health["Drill"]["Description"]

    # Nothing is left: no sandbox, no process naming one; the live server has all
    # its rows, the one written after the backup too, and was never restarted.
    assert list(w.sandboxes.iterdir()) == []
    assert processes_in(w.sandboxes) == []
    assert w.live_ids() == ["1", "2", "3", "4"]
    assert w.live.pid() == live_pid
    assert w.live.running()
    code, out = run_cli("drill", "history", PID, "--json")
    assert code == 0, out
    assert [r["State"] for r in json.loads(out)] == ["Failure", "Success"]
