"""
Restore drills end to end: a real controller with its embedded agent, real repositories.

A ``dir:`` and a ``command:`` partition are backed up; drills run on schedule and
pass; a byte flipped in a pack makes the next drill fail naming the damaged file,
health goes Error, the alert reaches a webhook server (both formats, signed) and
an SMTP server (STARTTLS); a repair (the damaged pack dropped, the index rebuilt,
a new backup) and a new drill resolve it. Measured RTO agrees with the test's own
stopwatch, and a drill killed midway leaves a sandbox the next drill removes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from safehold.bootstrap import Settings, build_controller
from safehold.core.snapshot import format_time
from safehold.repo import Repository
from safehold.repo.check import rebuild_index
from safehold.service import alerts, drills, notify
from safehold.storage.file import FileStorage
from safehold.testing import serve_in_thread

from .conftest import Mailbox, Received

pytestmark = pytest.mark.timeout(120)

ADMIN = "drill-admin-token"
PASSWORD = "drill test repository password"
SECRET = "webhook signing secret"
APP = "fabric:/Shop"
DIR_PID = str(uuid.UUID(int=1))
CMD_PID = str(uuid.UUID(int=2))
V = {"api-version": "6.4"}
SLEEP = 1.5  # a validator that takes this long, so RTO has something to measure


def wait_for(what: str, check: Callable[[], Any], timeout: float = 40.0) -> Any:
    """Poll *check* until it returns something truthy; fail naming *what*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def world(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    webhooks: tuple[str, Received],
    smtp_server: Mailbox,
) -> Iterator[dict[str, Any]]:
    """A served controller with the drill and alert ticks running, and its data."""
    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    monkeypatch.setenv("SAFEHOLD_SECRET_KEY", base64.urlsafe_b64encode(b"k" * 32).decode())
    monkeypatch.delenv("SAFEHOLD_TOKENS", raising=False)
    src = tmp_path / "orders"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    (src / "sub" / "a.txt").write_text("alpha\n")
    manifest = "".join(
        f"{hashlib.sha256((src / n).read_bytes()).hexdigest()}  {n}\n"
        for n in ("big.bin", "sub/a.txt")
    )
    (src / "SHA256SUMS").write_text(manifest)
    dump = tmp_path / "dump.txt"
    dump.write_text("hello from the command partition\n")
    settings = Settings(
        data_dir=tmp_path / "data",
        tokens={ADMIN: "admin"},
        tick_seconds=0.2,
        schedule_spread=0,
        fast_kdf=True,
    )
    controller = build_controller(settings)
    url, _ = webhooks
    channels = notify.parse_channels(
        {
            "Webhooks": [
                {"Url": f"{url}/json", "Format": "json", "Secret": SECRET},
                {"Url": f"{url}/am", "Format": "alertmanager"},
            ],
            "Email": {
                "Host": "127.0.0.1",
                "Port": smtp_server.port,
                "StartTls": True,
                "CaFile": str(smtp_server.ca_file),
                "From": "safehold@test.example",
                "To": ["ops@test.example"],
            },
        }
    )
    stop = threading.Event()

    def leader_ticks() -> None:
        # What the lead's leader loop does each round, after the backup scheduler.
        while not stop.is_set():
            drills.tick(controller.ctx)
            alerts.tick(controller.ctx, channels)
            stop.wait(0.2)

    with serve_in_thread(controller.app) as base:
        ticker = threading.Thread(target=leader_ticks, daemon=True)
        ticker.start()
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
        ) as http:
            yield {
                "http": http,
                "controller": controller,
                "src": src,
                "dump": dump,
                "storage": tmp_path / "storage",
                "sandboxes": tmp_path / "sandboxes",
                "tmp": tmp_path,
            }
        stop.set()
        ticker.join(10)
    controller.close()


def ok(resp: httpx.Response) -> Any:
    assert resp.status_code < 300, resp.text
    return resp.json() if resp.content else None


def setup_partitions(w: dict[str, Any]) -> None:
    http: httpx.Client = w["http"]
    ok(
        http.post(
            "/BackupRestore/BackupPolicies/$/Create",
            params=V,
            json={
                "Name": "hourly",
                "AutoRestoreOnDataLoss": False,
                "MaxIncrementalBackups": 5,
                "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT1H"},
                "Storage": {"StorageKind": "FileShare", "Path": str(w["storage"])},
            },
        )
    )
    for pid, svc, source, restore_to in (
        (DIR_PID, f"{APP}/Orders", f"dir:{w['src']}", None),
        (CMD_PID, f"{APP}/Dump", f"command:cat {w['dump']}", f"file:{w['tmp'] / 'out.txt'}"),
    ):
        body = {"ApplicationName": APP, "ServiceName": svc, "PartitionId": pid, "Source": source}
        if restore_to:
            body["RestoreTo"] = restore_to
        ok(http.post("/safehold/partitions", json=body))
    ok(
        http.post(
            "/Applications/Shop/$/EnableBackup", params=V, json={"BackupPolicyName": "hourly"}
        )
    )
    for pid in (DIR_PID, CMD_PID):
        wait_for(f"the first backup of {pid}", lambda pid=pid: backups(http, pid))


def backups(http: httpx.Client, pid: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = ok(http.get(f"/Partitions/{pid}/$/GetBackups", params=V))["Items"]
    return items


def drill_policies(w: dict[str, Any]) -> None:
    http: httpx.Client = w["http"]
    sandbox = {"Directory": str(w["sandboxes"])}
    ten_minutes = {"ScheduleKind": "FrequencyBased", "Interval": "PT10M"}
    ok(
        http.post(
            "/safehold/drills/policies",
            json={
                "Name": "dump-drill",
                "Schedule": ten_minutes,
                "Sandbox": sandbox,
                "Validators": [
                    {"Kind": "Command", "Command": 'grep -q "hello from" "$SAFEHOLD_RESTORED"'},
                    {"Kind": "Files", "Exist": ["dump"], "MinBytes": 10},
                ],
                "Objectives": {"Rpo": "PT1H", "Rto": "PT5M"},
            },
        )
    )
    ok(
        http.post(
            "/safehold/drills/policies",
            json={
                "Name": "orders-drill",
                "Schedule": ten_minutes,
                "Sandbox": sandbox,
                "Timeout": "PT2M",
                "Validators": [
                    {"Kind": "Files", "ChecksumManifest": "SHA256SUMS", "MinFiles": 3},
                    {"Kind": "Command", "Command": f"sleep {SLEEP} && test -s big.bin"},
                ],
                "Objectives": {"Rpo": "PT30M", "Rto": "PT5M"},  # tighter than the schedule
            },
        )
    )
    # Orders has its own policy; the dump partition inherits the application's (attached
    # second, so no drill of Orders ever runs with the application's policy).
    ok(http.post("/safehold/drills/policies/orders-drill/$/Attach", json={"PartitionId": DIR_PID}))
    ok(http.post("/safehold/drills/policies/dump-drill/$/Attach", json={"ApplicationName": APP}))


def history(http: httpx.Client, pid: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = ok(http.get(f"/safehold/partitions/{pid}/drills"))
    return runs


def finished(http: httpx.Client, drill_id: str) -> dict[str, Any] | None:
    run: dict[str, Any] = ok(http.get(f"/safehold/drills/{drill_id}"))
    return run if run["State"] in ("Success", "Failure", "Timeout") else None


def health(http: httpx.Client, pid: str) -> dict[str, Any]:
    doc: dict[str, Any] = ok(http.get(f"/safehold/partitions/{pid}/health"))
    return doc


def kill_a_drill_midway(w: dict[str, Any]) -> Path:
    """Run a drill in another process, kill it while its validator runs; return its sandbox."""
    ctx = w["controller"].ctx
    with ctx.uow() as uow:
        b = uow.backups.list(partition_id=DIR_PID)[-1]
    pid_file = w["tmp"] / "validator.pid"
    item = {
        "JobId": str(uuid.uuid4()),
        "Kind": "drill",
        "Deadline": format_time(b.created_at.replace(year=b.created_at.year + 1)),
        "Partition": {
            "PartitionId": DIR_PID,
            "ApplicationName": APP,
            "ServiceName": f"{APP}/Orders",
            "Source": f"dir:{w['src']}",
        },
        "Storage": {"StorageKind": "FileShare", "Path": str(w["storage"])},
        "Params": {
            "drill_id": "killed-midway",
            "snapshot_id": b.snapshot_id,
            "backup_time": format_time(b.created_at),
            "validators": [{"Kind": "Command", "Command": f"echo $$ > {pid_file}; exec sleep 60"}],
            "sandbox_dir": str(w["sandboxes"]),
        },
    }
    script = (
        "import os, sys\n"
        "from datetime import UTC, datetime\n"
        "from safehold.agent.drill import run_drill\n"
        "from safehold.bootstrap import open_policy_storage\n"
        "from safehold.core.policy import parse_storage\n"
        "from safehold.core.progress import NullProgress\n"
        "from safehold.core.work import WorkItem\n"
        "from safehold.service.engine import RepoEngine\n"
        "item = WorkItem.model_validate_json(sys.argv[1])\n"
        "storage = open_policy_storage(parse_storage(item.Storage))\n"
        "run_drill(item, RepoEngine(os.environ['SAFEHOLD_PASSWORD']), storage, NullProgress(),\n"
        "          lambda: datetime.now(UTC))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(item)])
    try:
        wait_for(
            "the killed drill's validator", lambda: pid_file.is_file() and pid_file.read_text()
        )
    finally:
        proc.kill()
        proc.wait()
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # its validator, in its own session
    sandbox = w["sandboxes"] / "drill-killed-midway"
    assert (sandbox / "data" / "orders" / "big.bin").is_file()
    return sandbox


def flip_a_byte(storage: Path) -> Path:
    """Flip one byte in the middle of the largest pack; return the pack."""
    packs = sorted(
        (p for p in (storage / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )
    pack = packs[-1]
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 3] ^= 0x40
    os.chmod(pack, 0o600)
    pack.write_bytes(bytes(raw))
    return pack


def test_drills_end_to_end(
    world: dict[str, Any], webhooks: tuple[str, Received], smtp_server: Mailbox
) -> None:
    http: httpx.Client = world["http"]
    _, received = webhooks
    setup_partitions(world)
    drill_policies(world)

    # Drills run on schedule (the first as soon as a policy applies) and pass.
    for pid in (DIR_PID, CMD_PID):
        runs = wait_for(
            f"a scheduled drill of {pid}",
            lambda pid=pid: [r for r in history(http, pid) if r["State"] == "Success"],
        )
        run = runs[0]
        assert run["Trigger"] == "Schedule"
        assert run["ObjectivesMet"] is True
        assert run["RtoSeconds"] > 0
        assert 0 <= run["RpoSeconds"] < 3600
        assert all(v["Passed"] for v in run["Validators"])
        assert run["Agent"]
    orders = history(http, DIR_PID)[0]
    assert orders["Policy"] == "orders-drill"
    assert "2 checksums verified" in orders["Validators"][0]["Detail"]
    assert history(http, CMD_PID)[0]["Policy"] == "dump-drill"  # inherited
    assert health(http, DIR_PID)["HealthState"] == "Ok"
    assert health(http, DIR_PID)["Drill"]["HealthState"] == "Ok"
    # /metrics serves the fleet view, refreshed in the background: poll it.
    success = f'safehold_drill_last_success{{partition_id="{DIR_PID}"}} 1.0'

    def scrape() -> str | None:
        text = http.get("/metrics").text
        return text if success in text else None

    metrics = wait_for("the drill metrics", scrape)
    assert f'safehold_drill_rto_seconds{{partition_id="{CMD_PID}"}}' in metrics

    # A drill killed midway leaves its sandbox; the next drill removes it. Measured
    # RTO agrees with the test's own stopwatch around that drill.
    leftover = kill_a_drill_midway(world)
    started = time.monotonic()
    run = ok(http.post(f"/safehold/partitions/{DIR_PID}/drills", json={}))
    run = wait_for("the manual drill", lambda: finished(http, run["DrillId"]))
    stopwatch = time.monotonic() - started
    assert run["State"] == "Success", run
    assert run["Trigger"] == "Manual"
    assert run["RtoSeconds"] >= SLEEP
    assert abs(stopwatch - run["RtoSeconds"]) < 1.0, (stopwatch, run["RtoSeconds"])
    assert run["CleanedLeftovers"] == [str(leftover)]
    assert not leftover.exists()
    assert list(world["sandboxes"].iterdir()) == []  # every drill cleaned its own sandbox

    # A byte flipped in a pack: the next drill fails and names the damaged file.
    pack = flip_a_byte(world["storage"])
    run = ok(http.post(f"/safehold/partitions/{DIR_PID}/drills", json={}))
    run = wait_for("the drill of the damaged backup", lambda: finished(http, run["DrillId"]))
    assert run["State"] == "Failure"
    assert "SAFEHOLD_E_INTEGRITY" in run["Failure"]
    assert "big.bin" in run["Failure"]
    assert list(world["sandboxes"].iterdir()) == []
    h = wait_for(
        "health Error", lambda: (d := health(http, DIR_PID))["HealthState"] == "Error" and d
    )
    assert "drill failed" in h["Description"]
    assert "big.bin" in h["Description"]

    # The alert reaches both webhooks (signed JSON; Alertmanager's format) and the mailbox.
    key = f"DrillFailed:{DIR_PID}"
    firing = wait_for(
        "the webhook alert",
        lambda: [a for b in received.bodies("/json") for a in b["Alerts"] if a["Key"] == key],
    )
    assert firing[0]["State"] == "firing"
    assert "big.bin" in firing[0]["Message"]
    with received.lock:
        _path, headers, raw = next(p for p in received.posts if p[0] == "/json")
    stamp = headers["X-Safehold-Timestamp"]
    assert headers["X-Safehold-Signature"] == notify.sign(SECRET, stamp, raw)
    am = wait_for("the Alertmanager webhook", lambda: received.bodies("/am"))
    entry = next(a for b in am for a in b["alerts"] if a["labels"]["alertname"] == "DrillFailed")
    assert entry["status"] == "firing"
    assert entry["labels"]["subject"] == DIR_PID
    mail = wait_for("the alert e-mail", lambda: smtp_server.messages)
    assert smtp_server.starttls[0] is True
    assert b"DrillFailed" in mail[0][2]
    assert mail[0][1] == ["ops@test.example"]
    # Deduplicated: the condition holds over many ticks and was sent once.
    time.sleep(0.6)
    sent = [a for b in received.bodies("/json") for a in b["Alerts"] if a["Key"] == key]
    assert len(sent) == 1

    # Repair: drop the damaged pack, rebuild the index, back up again, drill: resolved.
    pack.unlink()
    with Repository.open(FileStorage(world["storage"]), PASSWORD, load_index=False) as repo:
        rebuild_index(repo)
    before = len(backups(http, DIR_PID))
    ok(http.post(f"/Partitions/{DIR_PID}/$/Backup", params=V))
    wait_for("the repairing backup", lambda: len(backups(http, DIR_PID)) > before)
    run = ok(http.post(f"/safehold/partitions/{DIR_PID}/drills", json={}))
    run = wait_for("the drill after the repair", lambda: finished(http, run["DrillId"]))
    assert run["State"] == "Success", run
    resolved = wait_for(
        "the resolved webhook",
        lambda: [
            a
            for b in received.bodies("/json")
            for a in b["Alerts"]
            if a["Key"] == key and a["State"] == "resolved"
        ],
    )
    assert resolved
    wait_for("the resolved e-mail", lambda: any(b"RESOLVED" in m[2] for m in smtp_server.messages))
    assert health(http, DIR_PID)["HealthState"] == "Ok"
    listed = ok(http.get("/safehold/alerts"))
    assert any(a["Key"] == key and a["State"] == "resolved" and a["Delivered"] for a in listed)

    # The CLI: create, list, run --wait, show, history.
    cli = cli_runner(str(http.base_url))
    policy = world["tmp"] / "nightly.json"
    policy.write_text(
        json.dumps(
            {"Name": "nightly", "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "P1D"}}
        )
    )
    assert "created drill policy nightly" in cli("drill", "create", str(policy))
    listing = cli("drill", "list")
    assert "nightly" in listing
    assert "orders-drill" in listing
    shown = " ".join(cli("drill", "run", DIR_PID, "--wait").split())  # however it wraps
    assert ": Success" in shown
    assert "[pass] Files" in shown
    runs = json.loads(cli("drill", "history", DIR_PID, "--json", "--limit", "2"))
    assert len(runs) == 2
    assert runs[0]["State"] == "Success"
    assert runs[0]["DrillId"] in cli("drill", "show", runs[0]["DrillId"])

    # The recoverability report: what falls short first (Orders' schedule allows an
    # RPO of an hour, its objective is 30 minutes); in JSON, Markdown and HTML.
    doc = ok(http.get("/safehold/report"))
    first, second = doc["Partitions"]
    assert first["partition_id"] == DIR_PID
    assert first["shortfalls"] == ["RPO by schedule PT1H exceeds the objective PT30M"]
    assert first["rpo_by_schedule"] == 3600
    assert [t["State"] for t in first["trend"]].count("Failure") == 1
    assert second["partition_id"] == CMD_PID
    assert second["shortfalls"] == []
    markdown = cli("report", "--format", "markdown")
    assert markdown.index(DIR_PID) < markdown.index(CMD_PID)
    page = http.get("/safehold/report", params={"format": "html"})
    assert page.headers["content-type"].startswith("text/html")
    assert page.text.count("<svg") == 2
    paths = ok(http.get("/openapi.json"))["paths"]
    for route in ("/safehold/drills/{drill_id}", "/safehold/report", "/safehold/alerts"):
        assert route in paths


def cli_runner(url: str) -> Callable[..., str]:
    """The CLI in this process (a subprocess costs seconds on a busy machine)."""
    import typer
    from typer.testing import CliRunner

    from safehold.cli import service_cli

    app = typer.Typer()
    service_cli.register(app)  # as ``safehold`` does for a service command
    runner = CliRunner()
    env = {"SAFEHOLD_URL": url, "SAFEHOLD_TOKEN": ADMIN, "COLUMNS": "200"}

    def run(*args: str) -> str:
        r = runner.invoke(app, list(args), env=env)
        assert r.exit_code == 0, f"{args}: {r.output}"
        return r.output

    return run
