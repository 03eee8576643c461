"""
Drills of a ``postgres:`` partition on a real cluster: its base backup is restored
into a scratch PostgreSQL instance in the sandbox, SQL validators query it, and
the instance and the sandbox are gone afterwards, whether the validators pass or
fail, and after a drill that was killed midway.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from safehold.agent.drill import MARKER, clean_leftovers, run_drill
from safehold.agent.sandbox_pg import PG_DIR, restore_scratch
from safehold.core.progress import NullProgress
from safehold.core.snapshot import format_time
from safehold.core.work import WorkItem
from safehold.db import LocalServer, PostgresSource
from safehold.service.engine import RepoEngine
from safehold.storage.file import FileStorage
from tests.db.conftest import FAST_KDF, PASSWORD, Env, make_env, needs_pg
from tests.db.helpers import sql

pytestmark = needs_pg

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class World:
    env: Env
    pg: LocalServer
    snapshot_id: str
    engine: RepoEngine

    def item(self, validators: list[dict[str, Any]], drill_id: str) -> WorkItem:
        return WorkItem(
            JobId=f"job-{drill_id}",
            Kind="drill",
            Deadline=format_time(NOW + timedelta(minutes=10)),
            Partition={
                "PartitionId": "p-pg",
                "ApplicationName": "fabric:/Shop",
                "ServiceName": "fabric:/Shop/Db",
                "Source": f"postgres:{self.pg.url}",
            },
            Storage={"StorageKind": "FileShare", "Path": str(self.env.repo_path)},
            Params={
                "drill_id": drill_id,
                "snapshot_id": self.snapshot_id,
                "backup_time": format_time(NOW - timedelta(minutes=5)),
                "validators": validators,
                "sandbox_dir": str(self.env.root / "sandboxes"),
            },
        )

    def drill(self, validators: list[dict[str, Any]], drill_id: str) -> Any:
        storage = FileStorage(self.env.repo_path)
        try:
            return run_drill(
                self.item(validators, drill_id), self.engine, storage, NullProgress(), lambda: NOW
            )
        finally:
            storage.close()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with make_env() as env:
        pg = env.make_cluster()
        sql(pg, "CREATE TABLE orders (id int PRIMARY KEY, item text)")
        sql(pg, "INSERT INTO orders VALUES (1, 'apple'), (2, 'pear'), (3, 'plum')")
        with env.open_repo() as repo:
            snap = PostgresSource(pg.url).backup(repo).snapshot
        sql(pg, "INSERT INTO orders VALUES (4, 'after the backup')")
        engine = RepoEngine(PASSWORD, kdf=FAST_KDF)
        yield World(env, pg, snap.id, engine)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sql_validators_pass_on_a_scratch_instance(world: World) -> None:
    out = world.drill(
        [
            {"Kind": "Sql", "Query": "SELECT count(*) FROM orders", "Expect": {"Scalar": 3}},
            {
                "Kind": "Sql",
                "Query": "SELECT id, item FROM orders ORDER BY id",
                "Expect": {"Rows": [[1, "apple"], [2, "pear"], [3, "plum"]]},
            },
            {
                "Kind": "Sql",
                "Query": "SELECT * FROM orders WHERE id > 1",
                "Expect": {"RowCount": 2},
            },
            {"Kind": "Command", "Command": 'test "$PGPORT" -gt 0 && test -d "$PGHOST"'},
        ],
        "pass",
    )
    result = out.Result
    assert out.State == "Success", out.Error
    assert [v["Passed"] for v in result["Validators"]] == [True, True, True, True]
    assert result["RtoSeconds"] >= result["RestoreSeconds"] > 0
    assert result["RpoSeconds"] == 300
    assert result["RecoverableEndLsn"]
    port = result["Port"]
    assert port != world.pg.port
    assert not port_open(port)  # the scratch instance is stopped
    assert not Path(result["Sandbox"]).exists()
    assert result["SandboxRemoved"] is True
    # The live cluster was never touched: it still has the row the backup lacks.
    assert sql(world.pg, "SELECT count(*) FROM orders")[0][0] == 4


def test_a_failing_sql_validator_names_the_difference(world: World) -> None:
    out = world.drill(
        [
            {
                "Kind": "Sql",
                "Query": "SELECT id, item FROM orders ORDER BY id",
                "Expect": {"Rows": [[1, "apple"], [2, "peach"], [3, "plum"], [4, "fig"]]},
            },
            {"Kind": "Sql", "Query": "SELECT count(*) FROM orders", "Expect": {"Scalar": 4}},
            {"Kind": "Sql", "Query": "SELECT * FROM missing_table", "Expect": {"RowCount": 0}},
        ],
        "fail",
    )
    assert out.State == "Failure"
    assert out.Error is not None
    assert out.Error.Code == "SAFEHOLD_E_DRILL_VALIDATION"
    assert 'row 2: expected [2, "peach"], got [2, "pear"]' in out.Error.Message
    rows, scalar, missing = out.Result["Validators"]
    assert 'expected 4 rows, got 3; first missing row [4, "fig"]' in rows["Detail"]
    assert '[2, "pear"]' in rows["Output"]
    assert scalar["Detail"] == "expected 4, got 3"
    assert "missing_table" in missing["Detail"]
    assert "RtoSeconds" not in out.Result
    assert not port_open(out.Result["Port"])
    assert not Path(out.Result["Sandbox"]).exists()


def test_a_killed_drills_instance_is_stopped_and_removed(world: World) -> None:
    root = world.env.root / "killed"
    sandbox = root / "drill-killed"
    sandbox.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    owner = {"pid": int(dead.stdout), "host": socket.gethostname(), "drill": "killed"}
    (sandbox / MARKER).write_text(json.dumps(owner))
    storage = FileStorage(world.env.repo_path)
    try:
        with world.engine.open_repository(storage) as repo:
            scratch = restore_scratch(
                repo, world.snapshot_id, sandbox, deadline=_in(300), progress=NullProgress()
            )
    finally:
        storage.close()
    assert port_open(scratch.port)
    assert (sandbox / PG_DIR / "postmaster.pid").exists()
    assert clean_leftovers(root) == [str(sandbox)]
    assert not port_open(scratch.port)
    assert not sandbox.exists()


def _in(seconds: float) -> float:
    import time

    return time.monotonic() + seconds
