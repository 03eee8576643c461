"""
A consistency group through the service: a live controller with its embedded
agent, a PostgreSQL cluster of the test's own (initdb, the real archive hook)
whose rows name blob files in a ``dir:`` partition, written by an application
thread (blob first, then its row). The group is backed up as one job, restored
to its point over the API, and drilled with a cross-reference validator:
every restored row's blob exists, and writes after the point are absent.
Errors: unknown group 404, unknown member 400, a member of another group 409,
a time before the first point 400, a validator's finding fails a drill and a
restore (and nothing is swapped in).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from safehold.bootstrap import Settings, build_controller
from safehold.db import LocalServer, free_port
from safehold.db.server import find_bindir
from safehold.testing import serve_in_thread
from tests.db.conftest import PASSWORD, Env, make_env, needs_pg
from tests.db.helpers import sql
from tests.db.test_groups import App

pytestmark = needs_pg

PG = "0b0b0b0b-7777-4000-8000-0000000000a1"
FILES = "0b0b0b0b-7777-4000-8000-0000000000a2"
OTHER = "0b0b0b0b-7777-4000-8000-0000000000a3"
ADMIN = "admin-token-for-group-tests"
FINAL = ("Success", "Failure", "Timeout")
SAFEHOLD = str(Path(sys.executable).with_name("safehold"))


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``safehold group`` command line, as an operator runs it."""
    env = {**os.environ, "SAFEHOLD_URL": url, "SAFEHOLD_TOKEN": ADMIN, "COLUMNS": "200"}
    return subprocess.run(
        [SAFEHOLD, "group", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def call(url: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method,
        url + path,
        params={"api-version": "6.4", **kw.pop("params", {})},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=60,
        **kw,
    )


def api(url: str, method: str, path: str, **kw: Any) -> Any:
    r = call(url, method, path, **kw)
    assert r.status_code < 400, r.text
    return r.json() if r.content else None


def error(url: str, method: str, path: str, status: int, **kw: Any) -> dict[str, Any]:
    r = call(url, method, path, **kw)
    assert r.status_code == status, r.text
    doc: dict[str, Any] = r.json()["Error"]
    return doc


def run_job(url: str, group: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
    """Start a backup, restore or drill of the group; wait for it to end; return the job."""
    job = api(url, "POST", f"/safehold/groups/{group}/{action}", json=body)
    deadline = time.monotonic() + 300
    while job["State"] not in FINAL:
        assert time.monotonic() < deadline, f"the group {action} did not end: {job}"
        time.sleep(0.2)
        job = api(url, "GET", f"/safehold/groups/{group}/jobs/{job['JobId']}")
    return dict(job)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Env, str]]:
    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    monkeypatch.setenv("SAFEHOLD_SECRET_KEY", base64.urlsafe_b64encode(b"g" * 32).decode())
    monkeypatch.delenv("SAFEHOLD_TOKENS", raising=False)
    settings = Settings(
        data_dir=tmp_path / "ctl",
        tokens={ADMIN: "admin"},
        tick_seconds=0.2,
        schedule_spread=0,
        fast_kdf=True,
    )
    controller = build_controller(settings)
    try:
        with make_env() as env, serve_in_thread(controller.app, lifespan="on") as url:
            yield env, url
    finally:
        controller.close()


def register(url: str, pid: str, source: str, restore_to: str | None) -> None:
    api(
        url,
        "POST",
        "/safehold/partitions",
        json={
            "ApplicationName": "fabric:/Shop",
            "ServiceName": "fabric:/Shop/Orders",
            "PartitionId": pid,
            "Source": source,
            "RestoreTo": restore_to,
        },
    )


def test_a_group_is_backed_up_restored_and_drilled_through_the_service(
    world: tuple[Env, str],
) -> None:
    env, url = world
    pg = env.make_cluster()
    sql(pg, "CREATE TABLE blobs (id int PRIMARY KEY, path text NOT NULL)")
    blobs = env.root / "blobs"
    blobs.mkdir()
    pg_target, files_target = env.root / "restored-pg", env.root / "restored-blobs"
    port = free_port()
    register(url, PG, f"postgres:{pg.url}#wal_timeout=120", f"pgdata:{pg_target}#port={port}")
    register(url, FILES, f"dir:{blobs}", f"dir:{files_target}")
    register(url, OTHER, f"dir:{env.root}", None)
    storage = {"StorageKind": "FileShare", "Path": str(env.repo_path)}

    # Definitions, and their errors.
    check = {"Database": PG, "Query": "SELECT path FROM blobs", "Directory": FILES}
    group = {"Members": [PG, FILES], "Validators": [check]}
    assert api(url, "PUT", "/safehold/groups/shop", json=group)["Members"] == [PG, FILES]
    assert [g["Name"] for g in api(url, "GET", "/safehold/groups")] == ["shop"]
    assert error(url, "GET", "/safehold/groups/nope", 404)["Code"] == "SAFEHOLD_E_GROUP_NOT_FOUND"
    assert error(url, "GET", "/safehold/groups/nope/points", 404)["Code"] == (
        "SAFEHOLD_E_GROUP_NOT_FOUND"
    )
    unknown = {"Members": ["0b0b0b0b-7777-4000-8000-0000000000ff"]}
    err = error(url, "PUT", "/safehold/groups/other", 400, json=unknown)
    assert err["Code"] == "SAFEHOLD_E_GROUP_INVALID"
    assert "not registered" in err["Message"]
    err = error(url, "PUT", "/safehold/groups/other", 409, json={"Members": [OTHER, FILES]})
    assert err["Code"] == "SAFEHOLD_E_GROUP_MEMBER_TAKEN"
    assert "'shop'" in err["Message"]
    bad = {"Members": [OTHER], "Validators": [{**check, "Directory": OTHER}]}
    assert error(url, "PUT", "/safehold/groups/other", 400, json=bad)["Code"] == (
        "SAFEHOLD_E_GROUP_INVALID"
    )
    assert error(url, "POST", "/safehold/groups/shop/restore", 404, json={"Point": "x"})[
        "Code"
    ] == ("SAFEHOLD_E_GROUP_POINT_NOT_FOUND")

    # One group backup while the application writes; more writes after the point.
    app = App(pg.url, blobs)
    app.thread.start()
    try:
        app.wait_for(5)
        job = run_job(url, "shop", "backup", {"BackupStorage": storage})
        assert job["State"] == "Success", job
        point = job["Point"]
        assert point is not None
        assert set(point["Members"]) == {PG, FILES}
        app.wait_for(app.written + 5)
    finally:
        app.stop.set()
        app.thread.join()
    written = app.written

    points = api(url, "GET", "/safehold/groups/shop/points")
    assert [p["PointId"] for p in points] == [point["PointId"]]
    for pid in (PG, FILES):  # each member's snapshot is an ordinary backup of it
        items = api(url, "GET", f"/Partitions/{pid}/$/GetBackups")["Items"]
        assert [b["BackupId"] for b in items] == [point["Members"][pid]["BackupId"]]

    # A time before the first point is refused; the point itself restores.
    err = error(
        url, "POST", "/safehold/groups/shop/restore", 400, json={"Time": "2000-01-01T00:00:00Z"}
    )
    assert "no point at or before" in err["Message"]
    job = run_job(url, "shop", "restore", {"Point": point["PointId"]})
    assert job["State"] == "Success", job
    restored = LocalServer(pg_target, port, find_bindir())
    restored.start()
    try:
        rows = sql(restored, "SELECT id, path FROM blobs ORDER BY id")
    finally:
        restored.stop()
    ids = [r[0] for r in rows]
    assert ids == list(range(1, len(ids) + 1))  # a prefix of the application's writes
    assert 5 <= len(ids) < written  # the writes after the point are absent
    assert all((files_target / path).is_file() for _, path in rows)  # every row's blob

    # A drill of the newest point passes its validator in a sandbox.
    job = run_job(url, "shop", "drill", {})
    assert job["State"] == "Success", job
    # It is a drill like any other, in the anchor member's history: RTO, RPO, validators.
    run = api(url, "GET", f"/safehold/partitions/{PG}/drills")[0]
    assert (run["Policy"], run["State"], run["JobId"]) == ("group:shop", "Success", job["JobId"])
    assert run["RtoSeconds"] > 0
    assert run["RpoSeconds"] >= 0
    assert [(v["Kind"], v["Passed"]) for v in run["Validators"]] == [("BlobPathsExist", True)]

    # A row whose blob was never written: the next point fails its drill and its
    # restore, naming the blob, and the restore swaps nothing in.
    # (Through the command line this time.)
    sql(pg, "INSERT INTO blobs VALUES (100000, 'ghost.bin')")
    r = cli(url, "backup", "shop", "--wait", "--json")
    assert r.returncode == 0, r.stderr
    second = json.loads(r.stdout)["Point"]["PointId"]
    r = cli(url, "points", "shop")
    assert r.returncode == 0, r.stderr
    assert second in r.stdout
    r = cli(url, "drill", "shop", "--point", second, "--wait")
    assert r.returncode == 1
    assert f"{FILES}/ghost.bin is missing" in r.stderr + r.stdout
    job = api(url, "GET", "/safehold/groups/shop")["Jobs"][-1]
    assert job["Kind"] == "group-restore"
    assert job["Failure"]["Code"] == "SAFEHOLD_E_GROUP_VALIDATION"
    run = api(url, "GET", f"/safehold/partitions/{PG}/drills")[0]
    assert (run["State"], run["JobId"]) == ("Failure", job["JobId"])
    assert "ghost.bin is missing" in run["Failure"]
    assert cli(url, "show", "nope").returncode == 16
    assert cli(url, "create", "other", "-m", OTHER, "-m", FILES).returncode == 11
    assert cli(url, "create", "other", "-m", "not-a-guid").returncode == 2
    job = run_job(url, "shop", "restore", {"Time": job["CreatedUtc"]})
    assert job["State"] == "Failure"
    assert "ghost.bin" in job["Failure"]["Message"]
    restored.start()
    try:
        assert [r[0] for r in sql(restored, "SELECT id FROM blobs ORDER BY id")] == ids
    finally:
        restored.stop()
    assert not list(env.root.glob(".*group-restore-*"))  # no scratch copy left behind
