"""
Drills of a ``mariadb:`` partition on real servers: the partition is backed up by
the agent's database-source path (``agent.sources.backup_db``: mariadb-backup,
binlogs archived), its backup is restored, prepared and started as a scratch
``mariadbd`` in the sandbox, SQL validators query it, and the instance and the
sandbox are gone afterwards, whether the validators pass or fail, and after a
drill that was killed midway. The backed-up server is never touched: a row
written after the backup is still there, and absent from the drill's copy.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from safehold.agent.drill import MARKER, clean_leftovers, run_drill
from safehold.agent.sandbox_mariadb import MY_DIR, restore_scratch
from safehold.agent.sources import backup_db
from safehold.core.progress import NullProgress
from safehold.core.snapshot import SnapshotMeta, format_time
from safehold.core.work import WorkItem
from safehold.db import free_port
from safehold.db.mariadb import MariaDbSource
from safehold.db.mysqld import ClientOptions, MariaDbServer
from safehold.service.engine import RepoEngine
from safehold.storage.file import FileStorage
from tests.db.conftest import FAST_KDF, PASSWORD, Env, make_env

pytestmark = pytest.mark.skipif(
    not all(shutil.which(p) for p in ("mariadbd", "mariadb-backup", "mbstream", "mariadb")),
    reason="MariaDB's server and mariadb-backup are not installed",
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class World:
    env: Env
    engine: RepoEngine

    def item(
        self, source: str, snapshot_id: str, validators: list[dict[str, Any]], drill_id: str
    ) -> WorkItem:
        return WorkItem(
            JobId=f"job-{drill_id}",
            Kind="drill",
            Deadline=format_time(NOW + timedelta(minutes=10)),
            Partition={
                "PartitionId": "p-my",
                "ApplicationName": "fabric:/Shop",
                "ServiceName": "fabric:/Shop/Db",
                "Source": source,
            },
            Storage={"StorageKind": "FileShare", "Path": str(self.env.repo_path)},
            Params={
                "drill_id": drill_id,
                "snapshot_id": snapshot_id,
                "backup_time": format_time(NOW - timedelta(minutes=5)),
                "validators": validators,
                "sandbox_dir": str(self.env.root / "sandboxes"),
            },
        )

    def backup(self, source: str) -> str:
        """Back the partition up as an agent does; return the snapshot's id."""
        item = WorkItem(
            JobId="job-backup",
            Kind="backup",
            Deadline=format_time(NOW + timedelta(minutes=10)),
            Partition={"PartitionId": "p-my", "ApplicationName": "fabric:/Shop",
                       "ServiceName": "fabric:/Shop/Db", "Source": source},
        )  # fmt: skip
        storage = FileStorage(self.env.repo_path)
        try:
            return backup_db(item, self.engine, storage, SnapshotMeta(), NullProgress()).id
        finally:
            storage.close()

    def drill(
        self, source: str, snapshot_id: str, validators: list[dict[str, Any]], drill_id: str
    ) -> Any:
        storage = FileStorage(self.env.repo_path)
        try:
            item = self.item(source, snapshot_id, validators, drill_id)
            return run_drill(item, self.engine, storage, NullProgress(), lambda: NOW)
        finally:
            storage.close()


@dataclass
class Shop:
    """A MariaDB server of the test's own (binary log on), backed up as a partition."""

    world: World
    server: MariaDbServer
    source: str
    snapshot_id: str

    def drill(self, validators: list[dict[str, Any]], drill_id: str) -> Any:
        return self.world.drill(self.source, self.snapshot_id, validators, drill_id)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with make_env() as env:
        yield World(env, RepoEngine(PASSWORD, kdf=FAST_KDF))


@pytest.fixture(scope="module")
def shop(world: World) -> Iterator[Shop]:
    server = MariaDbServer(world.env.root / "live", free_port())
    try:
        server.install()
        server.start("--log-bin=binlog", "--server-id=1")
        db = server.client()
        db.query("CREATE DATABASE shop")
        db.query("CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(40)) ENGINE=InnoDB")
        db.query("INSERT INTO shop.orders VALUES (1, 'apple'), (2, 'pear'), (3, 'plum')")
        source = f"mariadb:mysql://root@127.0.0.1:{server.port}"
        snapshot_id = world.backup(source)
        db.query("INSERT INTO shop.orders VALUES (4, 'after the backup')")
        with world.engine.open_repository(FileStorage(world.env.repo_path)) as repo:
            MariaDbSource(source.split(":", 1)[1]).archive_binlogs(repo)  # closes the 4th row's
        yield Shop(world, server, source, snapshot_id)
    finally:
        server.stop()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def processes_in(path: Path) -> list[int]:
    """The processes whose command line names *path* (a scratch mariadbd names its datadir)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(path).encode() in cmdline:
            found.append(int(pid))
    return found


def assert_cleaned(result: dict[str, Any]) -> None:
    assert not port_open(result["Port"])  # the scratch instance is stopped
    assert processes_in(Path(result["Sandbox"])) == []
    assert not Path(result["Sandbox"]).exists()
    assert result["SandboxRemoved"] is True


def test_sql_validators_pass_on_a_scratch_instance(shop: Shop) -> None:
    out = shop.drill(
        [
            {
                "Kind": "Sql",
                "Database": "shop",
                "Query": "SELECT count(*) FROM orders",
                "Expect": {"Scalar": 3},
            },
            {
                "Kind": "Sql",
                "Database": "shop",
                "Query": "SELECT id, item FROM orders ORDER BY id",
                "Expect": {"Rows": [[1, "apple"], [2, "pear"], [3, "plum"]]},
            },
            {
                "Kind": "Sql",
                "Query": "SELECT * FROM shop.orders WHERE id > 1",
                "Expect": {"RowCount": 2},
            },
            {
                "Kind": "Sql",
                "Query": "SELECT NULL, 'NULL', 1.50, 'x<y&z', '12'",
                "Expect": {"Rows": [[None, "NULL", 1.5, "x<y&z", "12"]]},
            },
            {
                "Kind": "Command",
                "Command": 'test "$(mariadb --socket="$SAFEHOLD_MARIADB_SOCKET" -u root -N '
                '-e "SELECT count(*) FROM shop.orders")" = 3',
            },
        ],
        "pass",
    )
    result = out.Result
    assert out.State == "Success", out.Error
    assert [v["Passed"] for v in result["Validators"]] == [True] * 5
    assert result["RtoSeconds"] >= result["RestoreSeconds"] > 0
    assert result["RpoSeconds"] == 300
    assert result["RecoverableEndTime"]
    assert result["RecoverableEndBinlog"].startswith("binlog.")  # the 4th row is in it
    assert result["Port"] != shop.server.port
    assert_cleaned(result)
    # The backed-up server was never touched: it still has the row the backup lacks.
    rows = shop.server.client().query("SELECT id FROM shop.orders ORDER BY id")
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]


def test_a_failing_sql_validator_fails_the_drill_with_its_output(shop: Shop) -> None:
    out = shop.drill(
        [
            {
                "Kind": "Sql",
                "Database": "shop",
                "Query": "SELECT id, item FROM orders ORDER BY id",
                "Expect": {"Rows": [[1, "apple"], [2, "peach"], [3, "plum"], [4, "fig"]]},
            },
            {"Kind": "Sql", "Query": "SELECT count(*) FROM shop.orders", "Expect": {"Scalar": 4}},
            {"Kind": "Sql", "Query": "SELECT * FROM shop.missing", "Expect": {"RowCount": 0}},
            {
                "Kind": "Sql",
                "Query": "SELECT SLEEP(30)",
                "Expect": {"Scalar": 0},
                "TimeoutSeconds": 1,
            },
        ],
        "fail",
    )
    assert out.State == "Failure"
    assert out.Error is not None
    assert out.Error.Code == "SAFEHOLD_E_DRILL_VALIDATION"
    assert 'row 2: expected [2, "peach"], got [2, "pear"]' in out.Error.Message
    rows, scalar, missing, slow = out.Result["Validators"]
    assert 'expected 4 rows, got 3; first missing row [4, "fig"]' in rows["Detail"]
    assert '[2, "pear"]' in rows["Output"]
    assert scalar["Detail"] == "expected 4, got 3"
    assert "shop.missing" in missing["Detail"]
    assert "doesn't exist" in missing["Detail"]
    assert "max_statement_time exceeded" in slow["Detail"]  # stopped by the server
    assert "RtoSeconds" not in out.Result
    assert_cleaned(out.Result)


def test_a_killed_drills_instance_is_stopped_and_removed(shop: Shop) -> None:
    root = shop.world.env.root / "killed"
    sandbox = root / "drill-killed"
    sandbox.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    owner = {"pid": int(dead.stdout), "host": socket.gethostname(), "drill": "killed"}
    (sandbox / MARKER).write_text(json.dumps(owner))
    storage = FileStorage(shop.world.env.repo_path)
    try:
        with shop.world.engine.open_repository(storage) as repo:
            scratch = restore_scratch(
                repo, shop.snapshot_id, sandbox, deadline=time.monotonic() + 300,
                progress=NullProgress(),
            )  # fmt: skip
    finally:
        storage.close()
    assert port_open(scratch.port)
    pid_file = sandbox / f"{MY_DIR}.run" / "mysqld.pid"
    assert pid_file.exists()
    assert processes_in(sandbox) != []
    pid_file.unlink()  # as if killed before the server wrote it: found by its command line
    assert clean_leftovers(root) == [str(sandbox)]
    assert not port_open(scratch.port)
    assert processes_in(sandbox) == []
    assert not sandbox.exists()


def _checksums(client: ClientOptions, database: str) -> list[list[str]]:
    return client.query(f"CHECKSUM TABLE {database}.t EXTENDED")


def test_a_drill_of_the_machines_server_leaves_it_untouched(world: World) -> None:
    """127.0.0.1:3306: a database of our own is drilled; the server keeps its data."""
    live = ClientOptions.from_url("mysql://root@127.0.0.1:3306")
    try:
        live.query("SELECT 1")
    except Exception:
        pytest.skip("no MariaDB server at 127.0.0.1:3306")
    name = f"safehold_drill_{secrets.token_hex(4)}"
    live.query(
        f"CREATE DATABASE {name}; CREATE TABLE {name}.t (id INT PRIMARY KEY) ENGINE=InnoDB;"
        f"INSERT INTO {name}.t VALUES (7), (8)"
    )
    try:
        source = "mariadb:mysql://root@127.0.0.1:3306#stanza=drill-3306"
        snapshot_id = world.backup(source)
        live.query(f"INSERT INTO {name}.t VALUES (9)")  # after the backup
        before = _checksums(live, name)
        uptime = int(live.query("SHOW GLOBAL STATUS LIKE 'Uptime'")[0][1])
        out = world.drill(
            source,
            snapshot_id,
            [
                {
                    "Kind": "Sql",
                    "Database": name,
                    "Query": "SELECT id FROM t ORDER BY id",
                    "Expect": {"Rows": [[7], [8]]},
                }
            ],
            "live",
        )
        assert out.State == "Success", out.Error
        assert out.Result["Port"] != 3306
        assert_cleaned(out.Result)
        assert _checksums(live, name) == before
        assert [r[0] for r in live.query(f"SELECT id FROM {name}.t ORDER BY id")] == ["7", "8", "9"]
        # Not restarted: its uptime only grew.
        assert int(live.query("SHOW GLOBAL STATUS LIKE 'Uptime'")[0][1]) >= uptime
    finally:
        live.query(f"DROP DATABASE IF EXISTS {name}")
